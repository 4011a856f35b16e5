"""From a folder of videos to a trained, evaluated and fused two-stream model, in one command.

    python pipeline.py VIDEO_DIR OUT_DIR [--split-dir DIR | --train-list F --test-list F]
                       [--split-format ucf101|hmdb51|mmaction] [--split 1] [--recipe reference|tsn]
                       [--size 256 340] [--flow-method tvl1] [--workers N] [--test-fraction 0.3]
                       [--group-pattern REGEX] [--restart] [any flag of spatial_cnn.py/motion_cnn.py]

Runs the project's own scripts one after the other: split lists (tools/make_splits.py, only
when no split is given: VIDEO_DIR is then read as VIDEO_DIR/<class>/<video>), frames
(tools/extract_frames.py), optical flow (tools/compute_flow.py), spatial and motion training
(spatial_cnn.py, motion_cnn.py), their evaluation with the best checkpoints, and fusion
(average_fusion.py). OUT_DIR receives splits/, frames/, flow/, spatial/, motion/, fusion.json
and confusion.png. A stage that finished is skipped on the next run; an interrupted one is
resumed (extraction and flow skip finished videos, training continues from its checkpoint).
Flags the pipeline does not know go to both training scripts (e.g. --epochs 30 --arch resnet18).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dataloader.splits import SPLIT_FORMATS
from utils import UserError, run_cli

ROOT = Path(__file__).resolve().parent
STAGES = ("splits", "frames", "flow", "spatial", "motion", "evaluate", "fusion")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video_dir", type=Path, help="folder of videos (VIDEO_DIR/<class>/<video> without a split)")
    p.add_argument("out_dir", type=Path, help="where every stage writes")
    split = p.add_argument_group("split (default: lists made by tools/make_splits.py in OUT_DIR/splits)")
    split.add_argument("--split-dir", help="UCF101 or HMDB51 split files")
    split.add_argument("--split-format", choices=SPLIT_FORMATS, default=None)
    split.add_argument("--train-list", help="mmaction2 training list (video lists: paths relative to VIDEO_DIR)")
    split.add_argument("--test-list", help="mmaction2 test list")
    split.add_argument("--class-names", help="mmaction2 class names file")
    split.add_argument("--split", type=int, default=1)
    split.add_argument("--test-fraction", type=float, default=0.3, help="make_splits: share of each class in test")
    split.add_argument("--group-pattern", help="make_splits: regular expression naming a video's group")
    prep = p.add_argument_group("preprocessing")
    prep.add_argument("--size", type=int, nargs=2, default=[256, 340], metavar=("H", "W"), help="frame size")
    prep.add_argument("--flow-method", default="tvl1", help="tools/compute_flow.py --method")
    prep.add_argument("--workers", type=int, default=None,
                      help="processes for extraction and flow, and the training scripts' loader workers")
    p.add_argument("--recipe", default="reference", choices=["reference", "tsn"], help="both streams' --recipe")
    p.add_argument("--restart", action="store_true", help="redo every stage (the frames and flow of finished "
                                                          "videos are kept)")
    return p


class Stage:
    """Runs one stage's command as a child process and remembers that it finished (a marker
    file), so that the next run skips it. SIGINT/SIGTERM go to the child, whose own handling
    (a checkpoint, finished videos) is what a later run resumes from."""

    def __init__(self, out_dir: Path, restart: bool):
        self.out_dir, self.restart = out_dir, restart
        self.number = 0

    def marker(self, name: str) -> Path:
        return self.out_dir / f".stage-{name}.done"

    def run(self, name: str, *commands: list[str], always: bool = False) -> None:
        """Run the stage's commands one after the other, unless it finished in an earlier run."""
        self.number += 1
        head = f"== [{self.number}/{len(STAGES)}] {name}"
        if self.marker(name).exists() and not self.restart and not always:
            print(f"{head}: done in an earlier run, skipped", flush=True)
            return
        print(head, flush=True)
        started = time.time()
        for command in commands:
            self._call(name, command)
        self.marker(name).touch()
        print(f"({time.time() - started:.0f}s)", flush=True)

    def skip(self, name: str, why: str) -> None:
        self.number += 1
        print(f"== [{self.number}/{len(STAGES)}] {name}: {why}", flush=True)

    @staticmethod
    def _call(name: str, command: list[str]) -> None:
        print(f"$ {' '.join(command)}", flush=True)
        child = subprocess.Popen([sys.executable, *command], cwd=ROOT)
        previous = {sig: signal.signal(sig, lambda signum, frame: child.send_signal(signum))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            status = child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if status != 0:
            if status < 0 or status in (130, 143):  # killed by a signal, or stopped on one
                print(f"pipeline: interrupted in '{name}'; run the same command again to resume", file=sys.stderr)
                sys.exit(128 - status if status < 0 else status)
            raise UserError(f"stage '{name}' failed with exit status {status} (its message is above)\n"
                            f"  fix: correct what it says, then run the same command again: finished stages "
                            f"are skipped")


def split_flags(args: argparse.Namespace, split_dir: Path | None) -> list[str]:
    """The flags that name the split, for the training scripts and fusion."""
    flags = ["--split", str(args.split)]
    if split_dir is not None:
        flags += ["--split-dir", str(split_dir)]
    for name in ("split_format", "train_list", "test_list", "class_names"):
        value = getattr(args, name)
        if value:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


def main(argv: list[str] | None = None) -> int:
    args, training_flags = get_args_parser().parse_known_args(argv)
    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.video_dir.is_dir():
        raise UserError(f"video folder not found: {args.video_dir}")
    stage = Stage(out, args.restart)
    workers = [] if args.workers is None else ["--workers", str(args.workers)]

    # split lists: given, or made from the class folders
    given = args.split_dir or args.train_list
    split_dir = Path(args.split_dir) if args.split_dir else (None if given else out / "splits")
    if given:
        stage.skip("splits", f"given ({args.split_dir or args.train_list})")
    else:
        extra = ["--group-pattern", args.group_pattern] if args.group_pattern else []
        stage.run("splits", ["tools/make_splits.py", str(args.video_dir), str(split_dir), "--test-fraction",
                             str(args.test_fraction), *extra])
    stage.run("frames", ["tools/extract_frames.py", str(args.video_dir), str(out / "frames"), "--size",
                         *map(str, args.size), *workers])
    stage.run("flow", ["tools/compute_flow.py", str(out / "frames"), str(out / "flow"), "--method",
                       args.flow_method, *workers])

    common = [*split_flags(args, split_dir), "--recipe", args.recipe, *workers, *training_flags]
    streams = {"spatial": ["spatial_cnn.py", "--data-root", str(out / "frames"), "--output-dir", str(out / "spatial")],
               "motion": ["motion_cnn.py", "--flow-root", str(out / "flow"), "--output-dir", str(out / "motion")]}
    restart = ["--overwrite"] if args.restart else ["--resume", "auto"]
    for name, command in streams.items():
        stage.run(name, [*command, *common, *restart])
    stage.run("evaluate", *[[*command, *common, "--evaluate", "--resume", str(out / name / "model_best.pth.tar")]
                            for name, command in streams.items()])
    stage.run("fusion", ["average_fusion.py", "--spatial", str(out / "spatial" / "spatial_video_preds.pickle"),
                         "--motion", str(out / "motion" / "motion_video_preds.pickle"), *split_flags(args, split_dir),
                         "--json", str(out / "fusion.json"), "--confusion", str(out / "confusion.png")], always=True)
    report = json.loads((out / "fusion.json").read_text())
    print(f"\nresults in {out}: fusion top-1 {report['fusion']['top1']:.2f}% on {report['videos']} test videos")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_cli(main)
