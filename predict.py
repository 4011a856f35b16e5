"""Recognise the actions in video files with trained two-stream checkpoints: the command line
over inference/predictor.py (the options, the streams, one video's record), adding folders of
videos and the files it writes (JSON, CSV, plots, annotated videos). ``--help`` tells it all."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from dataloader.video import VIDEO_EXTENSIONS, find_videos
from guards import check_io
from inference.outputs import annotate_video, plot_timeline, print_segments, write_csv
from inference.predictor import (MAX_WINDOW_INPUTS, Predictor, StreamModel, check_args, get_args_parser,  # noqa: F401
                                 load_streams, predict_video)  # (re-exported: predict.Predictor, ...)
from inference.scorer import FlowFunction, load_stream  # noqa: F401 (predict.FlowFunction, .load_stream)
from inference.windows import plan_windows, segments  # noqa: F401
from utils import UserError, atomic_write, check_writable_dir, check_writable_file, run_cli

ANNOTATE_SUFFIXES = (".mp4", ".avi", ".webm")  # .webm (VP8, through PyAV) plays in a browser


def check_outputs(args: argparse.Namespace, videos: list[Path]) -> None:
    """Refuse, before any work, an output that is one of the inputs (a video, a checkpoint, the
    class list) or another output, also the per-video files of a folder output (guards.check_io)."""
    several = len(videos) > 1
    outputs = {}
    for flag, suffix in (("plot", "_timeline.png"), ("annotate", "_annotated.mp4")):
        option = getattr(args, flag)
        if not option:
            continue
        if not several and Path(option).is_dir():
            raise UserError(f"--{flag} {option} is a folder\n  fix: pass a file name (a folder is for several videos)")
        if several:
            outputs.update({f"--{flag} for {v.name}: {output_path(option, v, True, suffix, create=False)}":
                            output_path(option, v, True, suffix, create=False) for v in videos})
    check_io(get_args_parser(), args, inputs={f"the video {v}": v for v in videos}, outputs=outputs)
    for flag in ("plot", "annotate"):  # a folder that cannot take them fails now, not after the videos
        option = getattr(args, flag)
        if option and several:
            try:
                Path(option).mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"cannot create --{flag} {option}: {err.strerror or err}\n  fix: pass a folder you "
                                f"can write") from None
            check_writable_dir(option, f"--{flag}")
        elif option:
            check_writable_file(option, f"--{flag}")
    if args.annotate and Path(args.annotate).suffix.lower() not in ("", *ANNOTATE_SUFFIXES):
        raise UserError(f"--annotate {args.annotate}: write an .mp4, .avi or .webm file (or a folder for several "
                        f"videos)")
    if args.annotate:
        check_encoder(Path(args.annotate).suffix.lower() or ".mp4")


def check_encoder(suffix: str) -> None:
    """--annotate: OpenCV (or for .webm PyAV) can encode ``suffix`` here (tried on a scratch file
    before any work)."""
    import tempfile

    import cv2

    if suffix == ".webm":
        import av

        try:
            av.codec.Codec("libvpx", "w")
        except (av.error.FFmpegError, ValueError):
            raise UserError("this PyAV has no VP8 encoder (--annotate .webm)\n  fix: use --annotate with .mp4 "
                            "or .avi") from None
        return

    with tempfile.TemporaryDirectory() as scratch:
        writer = cv2.VideoWriter(str(Path(scratch) / f"probe{suffix}"),
                                 cv2.VideoWriter_fourcc(*("MJPG" if suffix == ".avi" else "mp4v")), 25.0, (32, 32))
        opened = writer.isOpened()
        writer.release()
    if not opened:
        raise UserError(f"OpenCV on this machine has no encoder for {suffix} (--annotate)\n"
                        f"  fix: use --annotate with {'.mp4' if suffix == '.avi' else '.avi'}")


def output_path(option: str, video: Path, several: bool, suffix: str, create: bool = True) -> Path:
    """--plot/--annotate: the file itself for one video, a file in that folder for several."""
    path = Path(option)
    if not several:
        return path
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path / f"{video.stem}{suffix}"


def main(args: argparse.Namespace) -> int:
    check_args(args)
    if args.live:
        return main_live(args)
    videos: list[Path] = []
    for item in args.videos:
        path = Path(item)
        videos += find_videos(path) if path.is_dir() else [path]
    if not videos:
        raise UserError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in {' '.join(args.videos)}")
    check_outputs(args, videos)
    device = torch.device(args.device)
    streams, weights = load_streams(args, device)
    method = args.flow_method or ("tvl1-torch" if device.type == "cuda" else "tvl1")
    flow_of = FlowFunction(method, device, args.workers) if args.motion else None
    try:
        records, failed = run_videos(videos, streams, weights, flow_of, args, device)
    finally:
        if flow_of is not None:
            flow_of.close()
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(records, f, indent=1)
    if args.csv:
        write_csv(args.csv, [r for r in records if "windows" in r], [s.name for s in streams])
    if failed:
        print(f"\n{len(failed)} of {len(videos)} videos failed: {', '.join(str(p) for p in failed)}", file=sys.stderr)
        return 1
    return 0


def main_live(args: argparse.Namespace) -> int:
    """--live SOURCE: inference.live's loop, after the same output checks as for files."""
    from inference.live import run_live, source_kind

    is_file = source_kind(args.live) == "file"
    check_io(get_args_parser(), args, inputs={f"--live {args.live}": Path(args.live)} if is_file else None)
    if args.annotate:
        suffix = Path(args.annotate).suffix.lower()
        if suffix not in ANNOTATE_SUFFIXES:
            raise UserError(f"--annotate {args.annotate}: write an .mp4, .avi or .webm file")
        check_writable_file(args.annotate, "--annotate")
        check_encoder(suffix)
    device = torch.device(args.device)
    streams, weights = load_streams(args, device)
    method = args.flow_method or ("tvl1-torch" if device.type == "cuda" else "tvl1")
    flow_of = FlowFunction(method, device, args.workers) if args.motion else None
    try:
        return run_live(args, streams, weights, flow_of, device)
    finally:
        if flow_of is not None:
            flow_of.close()


def run_videos(videos: list[Path], streams: list[StreamModel], weights: list[float], flow_of, args,
               device: torch.device) -> tuple[list[dict], list[Path]]:
    """Each video's record (or its error), printed as it comes; the failed videos."""
    records, failed = [], []
    names = [s.name for s in streams]
    for path in tqdm(videos, desc="videos", unit="video", disable=None if len(videos) > 1 else True):
        try:
            record = predict_video(path, streams, weights, flow_of, args, device)
        except UserError as err:
            failed.append(path)
            records.append({"video": str(path), "error": str(err)})
            print(f"{path}: error: {err}", file=sys.stderr)
            continue
        records.append(record)
        print(f"\n{path} ({record['frames']} frames, {record['duration']:.1f} s of video, {record['seconds']:.1f} s)")
        print(f"  {'class':30} {'fused':>7} " + " ".join(f"{n:>8}" for n in names))
        for entry in record["topk"]:
            cells = " ".join(f"{entry['streams'][n]:8.3f}" for n in names)
            print(f"  {entry['class']:30} {entry['probability']:7.3f} {cells}")
        if "windows" in record:
            print_segments(segments(record["windows"], args.min_score))
        several = len(videos) > 1
        try:  # a drawing that fails keeps the record: the JSON is written all the same
            if args.plot:
                plot_timeline(output_path(args.plot, path, several, "_timeline.png"), record)
            if args.annotate:
                annotate_video(path, output_path(args.annotate, path, several, "_annotated.mp4"), record, None)
        except (UserError, OSError) as err:
            failed.append(path)
            record["error"] = f"--plot/--annotate: {err}"
            print(f"{path}: error: {record['error']}", file=sys.stderr)
    return records, failed


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()))
