"""Live benchmark: predict.py --live on a generated video played at its frame rate.

For the demo's ResNet-18 (48x64 frames, input 48) and ResNet-101 at 224 (256x340 frames), with
each flow method, it plays a generated 25 fps video in real time through both streams and
prints the frames scored a second (the rest dropped), the windows scored, and the latency
from a window's newest frame to its prediction (mean, p95). Untrained weights: the work is the
same as a trained model's.

    python benchmarks/bench_live.py [--seconds 20] [--window 2 --stride 1] [--window-frames 5]
                                    [--flow-methods tvl1 farneback tvl1-torch] [--archs resnet18 resnet101]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import predict  # noqa: E402
from guards import bound  # noqa: E402
from utils import HelpFormatter  # noqa: E402

SETTINGS = {"resnet18": {"frame_size": [48, 64], "input_size": 48},  # the demo's
            "resnet101": {"frame_size": [256, 340], "input_size": 224}}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--seconds", type=bound("seconds"), default=20.0, help="length of the generated video")
    p.add_argument("--window", type=bound("seconds"), default=2.0, help="predict.py --live --window")
    p.add_argument("--stride", type=bound("seconds"), default=1.0, help="predict.py --live --stride")
    p.add_argument("--window-frames", type=bound("window_frames"), default=5, help="test positions a window")
    p.add_argument("--flow-methods", nargs="+", choices=["tvl1", "farneback", "tvl1-torch"],
                   default=["tvl1", "farneback", "tvl1-torch"], help="flow methods to measure")
    p.add_argument("--archs", nargs="+", choices=sorted(SETTINGS), default=["resnet18", "resnet101"],
                   help="stream architectures to measure")
    p.add_argument("--workers", type=bound("processes"), default=1, help="processes for OpenCV's flow")
    return p


def checkpoint(path: Path, stream: str, arch: str) -> Path:
    """An untrained checkpoint of ``arch`` with the settings of SETTINGS (101 classes, stacks of 10)."""
    from tests.videos import untrained_checkpoint

    settings = SETTINGS[arch]
    return untrained_checkpoint(path, stream, stack_length=10, arch=arch, classes=[f"class{i}" for i in range(101)],
                                frame_size=settings["frame_size"], input_size=settings["input_size"], test_frames=19)


def main() -> None:
    args = get_args_parser().parse_args()
    from tests.videos import action_change_video

    work = Path(tempfile.mkdtemp(prefix="bench_live_"))
    video = action_change_video(work / "video.avi", args.seconds, fps=25)
    print(f"{args.seconds:g} s of 25 fps video played in real time; --window {args.window:g} --stride {args.stride:g} "
          f"--window-frames {args.window_frames}; both streams; {work}")
    print(f"{'arch':10} {'flow':11} {'frames/s':>9} {'dropped':>8} {'windows':>8} {'latency mean':>13} {'p95':>7}")
    for arch in args.archs:
        spatial, motion = checkpoint(work / f"{arch}_s.pth", "spatial", arch), checkpoint(work / f"{arch}_m.pth",
                                                                                          "motion", arch)
        for method in args.flow_methods:
            jsonl = work / f"{arch}_{method}.jsonl"
            argv = ["--live", str(video), "--spatial", str(spatial), "--motion", str(motion), "--flow-method", method,
                    "--workers", str(args.workers), "--device", "cpu", "--window", str(args.window), "--stride",
                    str(args.stride), "--window-frames", str(args.window_frames), "--jsonl", str(jsonl)]
            with contextlib.redirect_stdout(io.StringIO()):
                predict.main(predict.get_args_parser().parse_args(argv))
            summary = json.loads(jsonl.read_text().splitlines()[-1])
            scored = (summary["frames_read"] - summary["frames_dropped"]) / summary["seconds"]
            print(f"{arch:10} {method:11} {scored:9.1f} {100 * summary['drop_rate']:7.1f}% {summary['windows']:8d} "
                  f"{summary['latency_mean'] or 0:12.2f}s {summary['latency_p95'] or 0:6.2f}s", flush=True)


if __name__ == "__main__":
    main()
