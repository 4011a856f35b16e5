"""The streaming pass of predict.py: decode a video once, in order, keep only the frames the
windows' test protocol reads, compute each needed flow pair once as its second frame goes by,
and score the windows as they complete, many windows' inputs per forward pass. Memory holds
what open windows still need, not the video."""
from __future__ import annotations

import io
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image

from dataloader.splits import read_class_index
from dataloader.transforms import (FLOW_MEAN, MultiCrop, flow_to_tensor, motion_normalizer, multicrop_scale_side,
                                   rgb_to_tensor, spatial_normalizer, test_view)
from engine import CHECKPOINT_FORMAT, check_complete, check_record_shapes, check_stored_settings, load_checkpoint
from flow.storage import flow_function, quantize
from models import build_model
from utils import UserError

from .windows import StreamPlan, Window, plan_motion, plan_spatial


@dataclass
class StreamModel:
    """A trained stream ready to score videos, with the test protocol of its checkpoint."""

    name: str
    model: Callable[[torch.Tensor], torch.Tensor]  # a torch module, or an exported model's runner
    normalizer: torch.nn.Module
    classes: list[str]
    input_size: int
    test_frames: int
    test_view: str
    stack_length: int
    reference_order: bool
    test_crops: MultiCrop | None  # cuts --test-crops crops from each frame on the device
    recipe: str
    test_positions: str = "starts"  # where the positions lie in their segments: starts or centres
    scale_side: int | None = None  # multi-crop testing: the frames' short side is first scaled to this
    frame_size: tuple[int, int] | None = None  # (height, width) of the frames it was trained on, when known
    frame_source: str = "jpeg"  # its frames were stored JPEGs ('jpeg') or decoded from videos ('video')

    @property
    def view(self) -> str:
        """How the loader's test view prepares a frame (crops are cut later, on the device)."""
        return "crops" if self.test_crops is not None else self.test_view


def load_stream(path: str, stream: str, device: torch.device, class_ind: str | None = None) -> StreamModel:
    """Load a checkpoint written by spatial_cnn.py / motion_cnn.py for ``stream``."""
    ckpt = load_checkpoint(path)
    classes, args = check_stream_record(ckpt, path, stream, class_ind)
    model = build_model(ckpt["arch"], ckpt["num_classes"], ckpt["in_channels"], "none")
    model.load_state_dict(ckpt["model"])
    model.eval().to(device)
    loaded = stream_model(stream, args, classes, model, stream_normalizer(stream, ckpt["in_channels"], args).to(device))
    loaded.frame_size = tuple(ckpt["frame_size"]) if ckpt.get("frame_size") else None
    loaded.frame_source = frame_source(ckpt, path)
    return loaded


def frame_source(record: dict, path: str) -> str:
    """A checkpoint's (or exported record's) 'frame_source': 'jpeg' for one written before it existed."""
    source = record.get("frame_source", "jpeg")
    if source not in ("jpeg", "video"):
        raise UserError(f"{path}: its frame_source {source!r} is neither 'jpeg' nor 'video'\n  fix: the file was "
                        f"edited or damaged; use the file its training wrote")
    return source


def check_stream_record(record: dict, path: str, stream: str, class_ind: str | None = None,
                        weights: bool = True) -> tuple[list[str], dict]:
    """(class names, stored settings) of a checkpoint (or, ``weights`` False, an exported
    model's record of it), after checking that it is a complete one of ``stream`` whose parts
    agree."""
    if record.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} has no class names or settings (a reference-repo or bare checkpoint)\n"
                        f"  fix: use a checkpoint written by {stream}_cnn.py")
    check_complete(record, path, weights)
    check_record_shapes(record, path)  # before any model is sized by it
    if record["stream"] != stream:
        raise UserError(f"{path} is a {'checkpoint' if weights else 'model'} of the {record['stream']} stream, "
                        f"given as --{stream}")
    classes = record.get("class_names") or (read_class_index(Path(class_ind)) if class_ind else None)
    if not classes:
        raise UserError(f"{path} stores no class names\n  fix: pass --class-ind classInd.txt of its training split")
    args = record.get("args", {})
    check_stored_settings(args, path)
    channels = 3 if stream == "spatial" else 2 * int(args.get("stack_length", 10))
    if record["in_channels"] != channels or record["arch"] != args.get("arch", record["arch"]):
        raise UserError(f"{path}: its model ({record['arch']}, {record['in_channels']} input channels) does not fit "
                        f"its settings ({args.get('arch')}, {channels} channels for the {stream} stream)\n"
                        f"  fix: the checkpoint was edited or damaged; use the file its training wrote")
    if len(classes) != record["num_classes"]:
        raise UserError(f"{path} stores {len(classes)} class names for a model of {record['num_classes']} outputs\n"
                        f"  fix: the checkpoint was edited or damaged; use the file its training wrote")
    return list(classes), args


def stream_normalizer(stream: str, in_channels: int, args: dict) -> torch.nn.Module:
    """uint8 input -> what the stream's model was trained on (its stored flow mean and std)."""
    if stream == "spatial":
        return spatial_normalizer()
    return motion_normalizer(in_channels, float(args.get("flow_mean", FLOW_MEAN)), std=float(args.get("flow_std", 1.0)))


def stream_model(stream: str, args: dict, classes: list[str], model: Callable[[torch.Tensor], torch.Tensor],
                 normalizer: torch.nn.Module) -> StreamModel:
    """A StreamModel testing as the stored settings ``args`` say."""
    input_size, crops = int(args.get("input_size", 224)), int(args.get("test_crops", 1))
    return StreamModel(stream, model, normalizer, list(classes), input_size,
                       int(args.get("test_frames", 19)), args.get("test_view", "resize"),
                       int(args.get("stack_length", 10)), bool(args.get("reference_stack_order", False)),
                       MultiCrop(input_size, crops, flow=stream == "motion") if crops > 1 else None,
                       args.get("recipe", "reference"), args.get("test_positions", "starts"),
                       multicrop_scale_side(args.get("test_scale", "stored"), input_size))


# --- the storage round trip of the training data -----------------------------------------------

def stored(image: np.ndarray, quality: int) -> bytes | None:
    """The JPEG bytes tools/extract_frames.py and tools/compute_flow.py write for this image
    (OpenCV's encoder at ``quality``); None when ``quality`` is 0 (no storage step)."""
    import cv2

    if not quality:
        return None
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise UserError("cannot encode a frame as JPEG")
    return data.tobytes()


def as_loaded(image: np.ndarray, quality: int, mode: str) -> Image.Image:
    """The image as the training data loader sees it: stored as JPEG, decoded by PIL."""
    import cv2

    data = stored(image, quality)
    if data is not None:
        return Image.open(io.BytesIO(data)).convert(mode)
    if mode == "RGB":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return Image.fromarray(image)


def as_read_grey(frame: np.ndarray, quality: int) -> np.ndarray:
    """A BGR frame as compute_flow.py reads its stored JPEG: cv2's greyscale decode."""
    import cv2

    data = stored(frame, quality)
    if data is None:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)


# --- optical flow ---------------------------------------------------------------------------

_worker_flow = None


def _start_flow_worker(method: str) -> None:
    import cv2

    global _worker_flow
    cv2.setNumThreads(1)
    _worker_flow = flow_function(method)


def _flow_of_pair(pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return _worker_flow(*pair)


class FlowFunction:
    """pairs [(grey, grey)] -> list of HxWx2 float flows: tvl1-torch in batches on the device,
    or an OpenCV method, in ``workers`` processes when more than one."""

    def __init__(self, method: str, device: torch.device, workers: int = 1):
        self.method, self.device, self.pool = method, device, None
        if method == "tvl1-torch":
            from flow import TVL1
            self.estimator = TVL1(compile=device.type == "cuda")
        else:
            self.single = flow_function(method)  # fails here on a missing opencv-contrib
            if workers > 1:
                self.pool = ProcessPoolExecutor(workers, initializer=_start_flow_worker, initargs=(method,))

    def __call__(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        if self.method == "tvl1-torch":
            out = []
            for start in range(0, len(pairs), 32):
                chunk = pairs[start:start + 32]
                first = torch.from_numpy(np.stack([a for a, _ in chunk])).to(self.device)
                second = torch.from_numpy(np.stack([b for _, b in chunk])).to(self.device)
                out += list(self.estimator(first, second).permute(0, 2, 3, 1).cpu().numpy())
            return out
        if self.pool is not None and len(pairs) > 1:
            return list(self.pool.map(_flow_of_pair, pairs, chunksize=max(1, len(pairs) // 16)))
        return [self.single(a, b) for a, b in pairs]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


# --- the streaming pass ---------------------------------------------------------------------

@dataclass
class WindowScores:
    """Summed logits of one window per stream (float64), as --evaluate sums a video's."""

    scores: dict[str, np.ndarray]
    inputs: dict[str, int]


class StreamingScorer:
    """Scores the ``windows`` of one video from its frames, given in order once; window ``w``
    reads ``positions[stream][w]`` test positions of each stream."""

    def __init__(self, streams: list[StreamModel], windows: list[Window], positions: dict[str, list[int]],
                 total_frames: int, flow_of: Callable | None, bound: float, quality: int, device: torch.device,
                 batch: int = 64, flow_cache: dict | None = None):
        self.streams, self.windows, self.device, self.batch = streams, windows, device, batch
        self.flow_of, self.bound, self.quality = flow_of, bound, quality
        self.plans: dict[str, StreamPlan] = {}
        for s in streams:
            if s.name == "spatial":
                self.plans[s.name] = plan_spatial(windows, positions[s.name], s.stack_length, s.test_positions)
            else:
                if total_frames - 1 < s.stack_length:
                    raise UserError(f"{total_frames} frames: the motion stream needs at least {s.stack_length + 1} "
                                    f"(one stack of {s.stack_length} flow frames)")
                self.plans[s.name] = plan_motion(windows, positions[s.name], s.stack_length, total_frames,
                                                 s.reference_order, s.test_positions)
        self.spatial = next((s for s in streams if s.name == "spatial"), None)
        self.motion = next((s for s in streams if s.name == "motion"), None)
        spatial, motion = self.plans.get("spatial"), self.plans.get("motion")
        self.rgb_needed = set(spatial.last_use) if spatial else set()
        self.pairs_needed = set(motion.last_use) if motion else set()
        # flow_cache: pair -> its flow views, shared with later scorers (predict.py --live's windows)
        self.flow_cache = flow_cache
        self.cached = self.pairs_needed & set(flow_cache) if flow_cache is not None else set()
        self.grey_needed = {i + k for i in self.pairs_needed - self.cached for k in (0, 1)}
        self.keep = self.rgb_needed | self.grey_needed
        # windows are scored in order, each once its frames (and its predecessors') went by
        self.ready_at = list(np.maximum.accumulate([self._last_frame(w) for w in range(len(windows))]))
        self.flow_calls = 0

    def _last_frame(self, w: int) -> int:
        """The last frame window ``w`` reads (pair i reads frame i + 1): it can be scored once
        that frame went by."""
        last = 0
        if "spatial" in self.plans:
            last = max(f for item in self.plans["spatial"].inputs[w] for f in item)
        if "motion" in self.plans:
            last = max(last, max(p + 1 for item in self.plans["motion"].inputs[w] for p in item))
        return last

    def run(self, frames: Iterable[tuple[int, float, np.ndarray | None]],
            progress: Callable[[int, float], None] | None = None) -> list[WindowScores]:
        """Consume (index, seconds, frame) in order; returns every window's scores."""
        rgb, grey, pending = {}, {}, []
        flows = {p: self.flow_cache[p] for p in self.cached}
        queue: list[tuple[int, str, list[torch.Tensor]]] = []
        queued = 0  # inputs in the queue
        results = [WindowScores({}, {}) for _ in self.windows]
        done, seconds, index = 0, 0.0, -1  # windows are scored in order: done = the next one
        for index, seconds, frame in frames:
            if frame is not None:
                if index in self.rgb_needed:
                    rgb[index] = self._spatial_input(frame)
                if index in self.grey_needed:
                    grey[index] = as_read_grey(frame, self.quality)
                    if index - 1 in self.pairs_needed and index - 1 not in self.cached:
                        pending.append(index - 1)
            if len(pending) >= 32:  # a batch for the device or the workers
                pending = self._compute_flow(pending, grey, flows)
            while done < len(self.windows) and self.ready_at[done] <= index:
                pending = self._compute_flow(pending, grey, flows)
                ready = self._window_inputs(done, rgb, flows)
                queue += ready
                queued += sum(len(inputs) for _, _, inputs in ready)
                self._release(done, rgb, flows)
                done += 1
            if queued >= self.batch:
                self._score(queue, results)
                queue, queued = [], 0
            if progress is not None:
                progress(index, seconds)
        if done < len(self.windows):
            raise UserError(f"decoding stopped at {seconds:.2f} s (frame {index + 1}) before the frames the "
                            f"protocol needs; {done} of {len(self.windows)} windows were complete")
        self._score(queue, results)
        return results

    def _spatial_input(self, frame: np.ndarray) -> torch.Tensor:
        s = self.spatial
        quality = 0 if s.frame_source == "video" else self.quality  # trained on decoded frames: no JPEG step
        return rgb_to_tensor([test_view(as_loaded(frame, quality, "RGB"), s.input_size, s.view, s.scale_side)])[0]

    def _compute_flow(self, pairs: list[int], grey: dict, flows: dict) -> list[int]:
        """Flow of the pending pairs, at once (batched on the device, or over the workers);
        then the grey frames are dropped but the latest (the first frame of a later pair).
        Returns the new (empty) pending list."""
        if not pairs:
            return []
        s = self.motion
        computed = self.flow_of([(grey[p], grey[p + 1]) for p in pairs])
        self.flow_calls += len(pairs)
        for p, f in zip(pairs, computed):
            x = as_loaded(quantize(f[..., 0], self.bound), self.quality, "L")
            y = as_loaded(quantize(f[..., 1], self.bound), self.quality, "L")
            flows[p] = (test_view(x, s.input_size, s.view, s.scale_side), test_view(y, s.input_size, s.view, s.scale_side))
            if self.flow_cache is not None:
                self.flow_cache[p] = flows[p]
        latest = max(grey)
        for i in [i for i in grey if i != latest]:
            del grey[i]
        return []

    def _window_inputs(self, w: int, rgb: dict, flows: dict) -> list[tuple[int, str, list[torch.Tensor]]]:
        out = []
        for name, plan in self.plans.items():
            if name == "spatial":
                inputs = [rgb[item[0]] for item in plan.inputs[w]]
            else:
                inputs = [flow_to_tensor([flows[p][0] for p in item], [flows[p][1] for p in item])
                          for item in plan.inputs[w]]
            out.append((w, name, inputs))
        return out

    def _release(self, w: int, rgb: dict, flows: dict) -> None:
        """Drop what no later window reads."""
        for name, store in (("spatial", rgb), ("motion", flows)):
            plan = self.plans.get(name)
            if plan is not None:
                for item in [i for i in store if plan.last_use.get(i, -1) <= w]:
                    del store[item]

    @torch.no_grad()
    def _score(self, queue: list[tuple[int, str, list[torch.Tensor]]], results: list[WindowScores]) -> None:
        """One batched pass per stream over the queued windows' inputs; sums per window."""
        for s in self.streams:
            items = [(w, inputs) for w, name, inputs in queue if name == s.name]
            if not items:
                continue
            owners = torch.tensor([w for w, inputs in items for _ in inputs])
            flat = [x for _, inputs in items for x in inputs]
            crops = s.test_crops.count if s.test_crops is not None else 1
            step = max(1, self.batch // crops)
            logits = []
            for start in range(0, len(flat), step):
                x = torch.stack(flat[start:start + step]).to(self.device)
                if s.test_crops is not None:
                    x = s.test_crops(x)
                out = s.model(s.normalizer(x)).double()
                if s.test_crops is not None:
                    out = out.view(-1, crops, out.shape[-1]).mean(dim=1)
                logits.append(out.cpu())
            logits = torch.cat(logits)
            for w in owners.unique().tolist():
                mine = logits[owners == w]
                results[w].scores[s.name] = mine.sum(dim=0).numpy()
                results[w].inputs[s.name] = len(mine)
