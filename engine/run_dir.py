"""A run's output folder: checked and locked before any data is read, the score file and its
protocol, the curves drawn from the CSV logs."""
from __future__ import annotations

import shutil
from pathlib import Path

from dataloader import IndexedVideo
from scorefiles import check_finite_scores, save_score_info, save_scores
from utils import CsvLogger, UserError, atomic_write, check_writable_dir, hold_lock, remove_stale_temporaries

from .stream import Stream


RUN_FILES = ("checkpoint.pth.tar", "model_best.pth.tar", "train.csv", "test.csv", "val.csv")
TENSORBOARD_EVENTS = "events.out.tfevents.*"  # --logger tensorboard's files, in the run folder: the run's name
LEGACY_TENSORBOARD_DIR = "tensorboard"  # where runs before that kept them


class OutputFolder:
    """The run's output folder, checked before any data is read: writable, not holding
    another run (unless resumed or overwritten), and locked against a second concurrent run.
    Stale temporary files of killed writes are removed."""

    def __init__(self, path: Path, score_file: str, resume: bool, overwrite: bool):
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the output folder {path}: {err.strerror}\n  fix: pass a writable "
                            f"--output-dir") from None
        check_writable_dir(path, "--output-dir")
        self._lock = hold_lock(path, ".lock", "run", "--output-dir")
        remove_stale_temporaries(path)
        held = [name for name in (*RUN_FILES, LEGACY_TENSORBOARD_DIR, score_file) if (path / name).exists()]
        held += sorted(p.name for p in path.glob(TENSORBOARD_EVENTS))[:1]
        if held and not resume and not overwrite:
            self.close()
            raise UserError(f"{path} holds a previous run ({', '.join(held)})\n  fix: continue it with --resume "
                            f"{path / 'checkpoint.pth.tar'}, write to another --output-dir, or replace it with "
                            f"--overwrite")
        if overwrite and not resume:  # fresh logs; checkpoints are replaced as they are written
            for name in RUN_FILES:
                if name.endswith(".csv"):
                    (path / name).unlink(missing_ok=True)
            shutil.rmtree(path / LEGACY_TENSORBOARD_DIR, ignore_errors=True)
            for events in path.glob(TENSORBOARD_EVENTS):
                events.unlink()

    def close(self) -> None:
        if not self._lock.closed:
            self._lock.close()  # releases the flock


def write_scores(args, output_dir: Path, stream: Stream, videos: list[IndexedVideo], result: dict) -> Path:
    """The score file, and beside it its protocol (which average_fusion.py reads for its weights)."""
    path = output_dir / stream.score_file
    scores = {v.record.key: result["scores"][i].numpy() for i, v in enumerate(videos)}
    check_finite_scores(scores, f"{stream.name} evaluation")
    try:
        save_scores(path, scores)
        save_score_info(path, {"stream": stream.name, "recipe": args.recipe, "arch": args.arch,
                               "test_frames": args.test_frames, "test_crops": args.test_crops,
                               "test_positions": args.test_positions, "test_scale": args.test_scale,
                               "test_view": args.test_view, "split": args.split})
    except OSError as err:
        raise UserError(f"could not write the score file {path} ({err.strerror or err})\n"
                        f"  fix: free disk space, then run --evaluate --resume with the best checkpoint") from None
    return path


RUN_RECORD = "config.json"  # a training run's record; --evaluate writes EVALUATE_RECORD beside it
EVALUATE_RECORD = "evaluate_config.json"
REPO = Path(__file__).resolve().parent.parent


def _git_state() -> dict:
    """The commit of this code and whether its tree had changes (None outside a git checkout)."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def write_run_record(output_dir: Path, args, device: str, evaluate: bool) -> Path:
    """config.json: every resolved setting (after the recipe and the checkpoint), the command
    line, the versions, the code's commit, host, device and start time; ``--config`` reads it."""
    import datetime
    import json
    import platform
    import socket
    import sys

    import numpy
    import torch
    import torchvision

    settings = {k: v for k, v in vars(args).items() if k not in ("explicit", "auto_resumed")}
    record = {"command": [sys.executable, *sys.argv], "settings": settings,
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "torchvision": torchvision.__version__, "numpy": numpy.__version__},
              "git": _git_state(), "host": socket.gethostname(), "device": device,
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    path = output_dir / (EVALUATE_RECORD if evaluate else RUN_RECORD)
    with atomic_write(path, "w") as f:
        json.dump(record, f, indent=1, default=str)
    return path


def plot_curves(output_dir: Path, stream: str, selection: str) -> None:
    """Redraw loss and top-1 curves of train and selection set from the CSV logs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, test = CsvLogger(output_dir / "train.csv").read(), CsvLogger(output_dir / f"{selection}.csv").read()
    fig, (ax_loss, ax_top1) = plt.subplots(1, 2, figsize=(10, 4))
    for rows, name in ((train, "train"), (test, selection)):
        if rows:
            epochs = [int(r["epoch"]) for r in rows]
            ax_loss.plot(epochs, [float(r["loss"]) for r in rows], marker="o", label=name)
            ax_top1.plot(epochs, [float(r["top1"]) for r in rows], marker="o", label=name)
    for ax, title in ((ax_loss, "loss"), (ax_top1, "top-1 (%)")):
        ax.set_xlabel("epoch")
        ax.set_title(f"{stream}: {title}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_write(output_dir / "curves.png") as f:
        fig.savefig(f, format="png", dpi=80)
    plt.close(fig)
