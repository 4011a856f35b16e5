"""What differs between the spatial and the motion stream: the one object each stream script
hands the engine."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Callable

import torch

from dataloader import IndexedVideo, InputNormalizer


@dataclass(frozen=True)
class Stream:
    """What differs between the spatial and the motion stream."""

    name: str
    sources: Callable[[argparse.Namespace, object], list]        # (args, layout) -> [(root, template)]
    # (videos, train, args, test_mode) -> dataset; test_mode 'full' leaves the resize to the device,
    # 'crops' the test crops
    dataset: Callable[[list[IndexedVideo], bool, argparse.Namespace, str], torch.utils.data.Dataset]
    # (args, channels_last, resize to (h, w) or None) -> normaliser
    normalizer: Callable[[argparse.Namespace, bool, tuple[int, int] | None], InputNormalizer]
    in_channels: Callable[[argparse.Namespace], int]
    min_frames: Callable[[argparse.Namespace], int] = lambda args: 1
    flow: bool = False  # a flipped input negates its x channels
    recipes: dict = field(default_factory=dict)  # --recipe name -> {argument: value}

    @property
    def score_file(self) -> str:
        return f"{self.name}_video_preds.pickle"
