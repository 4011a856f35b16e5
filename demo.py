"""The whole pipeline on a small synthetic data set, on the CPU, in a few minutes.

    python demo.py [--output-dir demo_out] [--epochs 30] [--workers 2] [--recipe reference|tsn]

Runs the project's own commands one after the other, nothing special-cased: write the
synthetic videos (tools/make_demo_data.py), extract frames (tools/extract_frames.py),
compute TV-L1 flow (tools/compute_flow.py), train and evaluate the spatial and the motion
stream (spatial_cnn.py, motion_cnn.py; ResNet-18 at 48x48 from scratch), fuse them
(average_fusion.py) and print the table. Leaves OUTPUT_DIR/fusion.json. ``--recipe tsn`` trains
and tests both streams with the TSN recipe's crops, partial BN, segments and 10-crop testing
(the demo's own learning rate, schedule and epochs stay: these small models learn from scratch). The classes are
(colour, up/down) pairs, so each stream alone can only be right about half or a third of
the time, and only the fusion tells the class.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def run(step: str, command: list[str], env: dict) -> None:
    print(f"\n== {step}\n$ {' '.join(command)}", flush=True)
    started = time.time()
    result = subprocess.run([sys.executable, *command], cwd=ROOT, env=env)
    if result.returncode != 0:
        sys.exit(f"demo: '{step}' failed with exit status {result.returncode}")
    print(f"({time.time() - started:.0f}s)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", type=Path, default=Path("demo_out"))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--progress", action="store_true", help="show the progress bars of every step")
    p.add_argument("--recipe", default="reference", choices=["reference", "tsn"],
                   help="the streams' --recipe (evaluation takes it from the checkpoints)")
    args = p.parse_args()

    out = args.output_dir.resolve()
    data = out / "data"
    env = dict(os.environ)
    if not args.progress:
        env["TQDM_DISABLE"] = "1"
    workers = str(args.workers)
    train = ["--split-dir", str(data / "splits"), "--arch", "resnet18", "--pretrained", "none", "--input-size", "48",
             "--batch-size", "8", "--lr", "0.01", "--lr-scheduler", "cosine", "--epochs", str(args.epochs),
             "--workers", "1", "--device", "cpu", "--recipe", args.recipe]
    spatial = ["spatial_cnn.py", "--data-root", str(data / "frames"), "--output-dir", str(out / "spatial")]
    motion = ["motion_cnn.py", "--flow-root", str(data / "flow"), "--output-dir", str(out / "motion")]

    started = time.time()
    run("synthetic videos", ["tools/make_demo_data.py", str(data)], env)
    run("frames", ["tools/extract_frames.py", str(data / "videos"), str(data / "frames"), "--size", "48", "64",
                   "--workers", workers], env)
    run("TV-L1 optical flow", ["tools/compute_flow.py", str(data / "frames"), str(data / "flow"),
                               "--method", "tvl1", "--workers", workers], env)
    # --overwrite: a demo run again replaces its own earlier results
    run("train the spatial stream", [*spatial, *train, "--overwrite"], env)
    run("train the motion stream", [*motion, *train, "--overwrite"], env)
    run("evaluate the spatial stream", [*spatial, *train, "--evaluate", "--resume",
                                        str(out / "spatial" / "model_best.pth.tar")], env)
    run("evaluate the motion stream", [*motion, *train, "--evaluate", "--resume",
                                       str(out / "motion" / "model_best.pth.tar")], env)
    run("fuse", ["average_fusion.py", "--spatial", str(out / "spatial" / "spatial_video_preds.pickle"),
                 "--motion", str(out / "motion" / "motion_video_preds.pickle"), "--split-dir", str(data / "splits"),
                 "--json", str(out / "fusion.json"), "--confusion", str(out / "confusion.png")], env)

    report = json.loads((out / "fusion.json").read_text())
    print(f"\n{'stream':10} {'top-1':>7} {'top-5':>7}   ({report['videos']} test videos, chance 16.7%)")
    for name in ("spatial", "motion", "fusion"):
        print(f"{name:10} {report[name]['top1']:7.2f} {report[name]['top5']:7.2f}")
    print(f"\ndemo finished in {time.time() - started:.0f}s; results in {out}")


if __name__ == "__main__":
    main()
