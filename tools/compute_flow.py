"""Compute optical flow between consecutive frames of every video, as x/y JPEGs.

    python tools/compute_flow.py FRAMES_DIR OUT_DIR [--method tvl1|farneback|tvl1-torch|raft]
                                 [--bound 20] [--workers N] [--quality 90] [--device cpu|cuda] [--batch N]
                                 [--shard K/N] [--check]
    python tools/compute_flow.py --from-videos VIDEO_DIR OUT_DIR [--size 256 340] [...]

FRAMES_DIR holds one folder of ``frame000001.jpg ...`` a video (tools/extract_frames.py's
output). OUT_DIR receives ``u/<video>/frame000001.jpg`` (x) and ``v/<video>/...`` (y): n
frames give n-1 flow frames, the layout the motion stream reads without conversion. With ``--from-videos`` the first
argument is a folder of videos, searched recursively as tools/extract_frames.py searches it:
their frames are decoded (OpenCV's FFmpeg, as extract_frames decodes them) and resized to
``--size`` in memory, and no RGB frame is written.

Each component is clipped to [-bound, bound] pixels and mapped linearly to 0..255
(value = (flow + bound) * 255 / (2 bound), rounded): 128 is no motion. Sign convention
(OpenCV's): flow at pixel (x, y) of frame t points to where it moved in frame t+1, so
x > 128 means motion to the right and y > 128 motion downwards.

Methods: ``tvl1``, OpenCV's DualTVL1 (opencv-contrib) with its default parameters, one video
per CPU process; ``farneback``, OpenCV's fast option; ``tvl1-torch``, the same TV-L1 on PyTorch
tensors (flow/tvl1.py), many frame pairs per launch on ``--device`` (the default method when
CUDA is present); ``raft``, torchvision's RAFT (weights from its cache or ``--raft-weights``).
All write the same format. Resumable, failures listed and exit status 1. Shards (--shard K/N,
torchrun's RANK/WORLD_SIZE with one GPU a process, Slurm job arrays) split the videos between
processes and machines writing into one folder; --check lists incomplete videos.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flow.storage import CPU_METHODS, METHODS, flow_function, quantize, quantize_tensor  # noqa: E402
from dataloader.video import VideoReader, find_videos  # noqa: E402
from tools.extract_frames import FRAME_NAME  # noqa: E402
from tools.jobs import (check_unique_names, file_stamp, finish_partial, read_stamp, report,  # noqa: E402
                        report_check, resolve_shard, run_claimed, run_jobs, shard, shard_note, start_partial)
from guards import (FRAME_FILES, INPUT, OUTPUT, VIDEO_FILES, add_path, bound, check_io, frame_size,  # noqa: E402
                    plain_name)
from utils import HelpFormatter, UserError, default_workers, run_cli  # noqa: E402

FRAME_RE = re.compile(r"frame(\d+)\.jpg$")

@dataclass(frozen=True)
class FlowJob:
    name: str
    frames_dir: str  # the video's frame folder, or its video file with --from-videos
    out_dir: str
    method: str
    bound: float
    quality: int
    video: bool = False  # frames_dir is a video file, decoded and resized to size
    size: tuple[int, int] | None = None

    def frames(self, rgb: bool = False):
        """The video's frames in order, grey (or RGB) uint8 arrays, one at a time."""
        import cv2

        if self.video:
            reader = VideoReader(Path(self.frames_dir), self.size)
            for _, _, frame in reader.frames():
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB if rgb else cv2.COLOR_BGR2GRAY)
            return
        for path in frame_files(Path(self.frames_dir)):
            yield (_read_rgb if rgb else _read_grey)(path)

def frame_files(folder: Path) -> list[Path]:
    """The frames of a video folder in order; their numbers must run 1..n."""
    numbered = sorted((int(m.group(1)), folder / name) for name in os.listdir(folder)
                      if (m := FRAME_RE.match(name)))
    if [n for n, _ in numbered] != list(range(1, len(numbered) + 1)):
        raise UserError(f"{folder}: frame numbers do not run 1..{len(numbered)}")
    return [p for _, p in numbered]

def flow_stamp(job: FlowJob) -> dict:
    """What a video's flow is made from: its frames (their extraction stamp, or for frames made
    elsewhere the folder's modification time) and the flags."""
    frames = Path(job.frames_dir)
    if job.video:
        known = (read_stamp(Path(job.out_dir), job.name) or {}).get("frames", {}).get("video")
        made_from = {"video": file_stamp(job.frames_dir, known if isinstance(known, dict) else None),
                     "size": list(job.size) if job.size else None}
    else:
        made_from = read_stamp(frames.parent, job.name) or {"folder_mtime_ns": frames.stat().st_mtime_ns}
    return {"frames": made_from, "method": job.method, "bound": job.bound, "quality": job.quality}


def claimed(work):
    """Run ``work(job, ...)`` as the one writer of the job's flow, unless it is finished and made
    from the frames and flags it would be made from now; stamp what it wrote."""
    @functools.wraps(work)
    def run(job: FlowJob, *args, **kwargs) -> str | None:
        finals = [Path(job.out_dir) / part / job.name for part in ("u", "v")]

        def redo() -> str | None:
            for final in finals:  # stopped between the two renames, or stale
                if final.is_dir():
                    shutil.rmtree(final)
            return work(job, *args, **kwargs)
        return run_claimed(job.out_dir, job.name, flow_stamp(job), lambda: all(f.is_dir() for f in finals), redo)
    return run


@claimed
def compute(job: FlowJob) -> str | None:
    import cv2

    out = Path(job.out_dir)
    final_x, final_y = out / "u" / job.name, out / "v" / job.name
    flow_of = flow_function(job.method)
    tmp_x, tmp_y = start_partial(final_x), start_partial(final_y)
    params = [cv2.IMWRITE_JPEG_QUALITY, job.quality]
    frames = job.frames()
    prev, i = next(frames, None), 0
    for i, nxt in enumerate(frames, start=1):
        if nxt.shape != prev.shape:
            return (f"frame {i + 1} is {nxt.shape[1]}x{nxt.shape[0]}, "
                    f"the video's frames are {prev.shape[1]}x{prev.shape[0]}")
        flow = flow_of(prev, nxt)
        name = FRAME_NAME.format(idx=i)
        if not (cv2.imwrite(str(tmp_x / name), quantize(flow[..., 0], job.bound), params)
                and cv2.imwrite(str(tmp_y / name), quantize(flow[..., 1], job.bound), params)):
            return f"cannot write {tmp_x / name} (disk full or not writable); the video stays unfinished"
        prev = nxt
    if i == 0:
        shutil.rmtree(tmp_x)
        shutil.rmtree(tmp_y)
        return f"needs at least 2 frames, found {0 if prev is None else 1}"
    finish_partial(tmp_y, final_y)
    finish_partial(tmp_x, final_x)  # last: x present means the video is complete
    return None

@claimed
def compute_on_device(job: FlowJob, estimator, device, batch: int, rgb: bool) -> str | None:
    """One video with a tensor method: its consecutive pairs in batches of ``batch``."""
    import cv2
    import torch
    from concurrent.futures import ThreadPoolExecutor

    out = Path(job.out_dir)
    final_x, final_y = out / "u" / job.name, out / "v" / job.name
    with ThreadPoolExecutor(4) as io:
        images = (list(job.frames(rgb)) if job.video
                  else list(io.map(_read_rgb if rgb else _read_grey, frame_files(Path(job.frames_dir)))))
        if len(images) < 2:
            return f"needs at least 2 frames, found {len(images)}"
        if len({im.shape for im in images}) != 1:
            return "frames of different sizes"
        stack = torch.from_numpy(np.stack(images)).to(device)
        tmp_x, tmp_y = start_partial(final_x), start_partial(final_y)
        params = [cv2.IMWRITE_JPEG_QUALITY, job.quality]
        writes = []
        for start in range(0, len(images) - 1, batch):
            end = min(start + batch, len(images) - 1)
            flow = quantize_tensor(estimator(stack[start:end], stack[start + 1:end + 1]), job.bound).cpu().numpy()
            for k in range(end - start):
                name = FRAME_NAME.format(idx=start + k + 1)
                writes.append(io.submit(cv2.imwrite, str(tmp_x / name), flow[k, 0], params))
                writes.append(io.submit(cv2.imwrite, str(tmp_y / name), flow[k, 1], params))
        if not all(w.result() for w in writes):
            return f"cannot write flow frames to {out} (disk full or not writable); the video stays unfinished"
    finish_partial(tmp_y, final_y)
    finish_partial(tmp_x, final_x)
    return None

def make_estimator(method: str, device: str, raft_weights: str | None = None, compile: bool | None = None):
    """The batched estimator of a tensor method: (first, second) -> flow [B, 2, H, W]."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    if method == "tvl1-torch":
        from flow import TVL1
        return TVL1(compile=device.startswith("cuda") if compile is None else compile)
    from flow.raft import RAFT, load_raft
    return RAFT(load_raft(raft_weights, torch.device(device)))

def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"cannot decode {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

def _read_grey(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise UserError(f"cannot decode {path}")
    return image

def find_frame_folders(frames_dir: Path) -> dict[Path, int]:
    """{folder: number of frame files} of every frame folder, in name order (one listing each)."""
    if not frames_dir.is_dir():
        raise UserError(f"frames folder not found: {frames_dir}")
    counts = {p: sum(1 for n in os.listdir(p) if FRAME_RE.match(n)) for p in sorted(frames_dir.iterdir())
              if p.is_dir() and not p.name.startswith(".")}
    return {p: n for p, n in counts.items() if n}

def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_path(p, "frames_dir", role=INPUT, folder=True, reads=FRAME_FILES + VIDEO_FILES, type=Path,
             help="frame folders of tools/extract_frames.py (with --from-videos: a folder of videos)")
    add_path(p, "out_dir", role=OUTPUT, folder=True, type=Path, help="receives u/ and v/ (x and y flow)")
    cuda = _cuda_available()
    p.add_argument("--method", default="tvl1-torch" if cuda else "tvl1", choices=METHODS,
                   help="default: tvl1-torch when CUDA is present, else tvl1")
    p.add_argument("--bound", type=bound("bound"), default=20.0, help="flow is clipped to [-bound, bound] pixels")
    p.add_argument("--quality", type=bound("quality"), default=90, help="JPEG quality")
    p.add_argument("--workers", type=bound("processes"), default=default_workers() + 1, help="processes (CPU methods)")
    p.add_argument("--device", default="cuda" if cuda else "cpu", help="device of tvl1-torch and raft")
    p.add_argument("--batch", type=bound("flow_batch"), default=32, help="frame pairs per launch (tvl1-torch, raft)")
    add_path(p, "--raft-weights", role=INPUT, help="a local raft_large state dict (default: torchvision's cache)")
    p.add_argument("--shard", metavar="K/N",
                   help="do only videos i with i mod N == K of the sorted list (default: torchrun's RANK/WORLD_SIZE, "
                        "with LOCAL_RANK's GPU, or a Slurm array's task id and count when set, else all)")
    p.add_argument("--check", action="store_true",
                   help="do nothing; list the videos whose flow is missing or incomplete (exit status 1 if any)")
    p.add_argument("--from-videos", action="store_true",
                   help="FRAMES_DIR is a folder of videos (searched recursively): decode them, no RGB frame written")
    p.add_argument("--size", type=bound("size"), nargs=2, default=[256, 340], metavar=("H", "W"),
                   help="--from-videos: frames resized to this before the flow, as tools/extract_frames.py --size "
                        "resizes them; 0 0 keeps the video's size")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="tvl1-torch: fuse with torch.compile (default on CUDA; on the CPU about 3x faster "
                        "after a compilation of about a minute)")
    return p

def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()

def main(args: argparse.Namespace) -> int:
    check_io(get_args_parser(), args)
    if args.method in CPU_METHODS:
        flow_function(args.method)  # fail early on a missing opencv-contrib
    jobs = video_jobs(args) if args.from_videos else frame_jobs(args)
    if args.check:
        return report_check([(j.name, why) for j in jobs if (why := incomplete_flow(j)) is not None], len(jobs),
                            "flow")
    k, n = resolve_shard(args.shard)
    total, jobs = len(jobs), shard(jobs, k, n)
    if args.device == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU a process
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"
    if args.method in CPU_METHODS:
        failures = run_jobs(jobs, compute, args.workers, f"flow ({args.method})")
    else:  # one process drives the device; pairs are batched inside each video
        estimator = make_estimator(args.method, args.device, args.raft_weights, args.compile)
        work = functools.partial(compute_on_device, estimator=estimator, device=args.device, batch=args.batch,
                                 rgb=args.method == "raft")
        failures = run_jobs(jobs, work, 1, f"flow ({args.method}, {args.device})")
    return report(failures, len(jobs), f"written to {args.out_dir}/u and {args.out_dir}/v"
                                       f"{shard_note(k, n, len(jobs), total)}")


def frame_jobs(args: argparse.Namespace) -> list[FlowJob]:
    """One job a frame folder with at least 2 frames."""
    folders = find_frame_folders(args.frames_dir)
    if not folders:
        raise UserError(f"no frame folders (frame000001.jpg ...) under {args.frames_dir}"
                        + ("\n  fix: it holds videos: pass --from-videos" if _has_videos(args.frames_dir) else ""))
    short = [f.name for f, frames in folders.items() if frames < 2]
    if short:  # no pair of frames: no flow, and nothing a rerun could change
        print(f"warning: {len(short)} videos have a single frame, too short for flow, and are skipped: "
              f"{', '.join(short[:5])}{' ...' if len(short) > 5 else ''}", file=sys.stderr)
    return [FlowJob(f.name, str(f), str(args.out_dir), args.method, args.bound, args.quality)
            for f, frames in folders.items() if frames >= 2]


def video_jobs(args: argparse.Namespace) -> list[FlowJob]:
    """--from-videos: one job a video file, named by its stem as extract_frames names its folder."""
    videos = find_videos(args.frames_dir)
    if not videos:
        raise UserError(f"no videos under {args.frames_dir}\n  fix: pass the folder of the videos, or drop "
                        f"--from-videos for a folder of frame folders")
    size = frame_size(args.size)
    jobs = [FlowJob(plain_name(v.stem, str(v)), str(v), str(args.out_dir), args.method, args.bound, args.quality,
                    video=True, size=size) for v in videos]
    check_unique_names(jobs, "flow")
    return jobs


def _has_videos(folder: Path) -> bool:
    try:
        return bool(find_videos(folder))
    except UserError:
        return False


def incomplete_flow(job: FlowJob) -> str | None:
    """Why a video's flow is not complete (None if it is): a missing x or y folder, or not
    exactly frames 1..n-1 for its n frames."""
    frames = (len(VideoReader(Path(job.frames_dir)).timestamps()) if job.video
              else len(frame_files(Path(job.frames_dir))))
    expected = list(range(1, frames))
    for part in ("u", "v"):
        folder = Path(job.out_dir) / part / job.name
        if not folder.is_dir():
            return f"no {part}/ folder"
        numbers = sorted(int(m.group(1)) for name in os.listdir(folder) if (m := FRAME_RE.match(name)))
        if numbers != expected:
            missing = sorted(set(expected) - set(numbers))
            return f"{part}/ holds {len(numbers)} of {len(expected)} flow frames" + (
                f" (e.g. frame {missing[0]} is missing)" if missing else "")
    return None

if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()))
