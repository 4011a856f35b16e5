"""Samplers and DataLoaders.

Errors raised while reading a frame inside a worker come back to the main process as one
clear :class:`FrameReadError` naming the file, not as a worker traceback.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from utils import UserError, default_workers

from .transforms import FrameReadError


class TrainSampler(Sampler):
    """Shuffles video indices per epoch and pairs each with a seed for its random sample.

    Everything is a function of (seed, epoch): a resumed run draws exactly what an
    uninterrupted one draws, also with persistent workers. With ``world_size`` > 1 each rank
    takes every world_size-th item of the same permutation (padded by wrapping around, as
    DistributedSampler does, so that every rank runs the same number of steps).
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.size, self.seed, self.rank, self.world_size, self.shuffle = size, seed, rank, world_size, shuffle
        self.epoch, self.skip = 0, 0
        self.per_rank = -(-size // world_size)

    def set_epoch(self, epoch: int, samples_done: int = 0) -> None:
        """Select the epoch. Resuming mid-epoch, ``samples_done`` counts the samples of this
        epoch already trained on by all ranks together; each rank skips its share of them."""
        self.epoch = epoch
        self.skip = min(samples_done // self.world_size, self.per_rank)

    @property
    def epoch_samples(self) -> int:
        """Samples of a whole epoch over all ranks (padding included)."""
        return self.per_rank * self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
        seeds = torch.randint(0, 2**62, (self.size,), generator=g)
        total = self.per_rank * self.world_size
        order = torch.cat([order, order[: total - self.size]])  # pad to a multiple of world_size
        mine = order[self.rank::self.world_size][self.skip:]
        return iter([(int(i), int(seeds[i])) for i in mine])

    def __len__(self) -> int:
        return self.per_rank - self.skip


class ShardSampler(Sampler):
    """Evaluation: every item exactly once over all ranks (no padding, unlike
    DistributedSampler, whose repeated samples would be counted twice in video scores)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        self.size, self.rank, self.world_size = size, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))


@dataclass
class LoadFailure:
    """Stands in for a batch when a worker could not read a frame."""

    message: str


class _Guarded(Dataset):
    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        try:
            return self.dataset[item]
        except UserError as err:
            return LoadFailure(str(err))

    def __getitems__(self, items: list) -> list:
        """A whole batch at once where the dataset reads batches (a video's test positions together)."""
        if not hasattr(self.dataset, "__getitems__"):
            return [self[item] for item in items]
        try:
            return self.dataset.__getitems__(items)
        except UserError as err:
            return [LoadFailure(str(err))]


def _collate(batch: list):
    for sample in batch:
        if isinstance(sample, LoadFailure):
            return sample
    shapes = {tuple(sample[0].shape) for sample in batch}
    if len(shapes) > 1:
        return LoadFailure(f"frames of different sizes in one batch {sorted(shapes)}: frames kept at full size "
                           f"(resized on the device) must all have one size\n  fix: extract all videos at one "
                           f"size (tools/extract_frames.py --size H W) or pass --no-device-resize")
    return default_collate(batch)


class CheckedLoader:
    """A DataLoader whose iteration raises FrameReadError in the main process."""

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self.sampler = loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            if isinstance(batch, LoadFailure):
                raise FrameReadError(batch.message)
            yield batch


def build_loader(dataset: Dataset, batch_size: int, train: bool, workers: int | None = None,
                 pin_memory: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 prefetch_factor: int = 4) -> CheckedLoader:
    """The loader of a training or test dataset (training drops the last partial batch)."""
    workers = default_workers() if workers is None else workers
    sampler = (TrainSampler(len(dataset), seed, rank, world_size) if train
               else ShardSampler(len(dataset), rank, world_size))
    loader = DataLoader(
        _Guarded(dataset), batch_size=batch_size, sampler=sampler, num_workers=workers,
        collate_fn=_collate, pin_memory=pin_memory, drop_last=train,
        persistent_workers=workers > 0, prefetch_factor=prefetch_factor if workers > 0 else None,
        # its own generator: creating an iterator must not consume the global RNG, which a
        # resumed run restores from its checkpoint (samples have their own seeds anyway)
        generator=torch.Generator().manual_seed(seed))
    return CheckedLoader(loader)
