"""Where a run's numbers go: ``--logger csv[,tensorboard][,wandb]`` (csv always), all behind
one interface the run calls once an epoch, once a test pass and once at the end. Only the
main process logs (under torchrun the others get no backends).

- csv: train.csv and test.csv (or val.csv) in the output folder, as the reference wrote them.
- tensorboard: event files in the output folder, so that ``tensorboard --logdir record`` names
  each run after its folder (``spatial``): per epoch (``train/``, ``test/`` or ``val/``, ``lr``,
  ``speed/``) loss, top-1/top-5, mean class accuracy, learning rate, samples/s and the share of
  training time spent waiting for data; per step with --print-freq (``train_step/``); the
  confusion matrix of each test pass; the hyper-parameters with the final metrics.
- wandb: the same to Weights & Biases (``pip install wandb``; its own environment variables,
  e.g. WANDB_PROJECT, WANDB_MODE=offline, apply).
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from scorefiles import confusion_figure
from utils import CsvLogger, optional_import



@dataclass
class EpochRecord:
    """One epoch's numbers, as every backend receives them."""

    epoch: int  # 1-based: epochs finished
    train: dict[str, float]  # loss, top1, top5
    selection: str  # test or val
    test: dict[str, float]  # loss, top1, top5, frame_top1
    lr: float
    seconds: float
    samples_per_second: float
    data_wait: float  # share of the training time spent waiting for the loader


class Logger:
    """A backend; each method does nothing unless the backend records that kind of thing."""

    draws_figures = False  # whether test_pass wants the confusion matrix drawn

    def epoch(self, record: EpochRecord) -> None:
        pass

    def step(self, step: int, values: dict[str, float]) -> None:
        """--print-freq's numbers of one training step (``step`` counts from the run's start)."""

    def test_pass(self, epoch: int, tag: str, confusion) -> None:
        """``confusion``: the test pass's confusion-matrix figure (matplotlib), None unless
        ``draws_figures``; the caller closes it."""

    def finish(self, hparams: dict, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class CsvBackend(Logger):
    """train.csv and the selection set's CSV (the columns the reference wrote; curves.png reads them)."""

    def __init__(self, output_dir: Path, selection: str, start_epoch: int):
        self.train, self.selection = CsvLogger(output_dir / "train.csv"), CsvLogger(output_dir / f"{selection}.csv")
        self.train.truncate_after(start_epoch)  # a resumed run never logs an epoch twice
        self.selection.truncate_after(start_epoch)

    def epoch(self, record: EpochRecord) -> None:
        self.train.log({"epoch": record.epoch, **{k: round(v, 5) for k, v in record.train.items()},
                        "lr": record.lr, "seconds": round(record.seconds, 1)})
        if record.test:  # an epoch with a test pass (--val-interval)
            self.selection.log({"epoch": record.epoch, "loss": round(record.test["loss"], 5),
                                **{k: round(record.test[k], 3) for k in ("top1", "top5", "frame_top1", "mean_class")}})


class TensorBoardBackend(Logger):
    def __init__(self, output_dir: Path, purge_from: int | None):
        """``purge_from``: a resumed run's first epoch; what was logged from there on is dropped."""
        optional_import("tensorboard", "--logger tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(output_dir), purge_step=purge_from)  # the run folder: the run's name

    def _write(self, log: Callable[[], None]) -> None:
        """One write of events; a failed one (a full disk) stops TensorBoard logging with a warning,
        never the training (the CSV logs and checkpoints go on)."""
        if self.writer is None:
            return
        try:
            log()
            self.writer.flush()
        except OSError as err:
            print(f"warning: TensorBoard logging stopped, its events cannot be written ({err.strerror or err}); "
                  f"the CSV logs and checkpoints go on", flush=True)
            self.writer = None

    def epoch(self, record: EpochRecord) -> None:
        def log() -> None:
            for name, value in record.train.items():
                self.writer.add_scalar(f"train/{name}", value, record.epoch)
            for name, value in record.test.items():
                self.writer.add_scalar(f"{record.selection}/{name}", value, record.epoch)
            self.writer.add_scalar("lr", record.lr, record.epoch)
            self.writer.add_scalar("speed/samples_per_s", record.samples_per_second, record.epoch)
            self.writer.add_scalar("speed/data_wait_share", record.data_wait, record.epoch)
            self.writer.add_scalar("speed/epoch_seconds", record.seconds, record.epoch)
        self._write(log)

    def step(self, step: int, values: dict[str, float]) -> None:
        def log() -> None:
            for name in ("loss", "lr", "samples_per_s"):
                self.writer.add_scalar(f"train_step/{name}", values[name], step)
        self._write(log)

    draws_figures = True

    def test_pass(self, epoch: int, tag: str, confusion) -> None:
        self._write(lambda: self.writer.add_figure(f"{tag}/confusion_matrix", confusion, epoch, close=False))

    def finish(self, hparams: dict, metrics: dict[str, float]) -> None:
        self._write(lambda: self.writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in metrics.items()},
                                                    run_name="."))

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(OSError):
                self.writer.close()


class WandbBackend(Logger):
    def __init__(self, output_dir: Path, name: str, hparams: dict):
        wandb = optional_import("wandb", "--logger wandb")
        self.wandb = wandb
        self.run = wandb.init(name=name, dir=str(output_dir), config=hparams, resume="allow")

    def epoch(self, record: EpochRecord) -> None:
        values = {"lr": record.lr, "speed/samples_per_s": record.samples_per_second,
                  "speed/data_wait_share": record.data_wait, "speed/epoch_seconds": record.seconds}
        values.update({f"train/{k}": v for k, v in record.train.items()})
        values.update({f"{record.selection}/{k}": v for k, v in record.test.items()})
        self.run.log(values, step=record.epoch)

    draws_figures = True

    def test_pass(self, epoch: int, tag: str, confusion) -> None:
        self.run.log({f"{tag}/confusion_matrix": self.wandb.Image(confusion)}, step=epoch)

    def finish(self, hparams: dict, metrics: dict[str, float]) -> None:
        self.run.summary.update(metrics)

    def close(self) -> None:
        self.run.finish()


class Loggers(Logger):
    """The run's backends, called together."""

    def __init__(self, backends: list[Logger]):
        self.backends = backends

    def epoch(self, record: EpochRecord) -> None:
        for backend in self.backends:
            backend.epoch(record)

    def step(self, step: int, values: dict[str, float]) -> None:
        for backend in self.backends:
            backend.step(step, values)

    def test_pass(self, epoch: int, tag: str, scores: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
        """A test pass's video scores: its confusion matrix, drawn once for every backend that
        wants it (drawing is skipped when none does)."""
        figure = None
        if any(backend.draws_figures for backend in self.backends):
            figure = confusion_figure(labels, scores.argmax(axis=1), classes, f"{tag} confusion matrix (epoch {epoch})")
        try:
            for backend in self.backends:
                backend.test_pass(epoch, tag, figure if backend.draws_figures else None)
        finally:
            if figure is not None:
                import matplotlib.pyplot as plt
                plt.close(figure)

    def finish(self, hparams: dict, metrics: dict[str, float]) -> None:
        for backend in self.backends:
            backend.finish(hparams, metrics)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


def hyperparameters(args: argparse.Namespace) -> dict[str, object]:
    """The run's settings as TensorBoard's hparams take them: numbers, strings and booleans."""
    out = {}
    for name, value in sorted(vars(args).items()):
        if name in ("explicit", "auto_resumed"):
            continue
        out[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


def open_loggers(args: argparse.Namespace, output_dir: Path, stream: str, selection: str, start_epoch: int,
                 is_main: bool, training: bool = True) -> Loggers:
    """The backends of ``args.logger`` for this process (none but the main one logs); without
    ``training`` (--evaluate) only the test pass is logged, and the CSV logs are left alone."""
    if not is_main:
        return Loggers([])
    names = getattr(args, "logger", ["csv"])
    backends: list[Logger] = [CsvBackend(output_dir, selection, start_epoch)] if training else []
    if "tensorboard" in names:
        backends.append(TensorBoardBackend(output_dir, start_epoch + 1 if training and start_epoch else None))
    if "wandb" in names:
        backends.append(WandbBackend(output_dir, f"{stream}-{output_dir.name}", hyperparameters(args)))
    return Loggers(backends)
