"""Publish a trained stream: its checkpoint without the optimizer, scheduler, scaler and RNG
state, keeping the model, the class names and the settings needed to evaluate it and predict
with it, written as ``NAME-<first 8 hex of its sha256>.pth`` (torch.hub's naming, whose hash
``--pretrained URL``, predict.py and hubconf.py check when they download it).

    python tools/publish_model.py CKPT [--out-dir DIR] [--name NAME]

The default name is ``<stream>-<arch>-<recipe>``, e.g. ``spatial-resnet101-tsn-1a2b3c4d.pth``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine import load_checkpoint, model_name, publishable  # noqa: E402
from models.zoo import sha256_of  # noqa: E402
from utils import UserError, atomic_write, run_cli  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint.pth.tar or model_best.pth.tar of spatial_cnn.py/motion_cnn.py")
    p.add_argument("--out-dir", default=".", help="where the published file goes")
    p.add_argument("--name", help="file name before the hash (default: <stream>-<arch>-<recipe>)")
    return p


def main(args: argparse.Namespace) -> int:
    published = publishable(load_checkpoint(args.checkpoint), args.checkpoint)
    name = args.name or model_name(published)
    if "/" in name or not name:
        raise UserError(f"--name {name!r} must be a plain file name")
    out_dir = Path(args.out_dir)
    scratch = out_dir / f".{name}.publishing"
    with atomic_write(scratch) as f:
        torch.save(published, f)
    digest = sha256_of(scratch)
    target = out_dir / f"{name}-{digest[:8]}.pth"
    os.replace(scratch, target)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB, sha256 {digest})")
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()))
