"""Publish a trained stream: its checkpoint without the optimizer, scheduler, scaler and RNG
state, keeping the model, the class names and the settings needed to evaluate it and predict
with it, written as ``NAME-<first 8 hex of its sha256>.pth`` (torch.hub's naming, whose hash
``--pretrained URL``, predict.py and hubconf.py check when they download it).

    python tools/publish_model.py CKPT [--out-dir DIR] [--name NAME]

The default name is ``<stream>-<arch>-<recipe>``, e.g. ``spatial-resnet101-tsn-1a2b3c4d.pth``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine import check_finite_weights, load_checkpoint, model_name, publishable  # noqa: E402
from guards import INPUT, OUTPUT, add_path, check_io  # noqa: E402
from utils import HelpFormatter, UserError, atomic_write, check_writable_dir, run_cli  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_path(p, "checkpoint", role=INPUT,
             help="checkpoint.pth.tar or model_best.pth.tar of spatial_cnn.py/motion_cnn.py")
    add_path(p, "--out-dir", role=OUTPUT, folder=True, default=".", help="where the published file goes")
    p.add_argument("--name", help="file name before the hash (default: <stream>-<arch>-<recipe>)")
    return p


MAX_NAME = 200  # characters before the hash: file systems allow 255 bytes a name


def main(args: argparse.Namespace) -> int:
    check_io(get_args_parser(), args)
    name = args.name
    if name is not None and (not name or len(name) > MAX_NAME or not name.isprintable() or "/" in name
                             or name.startswith(".")):
        raise UserError(f"--name {name!r} must be a plain file name of 1 to {MAX_NAME} characters, not hidden\n"
                        f"  fix: e.g. --name spatial-resnet101-ucf101")
    out_dir = Path(args.out_dir)
    try:  # before the checkpoint is read: an unusable folder is one message
        if not out_dir.exists():
            out_dir.mkdir(parents=True)
    except OSError as err:
        raise UserError(f"cannot create --out-dir {out_dir}: {err.strerror}\n  fix: pass a folder you can "
                        f"write") from None
    check_writable_dir(out_dir, "--out-dir")
    published = publishable(load_checkpoint(args.checkpoint), args.checkpoint)
    check_finite_weights(published["model"], args.checkpoint)
    name = name or model_name(published)
    buffer = io.BytesIO()  # hashed before it is written: the name carries the hash, and no scratch file is shared
    torch.save(published, buffer)
    data = buffer.getbuffer()
    digest = hashlib.sha256(data).hexdigest()
    target = out_dir / f"{name}-{digest[:8]}.pth"
    try:
        with atomic_write(target) as f:
            f.write(data)
    except OSError as err:
        raise UserError(f"cannot write {target}: {err.strerror or err}\n  fix: free disk space or pass another "
                        f"--out-dir") from None
    print(f"wrote {target} ({len(data) / 1e6:.1f} MB, sha256 {digest})")
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()))
