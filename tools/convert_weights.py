"""Convert a checkpoint of the action-recognition zoos to a torchvision-keyed state dict, once,
offline: what ``--pretrained OUT`` then loads without converting again.

    python tools/convert_weights.py SRC OUT [--arch resnet50] [--in-channels 3]

SRC: a torchvision .pth, this repo's or the reference repo's checkpoint, an mmaction2
checkpoint (0.x or 1.x) or a tsn-pytorch/TSM one (models/zoo.py says how each is detected).
The converted weights are checked against ``--arch`` (every backbone tensor must land) and,
with ``--in-channels`` other than the source's, an RGB first conv is adapted by cross-modality
pre-training. Heads (mmaction2's cls_head, tsn-pytorch's new_fc) are dropped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from models import ARCHS, build_model  # noqa: E402
from models.resnet import load_weights_file  # noqa: E402
from guards import INPUT, OUTPUT, add_path, bound, check_io  # noqa: E402
from utils import HelpFormatter, UserError, atomic_write, check_writable_file, run_cli  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_path(p, "src", role=INPUT, metavar="SRC", help="the checkpoint to convert")
    add_path(p, "out", role=OUTPUT, metavar="OUT", help="where the torchvision-keyed state dict goes (.pth)")
    p.add_argument("--arch", default="resnet50", choices=ARCHS, help="the ResNet it must fit")
    p.add_argument("--in-channels", type=bound("in_channels"), default=None,
                   help="input channels of the converted first conv (default: the source's)")
    return p


def main(args: argparse.Namespace) -> int:
    check_io(get_args_parser(), args)
    check_writable_file(args.out, "OUT")  # before the conversion: a folder, a missing or read-only one
    state = load_weights_file(args.src)
    conv1 = state.get("conv1.weight")
    in_channels = args.in_channels or (conv1.shape[1] if conv1 is not None else 3)
    fc = state.get("fc.weight")
    model = build_model(args.arch, fc.shape[0] if fc is not None else 1000, in_channels, args.src)
    converted = {k: v for k, v in model.state_dict().items() if fc is not None or not k.startswith("fc.")}
    try:
        with atomic_write(args.out) as f:
            torch.save(converted, f)
    except OSError as err:
        raise UserError(f"cannot write OUT {args.out}: {err.strerror or err}\n  fix: free disk space or pass another "
                        f"OUT") from None
    print(f"wrote {args.out}: {args.arch}, {in_channels} input channels, {len(converted)} tensors"
          + ("" if fc is not None else " (no classifier)"))
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()))
