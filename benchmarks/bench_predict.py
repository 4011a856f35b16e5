"""predict.py's throughput and memory on a generated long video: video-seconds processed per
wall-clock second and peak resident memory (each mode in a fresh process, so that each peak
is its own), whole-video and timeline mode, the spatial stream alone and both streams.

    python benchmarks/bench_predict.py                    # CPU defaults: resnet18 at 112, 20 s of 128x170 video
    python benchmarks/bench_predict.py --device cuda --arch resnet101 --input-size 224 --size 256 340 --seconds 60
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import CHECKPOINT_FORMAT  # noqa: E402
from models import build_model  # noqa: E402
from tools.make_demo_data import demo_classes, render_video, write_video  # noqa: E402
from guards import OUTPUT, add_path, bound  # noqa: E402
from utils import HelpFormatter  # noqa: E402

MODES = [("whole", "spatial"), ("whole", "both"), ("timeline", "spatial"), ("timeline", "both")]


def make_checkpoint(path: Path, stream: str, arch: str, input_size: int, classes: list[str]) -> None:
    """A checkpoint of this repo's format with random weights (speed does not depend on them)."""
    channels = 3 if stream == "spatial" else 20
    torch.manual_seed(0)
    model = build_model(arch, len(classes), channels, "none")
    torch.save({"format": CHECKPOINT_FORMAT, "stream": stream, "arch": arch, "num_classes": len(classes),
                "in_channels": channels, "class_names": classes, "model": model.state_dict(),
                "args": {"input_size": input_size, "test_frames": 19, "test_view": "resize", "stack_length": 10}},
               path)


def make_video(path: Path, seconds: float, size: tuple[int, int], fps: int = 25) -> None:
    """Generated actions one after the other, 4 s each."""
    rng = np.random.default_rng(0)
    classes = demo_classes()
    parts, frames = [], int(seconds * fps)
    for k in range(0, frames, 4 * fps):
        _, colour, direction = classes[(k // (4 * fps)) % len(classes)]
        parts.append(render_video(colour, direction, min(4 * fps, frames - k), size, rng))
    write_video(path, np.concatenate(parts), fps=fps)


def run_one(args: argparse.Namespace, mode: str, streams: str) -> dict:
    """One mode in a fresh process: its wall time and peak RSS."""
    command = [sys.executable, "predict.py", str(args.video), "--spatial", str(args.data / "spatial.pth.tar"),
               "--size", *map(str, args.size), "--device", args.device, "--json", str(args.data / "out.json")]
    if streams == "both":
        command += ["--motion", str(args.data / "motion.pth.tar"), "--flow-method", args.flow_method]
        if args.workers:
            command += ["--workers", str(args.workers)]
    if mode == "timeline":
        command += ["--window", str(args.window), "--stride", str(args.stride)]
    script = ("import resource, runpy, sys, time; sys.argv = sys.argv[1:]; t = time.perf_counter()\n"
              "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as e:\n"
              "    assert not e.code, e.code\n"
              "print('BENCH', time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-c", script, *command[1:]], cwd=Path(__file__).resolve().parent.parent,
                          env=env, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{mode}/{streams} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    _, seconds, rss_kb = line.split()
    record = json.loads((args.data / "out.json").read_text())[0]
    return {"wall": float(seconds), "video": record["seconds"], "rss_mb": int(rss_kb) / 1024,
            "duration": record["duration"],
            "windows": len(record.get("windows", [])), "flow_pairs": record["flow_pairs"]}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--arch", default=None, help="default: resnet101 on CUDA, resnet18 on the CPU")
    p.add_argument("--input-size", type=bound("input_size"), default=None, help="default: 224 on CUDA, 112 on the CPU")
    p.add_argument("--size", type=bound("size"), nargs=2, default=None, metavar=("H", "W"),
                   help="frame size (default: 256 340 on CUDA, 128 170 on the CPU)")
    p.add_argument("--seconds", type=bound("seconds"), default=None, help="video length (default: 60 CUDA, 20 CPU)")
    p.add_argument("--window", type=bound("seconds"), default=2.0, help="timeline window, seconds")
    p.add_argument("--stride", type=bound("seconds"), default=1.0, help="timeline stride, seconds")
    p.add_argument("--flow-method", default=None, help="default: tvl1-torch on CUDA, tvl1 on the CPU")
    p.add_argument("--workers", type=bound("processes"), default=None,
                   help="OpenCV flow processes (predict.py's default)")
    add_path(p, "--data", role=OUTPUT, folder=True, type=Path,
             help="folder for the video and checkpoints (default: temporary)")
    return p


def main() -> None:
    args = get_args_parser().parse_args()
    cuda = args.device.startswith("cuda")
    arch = args.arch or ("resnet101" if cuda else "resnet18")
    input_size = args.input_size or (224 if cuda else 112)
    args.size = args.size or ([256, 340] if cuda else [128, 170])
    seconds = args.seconds or (60.0 if cuda else 20.0)
    args.flow_method = args.flow_method or ("tvl1-torch" if cuda else "tvl1")
    args.data = args.data or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    args.data.mkdir(parents=True, exist_ok=True)
    classes = [name for name, _, _ in demo_classes()]
    for stream in ("spatial", "motion"):
        make_checkpoint(args.data / f"{stream}.pth.tar", stream, arch, input_size, classes)
    args.video = args.data / "long.avi"
    make_video(args.video, seconds, tuple(args.size))
    device = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)"
    print(f"device {device}, torch {torch.__version__}, {arch} at {input_size}, {seconds:.0f} s of "
          f"{args.size[0]}x{args.size[1]} video at 25 fps, flow {args.flow_method}, windows {args.window} s "
          f"every {args.stride} s")
    print(f"{'mode':9} {'streams':8} {'video s':>8} {'video s/s':>10} {'process s':>10} {'peak RSS MB':>12} "
          f"{'windows':>8} {'flow pairs':>10}")
    started = time.time()
    for mode, streams in MODES:
        r = run_one(args, mode, streams)
        print(f"{mode:9} {streams:8} {r['video']:8.1f} {r['duration'] / r['video']:10.2f} {r['wall']:10.1f} "
              f"{r['rss_mb']:12.0f} {r['windows']:8d} {r['flow_pairs']:10d}", flush=True)
    print(f"(total {time.time() - started:.0f} s. video s: predict.py's time on the video (both decoding passes, "
          f"flow, networks); process s: the whole command with imports and model loading; peak RSS includes "
          f"torch and the models)")


if __name__ == "__main__":
    main()
