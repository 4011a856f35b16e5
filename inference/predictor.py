"""predict.py as a library: its options (the parser), their checks, the streams loaded from
checkpoints or exported files, and one video's record (fused and per-stream top-k, the
timeline of windows). ``Predictor`` is what predict.py runs, as one object; hubconf.py's
``two_stream`` returns one. predict.py adds the files: folders of videos, JSON, CSV, plots and
annotated videos."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dataloader.video import VideoReader, read_ahead
from flow.storage import CPU_METHODS
from guards import INPUT, OUTPUT, VIDEO_FILES, add_path, bound, check_options, frame_size
from models.zoo import resolve_weights
from scorefiles import check_fusion_weights, default_fusion_weights
from utils import HelpFormatter, UserError, check_writable_file, default_workers

from .export import BACKENDS, EXPORT_SUFFIXES, load_exported_stream
from .scorer import FlowFunction, StreamingScorer, StreamModel, load_stream
from .windows import count_windows, plan_windows

DESCRIPTION = """Recognise the actions in video files with trained two-stream checkpoints.

    python predict.py VIDEO|FOLDER [...] --spatial CKPT --motion CKPT [--weights 1 1.5] [--topk 5]
                      [--backend torch|onnxruntime|torchscript]
                      [--device cuda|cpu] [--json PATH] [--size H W] [--flow-method tvl1|tvl1-torch]
                      [--window SECONDS --stride SECONDS [--window-frames N] [--min-score P] [--csv PATH]]
                      [--plot PNG] [--annotate MP4]
    python predict.py --live 0|rtsp://...|VIDEO --spatial CKPT --motion CKPT [--window 2 --stride 1]
                      [--pace realtime|fast|Nx] [--jsonl FILE] [--show] [--annotate MP4] [--reconnect N]

Each video is decoded once more than it is read: a first pass counts its frames and reads
their timestamps (without converting them), a second keeps only the frames the test protocol
reads, resized as tools/extract_frames.py does to the frame size the checkpoints were trained on
(they record it; --size to choose another), and computes the optical flow of the stacks
there as the frames go by, as tools/compute_flow.py computes it. Memory holds what the
protocol needs, not the video. Both streams run the protocol stored in their checkpoint, as
their --evaluate does, and are fused as average_fusion.py fuses them (TSN checkpoints: 1 : 1.5).

With --window/--stride the video is also classified window by window (a timeline): each
window gets the checkpoints' protocol scaled to it (--window-frames positions), flow of a
frame pair is computed once however many windows read it, and a table of segments (windows
with the same top class merged) is printed. Either stream alone works. A bad video is
reported and the others go on; the exit status is 1 then.

With --live the source is a camera (its index), a stream URL or a video file, scored as it
plays: every --stride seconds a line with the fused top-k of the last --window seconds (and a
record in --jsonl). Frames are dropped, and counted, when scoring falls behind; Ctrl-C, SIGTERM
or the end of a file stops it with its files complete and prints a summary (docs/prediction.md).
"""

MAX_WINDOW_INPUTS = 2_000_000  # windows x positions planned for one video (about 100 MB of plans)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def topk(probabilities: np.ndarray, classes: list[str], k: int) -> list[dict]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"class": classes[i], "probability": round(float(probabilities[i]), 5)} for i in order]


def fuse(scores: dict[str, np.ndarray], inputs: dict[str, int], streams: list[StreamModel],
         weights: list[float], k: int) -> dict:
    """Per-stream and fused top-k of one window (or video) from its summed logits."""
    out: dict = {"streams": {}}
    fused, probabilities = 0.0, {}
    for stream, weight in zip(streams, weights):
        summed = scores[stream.name]
        if not np.isfinite(summed).all():
            raise UserError(f"the {stream.name} model gives non-finite scores (NaN or inf) for this video; its "
                            f"checkpoint's weights are damaged or its training diverged")
        mean_logits = summed / inputs[stream.name]
        probabilities[stream.name] = softmax(mean_logits)
        out["streams"][stream.name] = {"scores": summed.tolist(),
                                       "topk": topk(probabilities[stream.name], stream.classes, k)}
        fused = fused + weight * mean_logits
    # the fused ranking is average_fusion's (weighted sum of the score files), as probabilities
    out["topk"] = topk(softmax(fused / sum(weights)), streams[0].classes, k)
    index = {name: i for i, name in enumerate(streams[0].classes)}
    for entry in out["topk"]:  # each stream's probability of the fused top-k classes
        entry["streams"] = {n: round(float(p[index[entry["class"]]]), 5) for n, p in probabilities.items()}
    return out


def window_record(window, result, streams: list[StreamModel], weights: list[float], k: int) -> dict:
    """One window of a timeline (predict.py --json's ``windows``, --live's records): its span in
    seconds of the video, the fused top-k and each stream's."""
    entry = fuse(result.scores, result.inputs, streams, weights, k)
    return {"start": round(window.start, 3), "end": round(window.stop, 3), "topk": entry["topk"],
            "streams": {n: {"topk": v["topk"]} for n, v in entry["streams"].items()}}


def predict_video(path: Path, streams: list[StreamModel], weights: list[float], flow_of, args,
                  device: torch.device) -> dict:
    """One video's record: fused and per-stream top-k with probabilities and raw scores, and
    with --window the timeline of windows."""
    started = time.perf_counter()
    size = resolve_frame_size(args, streams)
    reader = VideoReader(path, size)
    times = reader.timestamps()  # the true frame count, whatever the container says
    if not times:
        raise UserError("no frames could be decoded")
    if args.window:
        count = count_windows(times, args.window, args.stride)
        inputs = count * max(args.window_frames or s.test_frames for s in streams)
        if inputs > MAX_WINDOW_INPUTS:
            raise UserError(f"--window {args.window:g} --stride {args.stride:g} on {times[-1] - times[0]:.1f} s of video: "
                            f"{count} windows x their test positions = {inputs} inputs to plan, more than the bound "
                            f"{MAX_WINDOW_INPUTS}\n  fix: a larger --stride or fewer --window-frames")
    # the timeline's windows, then the whole video (last: its frames are kept to the end anyway)
    windows = (plan_windows(times, args.window, args.stride) if args.window else []) + plan_windows(times)
    whole = windows[-1]
    positions = {s.name: [args.window_frames or s.test_frames] * (len(windows) - 1) + [s.test_frames]
                 for s in streams}
    record: dict = {"video": str(path), "frames": len(times), "duration": round(whole.stop - whole.start, 3),
                    "frame_size": list(size) if size else None}
    if reader.listed_frames > len(times) + 1:
        record["decode_stopped_at"] = round(times[-1], 3)
        print(f"{path}: warning: decoding stopped at {times[-1]:.2f} s (frame {len(times)} of the "
              f"{reader.listed_frames} the container lists); the frames before it are used", file=sys.stderr)
    scorer = StreamingScorer(streams, windows, positions, len(times), flow_of, args.bound, args.jpeg_quality, device)
    with tqdm(total=len(times), desc=path.name, unit="frame", leave=False,
              disable=None if len(times) > 500 else True) as bar:
        results = scorer.run(read_ahead(reader.frames(scorer.keep)), progress=lambda index, seconds: bar.update(1))
    record.update(fuse(results[-1].scores, results[-1].inputs, streams, weights, args.topk))
    if args.window:
        record["windows"] = [window_record(window, result, streams, weights, args.topk)
                             for window, result in zip(windows[:-1], results[:-1])]
    record["flow_pairs"] = scorer.flow_calls  # each needed pair once, however many windows read it
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def get_args_parser() -> argparse.ArgumentParser:
    """predict.py's options."""
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=HelpFormatter)
    add_path(p, "videos", role=INPUT, reads=VIDEO_FILES, nargs="*", help="video files or folders of videos")
    add_model_arguments(p)
    add_path(p, "--json", role=OUTPUT, help="write one record per video (a JSON list) here")
    timeline = p.add_argument_group("timeline (long videos)")
    add_window_arguments(timeline)
    timeline.add_argument("--min-score", type=bound("probability"), default=0.0,
                          help="a window whose top probability is below this is 'no confident action' in the "
                               "segment table")
    add_path(timeline, "--csv", role=OUTPUT, help="write every window's top-k (fused and per stream) to this CSV")
    add_live_arguments(p.add_argument_group("live (a camera, a stream or a file as it plays)"))
    add_path(p, "--plot", role=OUTPUT,
             help="draw the timeline (class probability over time) to this PNG; a folder with "
                                  "several videos")
    add_path(p, "--annotate", role=OUTPUT,
             help="write the video with the current top class drawn on each frame to this "
                                      "file (.mp4, .avi or .webm); a folder with several videos")
    return p


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The streams and how they score a video: predict.py's and app.py's options."""
    add_path(p, "--spatial", role=INPUT, help="checkpoint of spatial_cnn.py (model_best.pth.tar)")
    add_path(p, "--motion", role=INPUT, help="checkpoint of motion_cnn.py")
    p.add_argument("--weights", type=bound("fusion_weight"), nargs="+", default=None,
                   help="spatial and motion weights (default 1 1, or TSN's 1 1.5 for two --recipe tsn checkpoints)")
    p.add_argument("--topk", type=bound("topk"), default=5, help="classes shown and recorded per video and window")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cuda, cuda:N or cpu (default: cuda when there is one)")
    p.add_argument("--size", type=bound("size"), nargs=2, default=None, metavar=("H", "W"),
                   help="frame size the videos are resized to, as tools/extract_frames.py --size did for training "
                        "(default: the size the checkpoints were trained on, else 256 340); 0 0 keeps the video's")
    p.add_argument("--flow-method", choices=[*CPU_METHODS, "tvl1-torch"], default=None,
                   help="as tools/compute_flow.py (default: tvl1-torch on CUDA, else OpenCV's tvl1)")
    p.add_argument("--workers", type=bound("processes"), default=default_workers(),
                   help="processes for OpenCV's flow (tvl1, farneback); 1 computes it in this process")
    p.add_argument("--bound", type=bound("bound"), default=20.0, help="flow bound of tools/compute_flow.py")
    p.add_argument("--jpeg-quality", type=bound("jpeg_quality"), default=90,
                   help="frames and flow pass through JPEG at this quality, as extract_frames.py/compute_flow.py "
                        "store them for training (--quality there); 0 skips it (a spatial checkpoint trained with "
                        "--video-root saw decoded frames: its frames skip it anyway)")
    add_path(p, "--class-ind", role=INPUT, help="classInd.txt, for checkpoints without class names")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="what runs the streams: torch (checkpoints), or onnxruntime / torchscript (the .onnx / "
                        ".torchscript.pt files of tools/export.py); default: told by the files' names")


def add_window_arguments(group) -> None:
    """--window, --stride, --window-frames: the timeline of a long video."""
    group.add_argument("--window", type=bound("seconds"), help="classify windows of this many seconds as well")
    group.add_argument("--stride", type=bound("seconds"), help="seconds between window starts (default: --window)")
    group.add_argument("--window-frames", type=bound("window_frames"), default=None,
                       help="test positions a window (default: the checkpoint's --test-frames)")


def add_live_arguments(live) -> None:
    """predict.py --live's options."""
    live.add_argument("--live", metavar="SOURCE",
                      help="a camera index (0), a stream URL (rtsp://, http://) or a video file, scored as it plays "
                           "(default --window 2 --stride 1)")
    live.add_argument("--pace", default="realtime",
                      help="--live on a file: realtime (its frame rate), fast (as fast as it decodes: nothing dropped, "
                           "predict.py's timeline) or Nx (N times its frame rate)")
    add_path(live, "--jsonl", role=OUTPUT,
             help="--live: one JSON record a window (as --json's windows, with wall time, latency and frames dropped), "
                  "and the summary last")
    live.add_argument("--show", action="store_true",
                      help="--live: a window with the frames and the current top-k (needs OpenCV with window support "
                           "and a display)")
    live.add_argument("--reconnect", type=bound("reconnect"), default=3,
                      help="--live: how often a stalled or broken camera or stream is opened again before it ends")
    live.add_argument("--stall", type=bound("seconds"), default=10.0,
                      help="--live: seconds without a frame after which a camera or stream counts as stalled")


def check_args(args: argparse.Namespace) -> None:
    """Every refusal before any model is loaded or video read."""
    if not args.spatial and not args.motion:
        raise UserError("give --spatial CKPT, --motion CKPT or both")
    if bool(args.videos) == bool(args.live):
        raise UserError("give video files or folders, or --live SOURCE (a camera index, a stream URL or a file)")
    if args.live:
        check_live_args(args)
    # each number alone is bounded by its flag's type (and Predictor's options by check_options)
    if args.size is not None:
        frame_size(args.size)
    if args.stride is not None and args.window is None:
        raise UserError("--stride needs --window (the window length in seconds)")
    if args.window is not None and args.stride is None:
        args.stride = args.window
    if (args.csv or args.min_score or args.plot) and not args.window and not args.live:
        raise UserError("--csv, --min-score and --plot describe windows: give --window SECONDS")
    if args.weights is not None:
        check_fusion_weights(args.weights, [name for name in ("spatial", "motion") if getattr(args, name)])
    for flag in ("json", "csv"):
        if getattr(args, flag):
            check_writable_file(getattr(args, flag), f"--{flag}")


def check_live_args(args: argparse.Namespace) -> None:
    """--live: what it writes and how it plays; --window 2 --stride 1 unless given."""
    from .live import parse_pace, source_kind

    taken = [f"--{flag}" for flag in ("json", "csv", "plot") if getattr(args, flag)]
    if taken:
        raise UserError(f"--live writes --jsonl (a record a window as it comes), not {', '.join(taken)}\n  fix: "
                        f"drop {' '.join(taken)}, or run predict.py on the file without --live")
    parse_pace(args.pace)
    if source_kind(args.live) == "file" and not Path(args.live).is_file():
        raise UserError(f"--live {args.live}: no such file (a camera is its index, 0 for the first; a stream a URL)")
    if args.window is None:
        args.window, args.stride = 2.0, args.stride or 1.0
    if args.jsonl:
        check_writable_file(args.jsonl, "--jsonl")


def load_streams(args: argparse.Namespace, device: torch.device) -> tuple[list[StreamModel], list[float]]:
    """The checkpoints (or exported files) of --spatial/--motion (local paths or URLs) and their
    fusion weights."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    args.backend = args.backend or backend_of(args)
    for name in ("spatial", "motion"):
        path = str(getattr(args, name) or "")
        if args.backend == "torch" and path.endswith(tuple(EXPORT_SUFFIXES.values())):
            backend = "onnxruntime" if path.endswith(EXPORT_SUFFIXES["onnx"]) else "torchscript"
            raise UserError(f"--{name} {path} is an exported model\n  fix: run it with --backend {backend}")
    streams = [load_stream(resolve_weights(path), name, device, args.class_ind) if args.backend == "torch"
               else load_exported_stream(resolve_weights(path), name, args.backend, device, args.class_ind)
               for name, path in (("spatial", args.spatial), ("motion", args.motion)) if path]
    if len(streams) == 2 and streams[0].classes != streams[1].classes:
        first, second = streams[0].classes + [None], streams[1].classes + [None]
        difference = next((a, b) for a, b in zip(first, second) if a != b)
        raise UserError(f"the checkpoints have different class sets ({len(streams[0].classes)} classes in "
                        f"{args.spatial}, {len(streams[1].classes)} in {args.motion}, first difference: {difference})")
    weights = (args.weights or default_fusion_weights({s.name: s.recipe for s in streams})
               or [1.0] * len(streams))
    check_fusion_weights(weights, [s.name for s in streams])
    if args.size is None and resolve_frame_size(args, streams) == DEFAULT_FRAME_SIZE \
            and not any(s.frame_size for s in streams):
        print(f"note: the checkpoints do not record their frame size; frames are resized to "
              f"{DEFAULT_FRAME_SIZE[0]}x{DEFAULT_FRAME_SIZE[1]}, extract_frames.py's default (--size to choose)",
              file=sys.stderr)
    return streams, weights


DEFAULT_FRAME_SIZE = (256, 340)  # tools/extract_frames.py's --size


def resolve_frame_size(args: argparse.Namespace, streams: list[StreamModel]) -> tuple[int, int] | None:
    """--size, or the frame size the checkpoints were trained on (they must agree), or
    extract_frames' default for checkpoints that do not record theirs."""
    if args.size is not None:
        return frame_size(args.size)
    known = {s.name: s.frame_size for s in streams if s.frame_size}
    if len(set(known.values())) > 1:
        sizes = ", ".join(f"{name} {h}x{w}" for name, (h, w) in known.items())
        raise UserError(f"the checkpoints were trained on frames of different sizes ({sizes})\n  fix: pass --size H W "
                        f"for both, or use checkpoints trained on one extraction")
    return next(iter(known.values())) if known else DEFAULT_FRAME_SIZE


def backend_of(args: argparse.Namespace) -> str:
    """The backend the files of --spatial/--motion need, by their names: .onnx onnxruntime,
    .torchscript.pt torchscript, else torch (checkpoints); two that need different ones are refused."""
    def needs(path: str) -> str:
        for backend, fmt in (("onnxruntime", "onnx"), ("torchscript", "torchscript")):
            if path.endswith(EXPORT_SUFFIXES[fmt]):
                return backend
        return "torch"
    found = {name: needs(str(getattr(args, name))) for name in ("spatial", "motion") if getattr(args, name)}
    if len(set(found.values())) > 1:
        needs = ", ".join(f"{name}: {backend}" for name, backend in found.items())
        raise UserError(f"--spatial and --motion need different backends ({needs})\n  fix: give both as checkpoints, "
                        f"or both exported in one format")
    return next(iter(found.values()), "torch")


class Predictor:
    """Trained streams ready to classify video files: what predict.py runs, as one object
    (``torch.hub.load(repo, 'two_stream', spatial=..., motion=...)`` returns one).

        predictor = Predictor(spatial="spatial-....pth", motion="motion-....pth")
        record = predictor("video.mp4")   # predict.py's JSON record of the video
        predictor.close()
    """

    def __init__(self, spatial: str | None = None, motion: str | None = None, device: str = "cpu",
                 **options: object):
        argv = ["video"] + [f for name, path in (("--spatial", spatial), ("--motion", motion)) if path
                            for f in (name, str(path))] + ["--device", device, "--workers", "1"]
        parser = get_args_parser()
        self.args = parser.parse_args(argv)
        for name, value in options.items():  # any of predict.py's flags, by their dest name
            if not hasattr(self.args, name):
                raise TypeError(f"Predictor has no option {name!r}")
            setattr(self.args, name, value)
        check_options(parser, options)  # the bounds the flags have
        check_args(self.args)
        self.device = torch.device(device)
        self.streams, self.weights = load_streams(self.args, self.device)
        method = self.args.flow_method or ("tvl1-torch" if self.device.type == "cuda" else "tvl1")
        self.flow_of = FlowFunction(method, self.device, self.args.workers) if motion else None

    @property
    def classes(self) -> list[str]:
        return self.streams[0].classes

    def __call__(self, video: str | Path) -> dict:
        return predict_video(Path(video), self.streams, self.weights, self.flow_of, self.args, self.device)

    def close(self) -> None:
        if self.flow_of is not None:
            self.flow_of.close()
