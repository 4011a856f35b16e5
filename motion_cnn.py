"""Motion stream: a ResNet on stacks of 10 optical-flow frames (x/y interleaved, 20 channels),
first conv from ImageNet by cross-modality pre-training.

    python motion_cnn.py --flow-root DIR [--recipe reference|tsn] [--resume PATH] [--evaluate]
"""
from __future__ import annotations

import argparse

import engine
from dataloader import MOTION_SCALES, MotionDataset, motion_normalizer, stream_sources
from dataloader.transforms import FLOW_MEAN
from guards import FRAME_FILES, INPUT, add_path, bound
from utils import run_cli

# --recipe: values of the arguments not given explicitly. The reference is the defaults; TSN's
# flow settings follow the paper and its authors' PyTorch port (tsn-pytorch: 340 epochs,
# x0.1 after 190 and 300, clip 20, dropout 0.7; scales 1, .875, .75; 13 crop positions, its
# learning-rate groups, segment-centre test positions over the valid stack starts).
RECIPES = {
    "reference": {},
    "tsn": {"train_crop": "multiscale", "crop_positions": 13, "partial_bn": True, "dropout": 0.7, "segments": 3,
            "clip_grad_norm": 20.0, "weight_decay": 5e-4, "lr": 1e-3, "lr_scheduler": "multistep",
            "lr_milestones": [190, 300], "epochs": 340, "lr_groups": "tsn", "test_frames": 25, "test_crops": 10,
            "test_positions": "centres", "test_scale": "tsn"},
}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = engine.get_args_parser("motion", __doc__, add_help)
    add_path(parser, "--flow-root", role=INPUT, folder=True, reads=FRAME_FILES, default="data/tvl1_flow",
             help="folder of optical flow (u/ and v/)")
    parser.add_argument("--stack-length", type=bound("stack_length"), default=10,
                        help="flow frames per stack (2L input channels)")
    parser.add_argument("--reference-stack-order", action="store_true",
                        help="the reference repo's rotated channel order, for its released checkpoints")
    parser.add_argument("--flow-std", type=bound("flow_std"), default=1.0,
                        help="flow in [0,1] minus --flow-mean is divided by this (mmaction2's flow models: "
                             "--flow-mean 0.502 --flow-std 0.502, i.e. (x - 128) / 128 on 0..255)")
    parser.add_argument("--flow-mean", type=bound("flow_mean"), default=FLOW_MEAN,
                        help="subtracted from flow in [0,1]; the reference's checkpoints want 0")
    parser.set_defaults(batch_size=64, lr=1e-2, epochs=150, segments=1, crop_scales=list(MOTION_SCALES))
    engine.describe_recipes(parser, RECIPES)
    return parser


MOTION = engine.Stream(
    name="motion",
    sources=lambda args, layout: stream_sources("motion", layout, flow_root=args.flow_root),
    dataset=lambda videos, train, args, test_mode: MotionDataset(
        videos, train, reference_order=args.reference_stack_order, test_mode=test_mode, **engine.dataset_options(args)),
    normalizer=lambda args, channels_last, resize: motion_normalizer(
        2 * args.stack_length, args.flow_mean, channels_last, resize, args.flow_std),
    in_channels=lambda args: 2 * args.stack_length,
    min_frames=lambda args: args.stack_length,
    flow=True,
    recipes=RECIPES,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line (flags given explicitly win over a checkpoint's settings)."""
    return engine.parse_args(get_args_parser(), argv, RECIPES)


def main(args: argparse.Namespace):
    return engine.run(args, MOTION)


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
