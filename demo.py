"""The whole pipeline on a small synthetic data set, on the CPU, in a few minutes.

    python demo.py [--output-dir demo_out] [--epochs 30] [--workers 2] [--recipe reference|tsn]

Writes the synthetic videos (tools/make_demo_data.py), then runs ``pipeline.py`` on them,
the command a user runs on real videos, nothing special-cased: frames, TV-L1 flow, the
spatial and the motion stream (ResNet-18 at 48x48 from scratch), their evaluation and the
fusion; then prints a table of each stream's and the fusion's top-1 and top-5 (README.md shows
the one measured on this project's CPU machine). Leaves OUTPUT_DIR/fusion.json. The classes are (colour,
up/down) pairs, so each stream alone can only be right about half or a third of the time, and
only the fusion tells the class. ``--recipe tsn`` trains and tests both streams with the TSN
recipe's crops, partial BN, segments and 10-crop testing (the demo's own learning rate,
schedule and epochs stay: these small models learn from scratch).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from guards import OUTPUT, add_path, bound
from utils import HelpFormatter

ROOT = Path(__file__).resolve().parent


def run(step: str, command: list[str], env: dict) -> None:
    print(f"\n== {step}\n$ {' '.join(command)}", flush=True)
    started = time.time()
    result = subprocess.run([sys.executable, *command], cwd=ROOT, env=env)
    if result.returncode != 0:
        sys.exit(f"demo: '{step}' failed with exit status {result.returncode}")
    print(f"({time.time() - started:.0f}s)", flush=True)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_path(p, "--output-dir", role=OUTPUT, folder=True, type=Path, default=Path("demo_out"),
             help="the synthetic data and every stage's output")
    p.add_argument("--epochs", type=bound("epochs"), default=30, help="epochs of each stream")
    p.add_argument("--workers", type=bound("processes"), default=2, help="processes of each stage")
    p.add_argument("--progress", action="store_true", help="show the progress bars of every step")
    p.add_argument("--recipe", default="reference", choices=["reference", "tsn"], help="the streams' --recipe")
    p.add_argument("--device", default="cpu", help="where the streams train and test (README.md's table is the CPU's)")
    p.add_argument("--videos-per-class", type=bound("videos_per_class"), default=12,
                   help="synthetic videos a class (4 are test videos)")
    p.add_argument("--flow-method", default="tvl1", help="tools/compute_flow.py --method")
    return p


def main() -> None:
    args = get_args_parser().parse_args()

    out = args.output_dir.resolve()
    data = out / "data"
    env = dict(os.environ)
    if not args.progress:
        env["TQDM_DISABLE"] = "1"
    train = ["--arch", "resnet18", "--pretrained", "none", "--input-size", "48", "--batch-size", "8", "--lr", "0.01",
             "--lr-scheduler", "cosine", "--epochs", str(args.epochs), "--device", args.device]
    started = time.time()
    run("synthetic videos", ["tools/make_demo_data.py", str(data), "--videos-per-class", str(args.videos_per_class)],
        env)
    # --restart: a demo run again replaces its own earlier results
    run("pipeline", ["pipeline.py", str(data / "videos"), str(out), "--split-dir", str(data / "splits"),
                     "--size", "48", "64", "--flow-method", args.flow_method, "--workers", str(args.workers),
                     "--recipe", args.recipe, "--restart", *train], env)

    report = json.loads((out / "fusion.json").read_text())
    print(f"\n{'stream':10} {'top-1':>7} {'top-5':>7}   ({report['videos']} test videos, chance 16.7%)")
    for name in ("spatial", "motion", "fusion"):
        print(f"{name:10} {report[name]['top1']:7.2f} {report[name]['top5']:7.2f}")
    print(f"\ndemo finished in {time.time() - started:.0f}s; results in {out}")


if __name__ == "__main__":
    main()
