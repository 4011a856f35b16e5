"""Write a small synthetic action data set as real video files, in UCF101's format.

    python tools/make_demo_data.py OUT_DIR [--seed 0] [--frames 30] [--size 48 64]

Every class is an (appearance, motion) pair: a textured square of one colour moving up or
down over a static textured background. One frame shows the colour but not the direction
(the square is anywhere, and wraps around the frame edges), and optical flow shows the
direction but not the colour: the spatial stream alone can reach ~1/2 (the colour among
2 directions), the motion stream alone ~1/3 (the direction among 3 colours), and only their
fusion tells the class. Vertical motion keeps the classes intact under the horizontal flip
of training. Seeded: the same command writes the same data.

OUT_DIR/videos/<Class>/v_<Class>_gXX_c01.avi and OUT_DIR/splits/{classInd,trainlist01,testlist01}.txt
(groups g01-g04 test, the rest train).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guards import OUTPUT, add_path, bound, frame_size  # noqa: E402
from utils import HelpFormatter, UserError, run_cli  # noqa: E402

# RGB, nearly equal luma (0.299 R + 0.587 G + 0.114 B ~ 120): in the grey images that flow is
# computed from, the three squares look the same, so the flow cannot carry their colour.
COLOURS = {"Red": (230, 80, 60), "Green": (60, 170, 40), "Blue": (80, 110, 250)}
MOTIONS = {"Up": -1, "Down": 1}
TEST_GROUPS = 4


def demo_classes() -> list[tuple[str, tuple[int, int, int], int]]:
    """(class name, RGB colour, vertical direction) of every class."""
    return [(f"{colour}{motion}", rgb, direction)
            for colour, rgb in COLOURS.items() for motion, direction in MOTIONS.items()]


def render_video(colour: tuple[int, int, int], direction: int, frames: int, size: tuple[int, int],
                 rng: np.random.Generator) -> np.ndarray:
    """frames x H x W x 3 uint8 (RGB): a coloured textured square moving vertically."""
    h, w = size
    side = max(8, h // 3)
    background = rng.uniform(90, 160, (h // 4 + 1, w // 4 + 1))
    background = np.kron(background, np.ones((4, 4)))[:h, :w]
    texture = np.kron(rng.uniform(0.45, 1.0, (side // 4 + 1, side // 4 + 1)), np.ones((4, 4)))[:side, :side]
    patch = texture[..., None] * np.array(colour, dtype=np.float64)
    speed = rng.uniform(2.5, 4.0) * direction
    top, left = rng.uniform(0, h), int(rng.integers(0, w - side))
    video = np.empty((frames, h, w, 3), dtype=np.uint8)
    for t in range(frames):
        frame = np.repeat(background[..., None], 3, axis=2)
        rows = (int(round(top + speed * t)) + np.arange(side)) % h  # wraps around: no position cue
        frame[rows[:, None], np.arange(left, left + side)[None, :]] = patch
        video[t] = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
    return video


def write_video(path: Path, video: np.ndarray, fps: int = 25) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = video.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise UserError(f"OpenCV cannot write {path} (MJPG/AVI)")
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    for frame in video:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def make_demo_data(out_dir: Path, seed: int = 0, frames: int = 30, size: tuple[int, int] = (48, 64),
                   videos_per_class: int = 12) -> Path:
    """Write the data set; returns the split folder."""
    classes = [name for name, _, _ in demo_classes()]
    train, test = [], []
    for c, (name, colour, direction) in enumerate(demo_classes()):
        for g in range(1, videos_per_class + 1):
            video = f"v_{name}_g{g:02d}_c01"
            rng = np.random.default_rng([seed, c, g])
            write_video(out_dir / "videos" / name / f"{video}.avi", render_video(colour, direction, frames, size, rng))
            (test if g <= TEST_GROUPS else train).append(f"{name}/{video}.avi")
    splits = out_dir / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(classes)))
    label = {n: i + 1 for i, n in enumerate(classes)}
    (splits / "trainlist01.txt").write_text("".join(f"{v} {label[v.split('/')[0]]}\n" for v in train))
    (splits / "testlist01.txt").write_text("".join(f"{v}\n" for v in test))
    return splits


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_path(p, "out_dir", role=OUTPUT, folder=True, type=Path, help="where videos/ and splits/ go")
    p.add_argument("--seed", type=bound("seed"), default=0, help="seed of the generated videos")
    p.add_argument("--frames", type=bound("video_frames"), default=30, help="frames of each video")
    p.add_argument("--size", type=bound("size"), nargs=2, default=[48, 64], metavar=("H", "W"),
                   help="frame size of the videos")
    p.add_argument("--videos-per-class", type=bound("videos_per_class"), default=12,
                   help=f"the first {TEST_GROUPS} are test videos")
    return p


def main() -> None:
    args = get_args_parser().parse_args()
    if args.videos_per_class <= TEST_GROUPS:
        raise UserError(f"--videos-per-class must be more than {TEST_GROUPS} (the test groups)")
    size = frame_size(args.size, keep=False)
    splits = make_demo_data(args.out_dir, args.seed, args.frames, size, args.videos_per_class)
    print(f"{len(demo_classes()) * args.videos_per_class} videos in {args.out_dir / 'videos'}, split lists in {splits}")


if __name__ == "__main__":
    run_cli(main)
