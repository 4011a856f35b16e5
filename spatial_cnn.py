"""Spatial stream: a ResNet on single RGB frames, TSN-style segment training.

    python spatial_cnn.py --data-root DIR [--resume PATH] [--evaluate]
"""
from __future__ import annotations

import argparse

import engine
from dataloader import SpatialDataset, spatial_normalizer, stream_sources
from utils import run_cli


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = engine.get_args_parser("spatial", __doc__, add_help)
    parser.add_argument("--data-root", default="data/jpegs_256", help="folder of RGB frames")
    parser.add_argument("--segments", type=int, default=3, help="frames per video in training (TSN segments)")
    parser.add_argument("--stack-length", type=int, default=10,
                        help="motion stack length; test positions avoid the last L-1 frames as the motion stream's do")
    parser.set_defaults(batch_size=25, lr=5e-4, epochs=50)
    return parser


SPATIAL = engine.Stream(
    name="spatial",
    sources=lambda args, layout: stream_sources("spatial", layout, data_root=args.data_root),
    dataset=lambda videos, train, args, test_mode: SpatialDataset(
        videos, train, segments=args.segments, input_size=args.input_size, test_frames=args.test_frames,
        test_mode=test_mode, stack_length=args.stack_length),
    normalizer=lambda args, channels_last, resize: spatial_normalizer(channels_last, resize),
    in_channels=lambda args: 3,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line (flags given explicitly win over a checkpoint's settings)."""
    return engine.parse_args(get_args_parser(), argv)


def main(args: argparse.Namespace):
    return engine.run(args, SPATIAL)


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
