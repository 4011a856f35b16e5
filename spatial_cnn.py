"""Spatial stream: a ResNet on single RGB frames, TSN-style segment training.

    python spatial_cnn.py --data-root DIR [--recipe reference|tsn] [--resume PATH] [--evaluate]
    python spatial_cnn.py --video-root DIR [--frame-size 256 340] [--decoder pyav|opencv|torchcodec] ...
"""
from __future__ import annotations

import argparse

import engine
from dataloader import TSN_SCALES, SpatialDataset, spatial_normalizer, stream_sources
from dataloader.decoders import DECODERS
from dataloader.video_index import DEFAULT_FRAME_SIZE, video_sources
from guards import FRAME_FILES, INPUT, VIDEO_FILES, add_path, bound, frame_size
from utils import UserError, run_cli

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
    add_path(parser, "--video-root", role=INPUT, folder=True, reads=VIDEO_FILES,
             help="read the frames straight from the video files the split lists name, under this folder "
                  "(VIDEO_ROOT/<class>/<video>.avi or VIDEO_ROOT/<video>.avi), instead of --data-root's frame folders")
    parser.add_argument("--frame-size", dest="video_frame_size", type=bound("size"), nargs=2, metavar=("H", "W"),
                        default=None,
                        help="--video-root: frames resized to this, as tools/extract_frames.py --size resizes them; "
                             "0 0 keeps the video's size (default: the --resume checkpoint's frame size, else "
                             f"{DEFAULT_FRAME_SIZE[0]} {DEFAULT_FRAME_SIZE[1]})")
    parser.add_argument("--decoder", default="pyav", choices=DECODERS,
                        help="--video-root: pyav (exact seeks, from the lock), opencv (decodes from the start of "
                             "each video to the last frame a sample needs) or torchcodec (needs FFmpeg's libraries)")
    parser.add_argument("--stack-length", type=bound("stack_length"), default=10,
                        help="the motion stream's stack length: positions avoid the last L-1 frames, as the motion "
                             "stream's do, so that both see the same moments (the tsn recipe: 1, every frame)")
    parser.set_defaults(batch_size=25, lr=5e-4, epochs=50, segments=3, crop_scales=list(TSN_SCALES))
    engine.describe_recipes(parser, RECIPES)
    return parser


def spatial_sources(args: argparse.Namespace, layout) -> list:
    """The frame folders of --data-root, or the video files of --video-root."""
    if args.video_root:
        size = frame_size(args.video_frame_size or list(DEFAULT_FRAME_SIZE), "--frame-size")
        return video_sources(args.video_root, args.decoder, size)
    return stream_sources("spatial", layout, data_root=args.data_root)


SPATIAL = engine.Stream(
    name="spatial",
    sources=lambda args, layout: spatial_sources(args, layout),
    dataset=lambda videos, train, args, test_mode: SpatialDataset(videos, train, test_mode=test_mode,
                                                                  **engine.dataset_options(args)),
    normalizer=lambda args, channels_last, resize: spatial_normalizer(channels_last, resize),
    in_channels=lambda args: 3,
    recipes=RECIPES,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line (flags given explicitly win over a checkpoint's settings)."""
    parser = get_args_parser()
    args = engine.parse_args(parser, argv, RECIPES)
    if args.video_frame_size:
        try:  # a single 0 or a side under 8 px: a usage error now, not after indexing
            frame_size(args.video_frame_size, "--frame-size")
        except UserError as err:
            parser.error(str(err))
    return args


def main(args: argparse.Namespace):
    return engine.run(args, SPATIAL)


if __name__ == "__main__":
    run_cli(lambda: main(parse_args()))
