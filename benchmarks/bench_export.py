"""The exported streams' speed against PyTorch: seconds per batch of test inputs (a video's 19
positions by default) through PyTorch, onnxruntime (ONNX) and TorchScript, on random weights
and inputs (speed does not depend on them), with each export's largest difference from PyTorch.

    python benchmarks/bench_export.py                           # resnet101 spatial at 224, batch 19, CPU
    python benchmarks/bench_export.py --stream motion --arch resnet50 --batch 25 --repeat 5
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from inference.export import EXPORT_SUFFIXES, export_stream, exportable, load_runner  # noqa: E402
from models import ARCHS  # noqa: E402
from benchmarks.bench_predict import make_checkpoint  # noqa: E402
from guards import bound  # noqa: E402
from utils import HelpFormatter  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--stream", choices=("spatial", "motion"), default="spatial", help="which stream's input")
    p.add_argument("--arch", choices=ARCHS, default="resnet101", help="the ResNet to export")
    p.add_argument("--input-size", type=bound("input_size"), default=224, help="network input size")
    p.add_argument("--batch", type=bound("batch_size"), default=19,
                   help="inputs a forward pass (19: one video's test positions)")
    p.add_argument("--repeat", type=bound("count"), default=3, help="timed passes after one warm-up pass")
    return p


def seconds_per_pass(run, frames: torch.Tensor, repeat: int) -> float:
    with torch.no_grad():
        run(frames)
        started = time.perf_counter()
        for _ in range(repeat):
            run(frames)
    return (time.perf_counter() - started) / repeat


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        ckpt = Path(scratch) / "ckpt.pth.tar"
        make_checkpoint(ckpt, args.stream, args.arch, args.input_size, [f"c{i}" for i in range(101)])
        module, record = exportable(ckpt)
        shape = (args.batch, record["in_channels"], args.input_size, args.input_size)
        frames = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        baseline = seconds_per_pass(module, frames, args.repeat)
        print(f"{args.stream} {args.arch} at {args.input_size}, batch {args.batch}, {torch.get_num_threads()} threads")
        print(f"  {'backend':12} {'s/pass':>8} {'vs torch':>9} {'export s':>9} {'max |diff| / largest':>22}")
        print(f"  {'torch':12} {baseline:8.3f} {1.0:8.2f}x")
        for fmt, backend in (("onnx", "onnxruntime"), ("torchscript", "torchscript")):
            path = Path(scratch) / f"model{EXPORT_SUFFIXES[fmt]}"
            started = time.perf_counter()
            figures = export_stream(ckpt, path, fmt)
            exported = time.perf_counter() - started
            runner, _ = load_runner(path, backend, torch.device("cpu"))
            seconds = seconds_per_pass(runner, frames, args.repeat)
            share = figures["max_difference"] / figures["largest_score"]
            print(f"  {backend:12} {seconds:8.3f} {baseline / seconds:8.2f}x {exported:9.1f} {share:22.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
