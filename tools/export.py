"""Export a trained stream to ONNX or TorchScript, for onnxruntime, TensorRT or C++ deployment.

    python tools/export.py CKPT --format onnx|torchscript [--out PATH] [--class-ind classInd.txt]

The file takes the uint8 frames (spatial: [N, 3, S, S]) or flow stacks (motion: [N, 2L, S, S])
the loaders make, any batch size N, and returns the logits; the input normalisation is inside
it, and so is the checkpoint's record (class names, test settings). Before it is kept, its
runtime runs it on random inputs of two batch sizes and the difference from PyTorch is printed;
over 1e-4 of the largest score, it is refused. Run it with
``python predict.py VIDEO --spatial S.onnx --motion M.onnx --backend onnxruntime``.

The default name is ``<stream>-<arch>-<recipe>.onnx`` (``.torchscript.pt``) in the current
folder. ONNX needs onnx, onnxscript and onnxruntime: ``pip install -r requirements-extras.txt``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import load_checkpoint, model_name  # noqa: E402
from inference.export import EXPORT_SUFFIXES, export_stream  # noqa: E402
from guards import INPUT, OUTPUT, add_path, check_io  # noqa: E402
from utils import HelpFormatter, UserError, check_writable_file, run_cli  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_path(p, "checkpoint", role=INPUT,
             help="checkpoint of spatial_cnn.py/motion_cnn.py (or tools/publish_model.py's file)")
    p.add_argument("--format", required=True, choices=list(EXPORT_SUFFIXES), help="the file to write")
    add_path(p, "--out", role=OUTPUT,
             help="the exported file (default: <stream>-<arch>-<recipe> with the format's suffix)")
    add_path(p, "--class-ind", role=INPUT, help="classInd.txt, for checkpoints without class names")
    return p


def default_out(ckpt: dict, fmt: str) -> Path:
    """``<stream>-<arch>-<recipe>`` with the format's suffix in this folder, or with ``-2``, ``-3``
    ... before the suffix: an earlier export is never replaced by default."""
    name, suffix = model_name(ckpt), EXPORT_SUFFIXES[fmt]
    out, k = Path(name + suffix), 1
    while out.exists():
        k += 1
        out = Path(f"{name}-{k}{suffix}")
    return out


def main(args: argparse.Namespace) -> int:
    check_io(get_args_parser(), args)
    ckpt = load_checkpoint(args.checkpoint)  # read once: the default name and the export both need it
    out = Path(args.out) if args.out else default_out(ckpt, args.format)
    if not args.out:  # the name made from the checkpoint, compared as --out was
        check_io(get_args_parser(), args, outputs={f"--out {out}": out})
    if not out.name.endswith(EXPORT_SUFFIXES[args.format]):
        raise UserError(f"--out {out}: a {args.format} file's name ends in {EXPORT_SUFFIXES[args.format]} "
                        f"(predict.py --backend tells the files apart by it)\n"
                        f"  fix: --out {out.name.split('.')[0]}{EXPORT_SUFFIXES[args.format]}")
    check_writable_file(out, "--out")
    started = time.perf_counter()
    figures = export_stream(args.checkpoint, out, args.format, args.class_ind, loaded=ckpt)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - started:.1f} s)\n"
          f"  checked against PyTorch on random inputs, batches {' and '.join(map(str, figures['batches']))}: "
          f"max |difference| {figures['max_difference']:.3g}, largest |score| {figures['largest_score']:.3g}")
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()))
