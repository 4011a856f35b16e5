"""Disk benchmark: what a folder of videos takes as videos, as frame folders and as flow folders.

Extracts the frames (tools/extract_frames.py) and computes the flow from the videos
(tools/compute_flow.py --from-videos) into a scratch folder, then prints bytes and file counts
of each and their ratios to the videos. Point it at your own footage, or let it generate a
clip (--generate: H.264, as phones and cameras write it).

    python benchmarks/bench_disk.py VIDEO_DIR [--size 256 340] [--flow-method farneback] [--workers N]
    python benchmarks/bench_disk.py --generate [--seconds 30]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.benchdata import disk_usage  # noqa: E402
from guards import INPUT, VIDEO_FILES, add_path, bound, check_io  # noqa: E402
from utils import HelpFormatter, UserError, default_workers, run_cli  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_path(p, "video_dir", role=INPUT, folder=True, reads=VIDEO_FILES, nargs="?", type=Path,
             help="folder of videos (searched recursively)")
    p.add_argument("--generate", action="store_true", help="measure a generated H.264 clip instead of VIDEO_DIR")
    p.add_argument("--seconds", type=bound("seconds"), default=30.0, help="--generate: the clip's length")
    p.add_argument("--size", type=bound("size"), nargs=2, default=[256, 340], metavar=("H", "W"),
                   help="frame size of the frames and the flow (extract_frames.py's default)")
    p.add_argument("--flow-method", default="farneback", help="compute_flow.py --method (the size does not depend "
                                                              "on it much; farneback is fast)")
    p.add_argument("--workers", type=bound("processes"), default=default_workers() + 1, help="processes")
    return p


def generated_clip(folder: Path, seconds: float) -> Path:
    """A 640x360, 30 fps H.264 clip with B-frames at libx264's default quality (crf 23): a
    textured background panning, a moving shape, sensor-like noise."""
    from tests.videos import write_video
    import numpy as np

    frames, rng = int(seconds * 30), np.random.default_rng(0)
    base = np.kron(rng.integers(40, 200, (46, 81, 3)), np.ones((8, 8, 1)))[:360, :640 + 40]
    images = []
    for t in range(frames):
        image = base[:, t % 40:t % 40 + 640].copy()
        y, x = int(180 + 120 * np.sin(t / 20)), int(320 + 250 * np.cos(t / 31))
        image[max(0, y - 30):y + 30, max(0, x - 30):x + 30] = (230, 60, 40)
        images.append(np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8))
    (folder / "Clip").mkdir(parents=True, exist_ok=True)
    return write_video(folder / "Clip" / "clip.mp4", images, "libx264", rate=30, bframes=3, gop=60, crf=23)


def main(args: argparse.Namespace) -> None:
    check_io(get_args_parser(), args)
    from tools import compute_flow, extract_frames

    scratch = Path(tempfile.mkdtemp(prefix="bench_disk_"))
    if args.generate:
        video_dir = scratch / "videos"
        generated_clip(video_dir, args.seconds)
    elif args.video_dir is None:
        raise UserError("give VIDEO_DIR, or --generate for a generated H.264 clip")
    else:
        video_dir = args.video_dir
    size, workers = [str(v) for v in args.size], ["--workers", str(args.workers)]
    extract_frames.main(extract_frames.get_args_parser().parse_args(
        [str(video_dir), str(scratch / "frames"), "--size", *size, *workers]))
    compute_flow.main(compute_flow.get_args_parser().parse_args(
        ["--from-videos", str(video_dir), str(scratch / "flow"), "--size", *size, "--method", args.flow_method,
         *workers]))
    rows = {"videos": disk_usage(video_dir), "frames": disk_usage(scratch / "frames"),
            "flow (x and y)": disk_usage(scratch / "flow")}
    base = rows["videos"][0]
    print(f"\n{video_dir} ({'x'.join(size)} frames, JPEG quality 90, flow: {args.flow_method})")
    print(f"{'what':16} {'MiB':>10} {'files':>8} {'x videos':>9}")
    for name, (size_bytes, files) in rows.items():
        print(f"{name:16} {size_bytes / 2**20:10.2f} {files:8d} {size_bytes / base:9.1f}")
    print(f"(scratch data left in {scratch})")


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()))
