"""Extract RGB JPEG frames from videos, in the data layer's default layout.

    python tools/extract_frames.py VIDEO_DIR OUT_DIR [--every N] [--size 256 340] [--workers N]
                                   [--quality 90] [--list FILE [--split-format ucf101|hmdb51|mmaction]]
                                   [--shard K/N] [--check]

VIDEO_DIR is searched recursively for videos (UCF101: ``UCF-101/Class/v_Class_gXX_cYY.avi``),
or ``--list`` names them (a UCF101 split list, an HMDB51 split file or an mmaction2 video list).
Each video becomes ``OUT_DIR/<video name>/frame000001.jpg ...``. Decoding through OpenCV's
videoio (FFmpeg). Parallel over videos, resumable (finished videos are skipped, half-written
ones redone); videos that cannot be decoded are listed at the end and the exit status is 1.
Shards (--shard, torchrun, Slurm job arrays) split the videos between processes and machines
writing into one folder; --check lists the videos whose frames are missing or incomplete.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataloader.index import LAYOUTS  # noqa: E402
from dataloader.splits import SPLIT_FORMATS, listed_videos  # noqa: E402
from dataloader.video import VIDEO_EXTENSIONS, find_videos as find_all_videos, resize_frame  # noqa: E402

from tools.jobs import (check_unique_names, file_stamp, finish_partial, read_stamp, report, report_check,  # noqa: E402
                        resolve_shard, run_claimed, run_jobs, shard, shard_note, start_partial)
from guards import INPUT, OUTPUT, VIDEO_FILES, add_path, bound, check_io, frame_size, plain_name  # noqa: E402
from utils import HelpFormatter, UserError, default_workers, run_cli  # noqa: E402

FRAME_NAME = LAYOUTS["ucf101"].rgb.split("/", 1)[1]  # frame{idx:06d}.jpg
FRAME_RE = re.compile(r"frame(\d+)\.jpg$")

@dataclass(frozen=True)
class FrameJob:
    name: str
    video: str
    out_dir: str
    every: int
    size: tuple[int, int] | None  # (height, width)
    quality: int

def find_videos(video_dir: Path, list_file: str | None = None, split_format: str | None = None,
                allow_absolute: bool = False) -> list[Path]:
    """Videos under ``video_dir``: from a list file (paths relative to ``video_dir``, see
    dataloader.splits.listed_videos), or all files with a video extension, recursively."""
    if list_file:
        if not video_dir.is_dir():
            raise UserError(f"video folder not found: {video_dir}")
        return [video_dir / line for line in listed_videos(list_file, split_format, allow_absolute)]
    return find_all_videos(video_dir)

def frame_stamp(job: FrameJob) -> dict:
    """What a video's frames are made from: the video file as it is now, and the flags."""
    known = (read_stamp(Path(job.out_dir), job.name) or {}).get("video")
    return {"video": file_stamp(job.video, known if isinstance(known, dict) else None), "every": job.every,
            "size": list(job.size) if job.size else None, "quality": job.quality}


def extract(job: FrameJob) -> str | None:
    """Decode one video into a partial folder, then rename it into place; one process a video."""
    if not os.path.isfile(job.video):
        return "file not found"
    final = Path(job.out_dir) / job.name
    return run_claimed(job.out_dir, job.name, lambda: frame_stamp(job), final.is_dir, lambda: _decode(job, final))


def _decode(job: FrameJob, final: Path) -> str | None:
    import cv2

    capture = cv2.VideoCapture(job.video)
    if not capture.isOpened():
        return "cannot open (not a video, or a codec OpenCV's FFmpeg lacks)"
    tmp = start_partial(final)
    written, index = 0, 0
    params = [cv2.IMWRITE_JPEG_QUALITY, job.quality]
    if job.quality == 100:  # the near-lossless setting keeps full colour resolution too (4:4:4)
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % job.every == 0:
                frame = resize_frame(frame, job.size)
                written += 1
                if not cv2.imwrite(str(tmp / FRAME_NAME.format(idx=written)), frame, params):
                    return f"cannot write frames to {tmp}"
            index += 1
    finally:
        capture.release()
    if written == 0:
        shutil.rmtree(tmp)
        return "no frames could be decoded"
    if final.is_dir():  # made from an older video or other flags: replaced
        shutil.rmtree(final)
    finish_partial(tmp, final)
    return None

def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_path(p, "video_dir", role=INPUT, folder=True, reads=VIDEO_FILES, type=Path,
             help="folder of videos (searched recursively) or the root of --list")
    add_path(p, "out_dir", role=OUTPUT, folder=True, type=Path, help="receives one frame folder per video")
    p.add_argument("--every", type=bound("every"), default=1, help="keep every N-th frame")
    p.add_argument("--size", type=bound("size"), nargs=2, default=[256, 340], metavar=("H", "W"),
                   help="output frame size; 0 0 keeps the video's size")
    p.add_argument("--quality", type=bound("quality"), default=90,
                   help="JPEG quality; 100 also keeps full colour resolution (4:4:4 chroma), nearly the decoded frames")
    p.add_argument("--workers", type=bound("processes"), default=default_workers() + 1,
                   help="processes, one video each")
    add_path(p, "--list", role=INPUT,
             help="file listing the videos to extract, relative to VIDEO_DIR: a UCF101 list, an "
                                  "HMDB51 <class>_test_splitN.txt (its videos in VIDEO_DIR/<class>/) or an mmaction2 "
                                  "video list")
    p.add_argument("--shard", metavar="K/N",
                   help="do only videos i with i mod N == K of the sorted list (default: torchrun's RANK/WORLD_SIZE "
                        "or a Slurm array's task id and count when set, else all)")
    p.add_argument("--check", action="store_true",
                   help="do nothing; list the videos whose frames are missing or incomplete (exit status 1 if any)")
    p.add_argument("--allow-absolute-paths", action="store_true",
                   help="--list: let entries be absolute paths outside VIDEO_DIR ('..' is never allowed)")
    p.add_argument("--split-format", choices=SPLIT_FORMATS, default=None,
                   help="the --list's format (default: hmdb51 for *_test_splitN.txt names, else a path a line)")
    return p

def main(args: argparse.Namespace) -> int:
    check_io(get_args_parser(), args)
    videos = find_videos(args.video_dir, args.list, args.split_format, args.allow_absolute_paths)
    if not videos:
        raise UserError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found under {args.video_dir}")
    size = frame_size(args.size)
    try:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the frames folder {args.out_dir}: {err.strerror}\n  fix: pass a folder "
                        f"you can write") from None
    jobs = [FrameJob(plain_name(v.stem, str(v)), str(v), str(args.out_dir), args.every, size, args.quality)
            for v in videos]
    check_unique_names(jobs, "frame")
    if args.check:
        return report_check([(j.name, why) for j in jobs if (why := incomplete_frames(j)) is not None], len(jobs),
                            "frames")
    k, n = resolve_shard(args.shard)
    mine = shard(jobs, k, n)
    failures = run_jobs(mine, extract, args.workers, "frames")
    return report(failures, len(mine), f"extracted to {args.out_dir}{shard_note(k, n, len(mine), len(jobs))}")


def incomplete_frames(job: FrameJob) -> str | None:
    """Why a video's frame folder is not complete (None if it is): missing, or its frame
    numbers do not run 1..n."""
    folder = Path(job.out_dir) / job.name
    if not folder.is_dir():
        return "no frame folder"
    numbers = sorted(int(m.group(1)) for name in os.listdir(folder) if (m := FRAME_RE.match(name)))
    if not numbers or numbers != list(range(1, len(numbers) + 1)):
        return f"frame numbers do not run 1..{len(numbers)}" if numbers else "no frames"
    return None

if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()))
