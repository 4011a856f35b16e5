"""What a run holds while it runs: its data (indexed videos, loaders) and its training state
(model, optimisation, where it stands)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from dataloader import IndexedVideo

from .loops import Context, Meters


@dataclass
class Data:
    """The indexed videos of a run and how to load them."""

    split: object
    test_videos: list[IndexedVideo]
    train_videos: list[IndexedVideo]
    val_videos: list[IndexedVideo]
    test_loader: Callable[[list[IndexedVideo]], object]
    test_mode: str  # 'full' when the device resizes whole test batches, 'crops' when it cuts test crops,
    #                  else the --test-view
    frame_size: list[int] | None = None  # [height, width] of the frames (or flow images) on disk

    def labels(self, videos: list[IndexedVideo]) -> torch.Tensor:
        return torch.tensor([v.record.label for v in videos])


@dataclass
class Training:
    """Model, optimisation state and where the run stands."""

    model: nn.Module
    model_without_ddp: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: object
    ctx: Context
    start_epoch: int = 0
    samples_done: int = 0
    best_top1: float = -1.0
    meters: Meters = field(default_factory=Meters)
