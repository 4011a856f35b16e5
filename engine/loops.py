"""One training epoch and one test pass, with their meters and the graceful stop on
SIGINT/SIGTERM; under torchrun the processes agree on stopping and add up their sums."""
from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from dataloader import InputNormalizer
from utils import UserError

from .distributed import World


class GracefulStop:
    """SIGINT/SIGTERM set a flag that the training loop checks after each step, so that the
    current step finishes and a checkpoint is written. A second SIGINT stops at once."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def requested(self) -> bool:
        return self.signal is not None


@dataclass
class Meters:
    """Running sums of a training epoch (kept in checkpoints so a resumed epoch logs right)."""

    loss: float = 0.0
    correct1: float = 0.0
    correct5: float = 0.0
    count: int = 0

    def result(self) -> dict[str, float]:
        n = max(self.count, 1)
        return {"loss": self.loss / n, "top1": 100 * self.correct1 / n, "top5": 100 * self.correct5 / n}


@dataclass
class EpochTiming:
    """Where a training epoch's time went (this process): waiting for the loader, and in all."""

    data_seconds: float = 0.0
    seconds: float = 0.0
    samples: int = 0  # over all processes

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    @property
    def data_wait(self) -> float:
        """The share of the epoch spent waiting for batches (a starved GPU shows here)."""
        return self.data_seconds / self.seconds if self.seconds else 0.0


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    """Number of rows whose label is among the k highest scores, for each k."""
    maxk = min(max(ks), scores.shape[1])
    top = scores.topk(maxk, dim=1).indices
    hit = top == labels.view(-1, 1)
    return [hit[:, :min(k, maxk)].any(dim=1).sum() for k in ks]


@dataclass
class Context:
    """What the loops need besides model and data."""

    device: torch.device
    normalizer: InputNormalizer
    amp_dtype: torch.dtype | None
    world: World
    stop: GracefulStop = field(default_factory=GracefulStop)
    test_crops: nn.Module | None = None  # [B, C, H, W] frames -> [B * crops, C, h, w] (--test-crops)
    clip_grad_norm: float | None = None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)


def train_one_epoch(model: nn.Module, loader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, ctx: Context, epoch: int, meters: Meters,
                    nan_check_every: int = 10, timing: EpochTiming | None = None,
                    report: Callable[[int, int, dict], None] | None = None, report_every: int = 0) -> tuple[Meters, int]:
    """Train until the loader ends or a stop is requested; returns (meters, steps done), and
    adds the time spent to ``timing``. Every ``report_every`` steps ``report(step, steps in the
    epoch, {loss, lr, samples_per_s, eta_seconds})`` gets this process's recent numbers.

    Items are [B, S, C, H, W]: S samples of each video (--segments frames or stacks) whose logits
    are averaged before the loss (segment consensus)."""
    model.train()
    steps, new_samples = 0, 0
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    progress = tqdm(loader, desc=f"epoch {epoch + 1} train", disable=None if ctx.world.is_main else True,
                    leave=False, dynamic_ncols=True)
    started = waiting_since = time.perf_counter()
    data_seconds = 0.0
    for frames, labels in progress:
        data_seconds += time.perf_counter() - waiting_since
        batch, segments = frames.shape[:2]
        frames = ctx.normalizer(frames.to(ctx.device, non_blocking=True).flatten(0, 1))
        labels = labels.to(ctx.device, non_blocking=True)
        with ctx.autocast():
            logits = model(frames).view(batch, segments, -1).float().mean(dim=1)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if ctx.clip_grad_norm:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), ctx.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        c1, c5 = topk_correct(logits.detach(), labels)
        sums += torch.stack([loss.detach().double() * batch, c1.double(), c5.double()])
        new_samples += batch
        steps += 1
        if steps % nan_check_every == 0:
            _check_finite(sums[0], epoch, steps)
        if report is not None and report_every and steps % report_every == 0:
            seconds = time.perf_counter() - started
            rate = new_samples / seconds if seconds > 0 else 0.0
            remaining = (len(loader) - steps) * seconds / steps if hasattr(loader, "__len__") else 0.0
            report(steps, len(loader) if hasattr(loader, "__len__") else steps,
                   {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"], "samples_per_s": rate,
                    "eta_seconds": remaining})
        if _should_stop(ctx, steps, nan_check_every):
            _check_finite(sums[0], epoch, steps)
            break
        waiting_since = time.perf_counter()
    _check_finite(sums[0], epoch, steps)
    if ctx.world.distributed:  # only this call's samples: restored meters are already global
        totals = torch.cat([sums, torch.tensor([new_samples], dtype=torch.float64, device=ctx.device)])
        dist.all_reduce(totals)
        sums, new_samples = totals[:3], int(totals[3].item())
    if timing is not None:
        timing.data_seconds += data_seconds
        timing.seconds += time.perf_counter() - started
        timing.samples += new_samples
    meters.count += new_samples
    meters.loss += sums[0].item()
    meters.correct1 += sums[1].item()
    meters.correct5 += sums[2].item()
    return meters, steps


def _should_stop(ctx: Context, steps: int, every: int) -> bool:
    """Whether a SIGINT/SIGTERM asks to stop after this step. Under torchrun the processes
    agree on it every ``every`` steps (a process stopping alone would hang the others in
    their next gradient all-reduce)."""
    if not ctx.world.distributed:
        return ctx.stop.requested
    if steps % every:
        return False
    flag = torch.tensor([1.0 if ctx.stop.requested else 0.0], device=ctx.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() > 0 and not ctx.stop.requested:
        ctx.stop.signal = signal.SIGTERM  # another process was asked to stop
    return flag.item() > 0


def _check_finite(loss_sum: torch.Tensor, epoch: int, steps: int) -> None:
    if not math.isfinite(loss_sum.item()):
        raise UserError(f"the training loss became NaN/inf in epoch {epoch + 1} (by step {steps}); "
                        f"stopped without saving this epoch\n  fix: lower --lr, or turn off --amp; "
                        f"the last good checkpoint is checkpoint.pth.tar in the output folder")


@torch.no_grad()
def evaluate(model: nn.Module, loader, ctx: Context, num_videos: int, num_classes: int,
             labels: torch.Tensor, frames_per_video: int, desc: str = "test") -> dict | None:
    """Sum the logits of every test position of a video into its score; video-level metrics.
    With ``ctx.test_crops`` a position's logits are the mean over its crops.

    Each process sees its own share of the frames (exactly once over all processes); the
    partial sums are added up with all_reduce, so the result equals one process's.
    Returns {'scores': [V, K] float64 CPU tensor, 'top1', 'top5', 'loss', 'frame_top1'}, or None
    when SIGINT/SIGTERM asked to stop (a cluster's grace period is short: the pass is dropped)."""
    model.eval()
    scores = torch.zeros(num_videos, num_classes, dtype=torch.float64, device=ctx.device)
    counts = torch.zeros(num_videos, dtype=torch.float64, device=ctx.device)
    frame_correct = torch.zeros((), dtype=torch.float64, device=ctx.device)
    progress = tqdm(loader, desc=desc, disable=None if ctx.world.is_main else True, leave=False, dynamic_ncols=True)
    for frames, frame_labels, video_idx in progress:
        if ctx.stop.requested:  # ranks may hold different batch counts: agree once, after the loop
            break
        frames = frames.to(ctx.device, non_blocking=True)
        if ctx.test_crops is not None:
            frames = ctx.test_crops(frames)
        frames = ctx.normalizer(frames)
        video_idx = video_idx.to(ctx.device, non_blocking=True)
        with ctx.autocast():
            logits = model(frames).double()
        if ctx.test_crops is not None:
            logits = logits.view(len(video_idx), ctx.test_crops.count, -1).mean(dim=1)
        scores.index_add_(0, video_idx, logits)
        counts.index_add_(0, video_idx, torch.ones_like(video_idx, dtype=torch.float64))
        frame_correct += (logits.argmax(1) == frame_labels.to(ctx.device)).sum()
    if ctx.world.distributed:
        if _should_stop(ctx, 0, 1):  # one matched collective on every rank
            return None
        for t in (scores, counts, frame_correct):
            dist.all_reduce(t)
    elif ctx.stop.requested:
        return None
    wrong = (counts != frames_per_video).nonzero().flatten().tolist()
    if wrong:  # a loader or sharding bug would silently bias the scores: never report those
        raise RuntimeError(f"{len(wrong)} videos got {counts[wrong[0]].item():.0f} test frames instead "
                           f"of {frames_per_video} (video index {wrong[0]})")
    scores = scores.cpu()
    labels = labels.cpu()
    c1, c5 = topk_correct(scores, labels)
    loss = nn.functional.cross_entropy((scores / frames_per_video).float(), labels).item()
    return {"scores": scores, "top1": 100 * c1.item() / num_videos, "top5": 100 * c5.item() / num_videos,
            "loss": loss, "frame_top1": 100 * frame_correct.item() / (num_videos * frames_per_video),
            "mean_class": mean_class_accuracy(scores, labels)}


def mean_class_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The top-1 of each class that has videos, averaged over those classes (%): what UCF101's
    and HMDB51's papers also report beside the videos' top-1."""
    right = scores.argmax(1) == labels
    per_class = [right[labels == c].double().mean() for c in labels.unique()]
    return 100 * torch.stack(per_class).mean().item()
