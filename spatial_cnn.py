"""Spatial stream: a ResNet on single RGB frames, TSN-style segment training.

    python spatial_cnn.py --data-root DIR [--recipe reference|tsn] [--resume PATH] [--evaluate]
"""
from __future__ import annotations

import argparse

import engine
from dataloader import TSN_SCALES, SpatialDataset, spatial_normalizer, stream_sources
from guards import FRAME_FILES, INPUT, add_path, bound
from utils import run_cli

# --recipe: values of the arguments not given explicitly. The reference is the defaults; TSN's
# RGB settings follow the paper and its authors' PyTorch port (tsn-pytorch: 80 epochs,
# x0.1 after 30 and 60, clip 20, dropout 0.8, 13 crop positions, its learning-rate groups,
# segment-centre test positions over every frame: RGB reads one frame, L = 1).
RECIPES = {
    "reference": {},
    "tsn": {"train_crop": "multiscale", "crop_positions": 13, "partial_bn": True, "dropout": 0.8, "segments": 3,
            "clip_grad_norm": 20.0, "weight_decay": 5e-4, "lr": 1e-3, "lr_scheduler": "multistep",
            "lr_milestones": [30, 60], "epochs": 80, "lr_groups": "tsn", "test_frames": 25, "test_crops": 10,
            "test_positions": "centres", "test_scale": "tsn", "stack_length": 1},
}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = engine.get_args_parser("spatial", __doc__, add_help)
    add_path(parser, "--data-root", role=INPUT, folder=True, reads=FRAME_FILES, default="data/jpegs_256",
             help="folder of RGB frames")
    parser.add_argument("--stack-length", type=bound("stack_length"), default=10,
                        help="the motion stream's stack length: positions avoid the last L-1 frames, as the motion "
                             "stream's do, so that both see the same moments (the tsn recipe: 1, every frame)")
    parser.set_defaults(batch_size=25, lr=5e-4, epochs=50, segments=3, crop_scales=list(TSN_SCALES))
    engine.describe_recipes(parser, RECIPES)
    return parser


SPATIAL = engine.Stream(
    name="spatial",
    sources=lambda args, layout: stream_sources("spatial", layout, data_root=args.data_root),
    dataset=lambda videos, train, args, test_mode: SpatialDataset(videos, train, test_mode=test_mode,
                                                                  **engine.dataset_options(args)),
    normalizer=lambda args, channels_last, resize: spatial_normalizer(channels_last, resize),
    in_channels=lambda args: 3,
    recipes=RECIPES,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line (flags given explicitly win over a checkpoint's settings)."""
    return engine.parse_args(get_args_parser(), argv, RECIPES)


def main(args: argparse.Namespace):
    return engine.run(args, SPATIAL)


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
