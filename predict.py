"""Recognise the action in video files with trained two-stream checkpoints.

    python predict.py VIDEO|FOLDER [...] --spatial CKPT --motion CKPT [--weights 1 1.5] [--topk 5]
                      [--device cuda|cpu] [--json PATH] [--size 256 340] [--flow-method tvl1|tvl1-torch]

Each video is decoded and resized as tools/extract_frames.py does; optical flow is computed
only for the frames the test protocol reads (the stacks at the test positions), as
tools/compute_flow.py computes it; both streams then run the protocol stored in their
checkpoint, as their --evaluate does (same positions, resize or test crops, summed logits),
and their scores are fused as average_fusion.py fuses them (TSN checkpoints: 1 : 1.5). Either stream alone works. Class names come from the
checkpoints. A bad video is reported and the others go on; the exit status is 1 then.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dataloader.sampling import evaluation_positions, stack_frames
from dataloader.splits import read_class_index
from dataloader.transforms import (FLOW_MEAN, MultiCrop, flow_to_tensor, motion_normalizer, rgb_to_tensor,
                                   spatial_normalizer, test_view)
from engine import CHECKPOINT_FORMAT, load_checkpoint
from models import build_model
from tools.compute_flow import quantize
from tools.extract_frames import find_videos, resize_frame
from tools.jobs import VIDEO_EXTENSIONS
from utils import UserError, atomic_write, check_writable_file, default_fusion_weights, run_cli


@dataclass
class StreamModel:
    """A trained stream ready to score videos."""

    name: str
    model: torch.nn.Module
    normalizer: torch.nn.Module
    classes: list[str]
    input_size: int
    test_frames: int
    test_view: str
    stack_length: int
    reference_order: bool
    test_crops: MultiCrop | None  # cuts --test-crops crops from each frame on the device
    recipe: str

    @property
    def view(self) -> str:
        """How the loader's test view prepares a frame (crops are cut later, on the device)."""
        return "crops" if self.test_crops is not None else self.test_view


def load_stream(path: str, stream: str, device: torch.device, class_ind: str | None = None) -> StreamModel:
    """Load a checkpoint written by spatial_cnn.py / motion_cnn.py for ``stream``."""
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} has no class names or settings (a reference-repo or bare checkpoint)\n"
                        f"  fix: use a checkpoint written by {stream}_cnn.py")
    if ckpt["stream"] != stream:
        raise UserError(f"{path} is a checkpoint of the {ckpt['stream']} stream, given as --{stream}")
    classes = ckpt.get("class_names") or (read_class_index(Path(class_ind)) if class_ind else None)
    if not classes:
        raise UserError(f"{path} stores no class names\n  fix: pass --class-ind classInd.txt of its training split")
    args = ckpt.get("args", {})
    model = build_model(ckpt["arch"], ckpt["num_classes"], ckpt["in_channels"], "none")
    model.load_state_dict(ckpt["model"])
    model.eval().to(device)
    stack_length = int(args.get("stack_length", 10))
    if stream == "spatial":
        normalizer = spatial_normalizer()
    else:
        normalizer = motion_normalizer(ckpt["in_channels"], float(args.get("flow_mean", FLOW_MEAN)))
    input_size, crops = int(args.get("input_size", 224)), int(args.get("test_crops", 1))
    return StreamModel(stream, model, normalizer.to(device), list(classes), input_size,
                       int(args.get("test_frames", 19)), args.get("test_view", "resize"), stack_length,
                       bool(args.get("reference_stack_order", False)),
                       MultiCrop(input_size, crops, flow=stream == "motion") if crops > 1 else None,
                       args.get("recipe", "reference"))


def read_video(path: Path, size: tuple[int, int] | None) -> list[np.ndarray]:
    """All frames of a video as BGR uint8 arrays, resized as tools/extract_frames.py does."""
    import cv2

    if not path.is_file():
        raise UserError("file not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError("cannot open (not a video, or a codec OpenCV's FFmpeg lacks)")
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(resize_frame(frame, size))
    finally:
        capture.release()
    if not frames:
        raise UserError("no frames could be decoded")
    return frames


@torch.no_grad()
def run_stream(stream: StreamModel, inputs: list[torch.Tensor], device: torch.device, batch: int = 64) -> np.ndarray:
    """Summed logits over the test positions (the video score of --evaluate); with test crops,
    a position's logits are the mean over its crops."""
    total = None
    batch = max(1, batch // (stream.test_crops.count if stream.test_crops is not None else 1))  # model inputs
    for start in range(0, len(inputs), batch):
        x = torch.stack(inputs[start:start + batch]).to(device)
        if stream.test_crops is not None:
            x = stream.test_crops(x)
        logits = stream.model(stream.normalizer(x)).double()
        if stream.test_crops is not None:
            logits = logits.view(-1, stream.test_crops.count, logits.shape[-1]).mean(dim=1)
        logits = logits.sum(dim=0)
        total = logits if total is None else total + logits
    return total.cpu().numpy()


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


def spatial_inputs(stream: StreamModel, frames: list[np.ndarray], quality: int) -> list[torch.Tensor]:
    positions = evaluation_positions(len(frames), stream.test_frames, stream.stack_length)
    return [rgb_to_tensor([test_view(as_loaded(frames[p - 1], quality, "RGB"), stream.input_size,
                                     stream.view)])[0] for p in positions]


def motion_inputs(stream: StreamModel, frames: list[np.ndarray], flow_of, bound: float,
                  quality: int) -> list[torch.Tensor]:
    """Flow only for the pairs the stacks at the test positions read: flow frame i is the
    flow between frames i and i+1 (1-based), quantised and stored as compute_flow.py does."""
    flow_frames = len(frames) - 1
    if flow_frames < stream.stack_length:
        raise UserError(f"{len(frames)} frames: the motion stream needs at least {stream.stack_length + 1} "
                        f"(one stack of {stream.stack_length} flow frames)")
    positions = evaluation_positions(flow_frames, stream.test_frames, stream.stack_length)
    stacks = [stack_frames(p, stream.stack_length, stream.reference_order) for p in positions]
    needed = sorted({i for stack in stacks for i in stack})
    grey = {}
    for i in needed:
        for k in (i, i + 1):
            if k not in grey:
                grey[k] = as_read_grey(frames[k - 1], quality)
    flows = flow_of([(grey[i], grey[i + 1]) for i in needed])
    quantized = {i: (as_loaded(quantize(f[..., 0], bound), quality, "L"),
                     as_loaded(quantize(f[..., 1], bound), quality, "L")) for i, f in zip(needed, flows)}
    size, view = stream.input_size, stream.view
    return [flow_to_tensor([test_view(quantized[i][0], size, view) for i in stack],
                           [test_view(quantized[i][1], size, view) for i in stack]) for stack in stacks]


def make_flow_function(method: str, device: torch.device):
    """pairs [(grey, grey)] -> list of HxWx2 float flows."""
    if method == "tvl1-torch":
        from flow import TVL1
        estimator = TVL1(compile=device.type == "cuda")

        def tensor_flow(pairs):
            out = []
            for start in range(0, len(pairs), 32):
                chunk = pairs[start:start + 32]
                first = torch.from_numpy(np.stack([a for a, _ in chunk])).to(device)
                second = torch.from_numpy(np.stack([b for _, b in chunk])).to(device)
                out += list(estimator(first, second).permute(0, 2, 3, 1).cpu().numpy())
            return out
        return tensor_flow
    from tools.compute_flow import flow_function
    single = flow_function(method)
    return lambda pairs: [single(a, b) for a, b in pairs]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def predict_video(path: Path, streams: list[StreamModel], weights: list[float], flow_of, args,
                  device: torch.device) -> dict:
    """One video's record: fused and per-stream top-k with probabilities, and raw scores."""
    started = time.perf_counter()
    frames = read_video(path, None if args.size == [0, 0] else tuple(args.size))
    record: dict = {"video": str(path), "frames": len(frames), "streams": {}}
    fused, probabilities = 0.0, {}
    for stream, weight in zip(streams, weights):
        if stream.name == "spatial":
            inputs = spatial_inputs(stream, frames, args.jpeg_quality)
        else:
            inputs = motion_inputs(stream, frames, flow_of, args.bound, args.jpeg_quality)
        scores = run_stream(stream, inputs, device)
        if not np.isfinite(scores).all():
            raise UserError(f"the {stream.name} model gives non-finite scores (NaN or inf) for this video; its "
                            f"checkpoint's weights are damaged or its training diverged")
        mean_logits = scores / len(inputs)
        probabilities[stream.name] = softmax(mean_logits)
        record["streams"][stream.name] = {"scores": scores.tolist(),
                                          "topk": topk(probabilities[stream.name], stream.classes, args.topk)}
        fused = fused + weight * mean_logits
    # the fused ranking is average_fusion's (weighted sum of the score files), as probabilities
    fused_probabilities = softmax(fused / sum(weights))
    record["topk"] = topk(fused_probabilities, streams[0].classes, args.topk)
    index = {name: i for i, name in enumerate(streams[0].classes)}
    for entry in record["topk"]:  # each stream's probability of the fused top-k classes
        entry["streams"] = {n: round(float(p[index[entry["class"]]]), 5) for n, p in probabilities.items()}
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def topk(probabilities: np.ndarray, classes: list[str], k: int) -> list[dict]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"class": classes[i], "probability": round(float(probabilities[i]), 5)} for i in order]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", help="video files or folders of videos")
    p.add_argument("--spatial", help="checkpoint of spatial_cnn.py (model_best.pth.tar)")
    p.add_argument("--motion", help="checkpoint of motion_cnn.py")
    p.add_argument("--weights", type=float, nargs="+", default=None,
                   help="spatial and motion weights (default 1 1, or TSN's 1 1.5 for two --recipe tsn checkpoints)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="write one record per video (a JSON list) here")
    p.add_argument("--size", type=int, nargs=2, default=[256, 340], metavar=("H", "W"),
                   help="frame size of training (tools/extract_frames.py --size); 0 0 keeps the video's")
    p.add_argument("--flow-method", choices=["tvl1", "tvl1-torch", "farneback"], default=None,
                   help="as tools/compute_flow.py (default: tvl1-torch on CUDA, else OpenCV's tvl1)")
    p.add_argument("--bound", type=float, default=20.0, help="flow bound of tools/compute_flow.py")
    p.add_argument("--jpeg-quality", type=int, default=90,
                   help="frames and flow pass through JPEG at this quality, as extract_frames.py/compute_flow.py "
                        "store them for training (--quality there); 0 skips it")
    p.add_argument("--class-ind", help="classInd.txt, for checkpoints without class names")
    return p


def main(args: argparse.Namespace) -> int:
    if not args.spatial and not args.motion:
        raise UserError("give --spatial CKPT, --motion CKPT or both")
    if args.json:
        check_writable_file(args.json, "--json")
    if not 0 <= args.jpeg_quality <= 100 or args.topk < 1 or args.bound <= 0:
        raise UserError("--jpeg-quality must be 0..100, --topk at least 1 and --bound positive")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    streams = []
    if args.spatial:
        streams.append(load_stream(args.spatial, "spatial", device, args.class_ind))
    if args.motion:
        streams.append(load_stream(args.motion, "motion", device, args.class_ind))
    if len(streams) == 2 and streams[0].classes != streams[1].classes:
        first, second = streams[0].classes + [None], streams[1].classes + [None]
        difference = next((a, b) for a, b in zip(first, second) if a != b)
        raise UserError(f"the checkpoints have different class sets ({len(streams[0].classes)} classes in "
                        f"{args.spatial}, {len(streams[1].classes)} in {args.motion}, first difference: {difference})")
    weights = (args.weights or default_fusion_weights({s.name: s.recipe for s in streams})
               or [1.0] * len(streams))
    if len(weights) != len(streams):
        raise UserError(f"--weights has {len(weights)} values for {len(streams)} streams")
    method = args.flow_method or ("tvl1-torch" if device.type == "cuda" else "tvl1")
    flow_of = make_flow_function(method, device) if args.motion else None

    videos: list[Path] = []
    for item in args.videos:
        path = Path(item)
        videos += find_videos(path) if path.is_dir() else [path]
    if not videos:
        raise UserError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in {' '.join(args.videos)}")

    records, failed = [], []
    for path in tqdm(videos, desc="videos", unit="video", disable=None if len(videos) > 1 else True):
        try:
            record = predict_video(path, streams, weights, flow_of, args, device)
        except UserError as err:
            failed.append(path)
            records.append({"video": str(path), "error": str(err)})
            print(f"{path}: error: {err}", file=sys.stderr)
            continue
        records.append(record)
        print(f"\n{path} ({record['frames']} frames, {record['seconds']:.1f} s)")
        names = [s.name for s in streams]
        print(f"  {'class':30} {'fused':>7} " + " ".join(f"{n:>8}" for n in names))
        for entry in record["topk"]:
            cells = " ".join(f"{entry['streams'][n]:8.3f}" for n in names)
            print(f"  {entry['class']:30} {entry['probability']:7.3f} {cells}")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(records, f, indent=1)
    if failed:
        print(f"\n{len(failed)} of {len(videos)} videos failed: {', '.join(str(p) for p in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()))
