"""Spatial (RGB frame) and motion (stacked optical flow) datasets.

Training items are ``(frames, label)`` with frames a uint8 tensor [S, C, H, W] of S samples
of one video (``segments``: 3 frames in the spatial stream, 1 stack in the motion stream by
default); the model averages their logits. The training crop is the reference's random
crop of the input size, or TSN's multi-scale corner crop (``train_crop='multiscale'``).
Test items are ``(frames, label, video_idx)`` with frames [C, H, W], one item per test
position, so that the engine can sum them into video scores (test crops, if any, are cut
from these frames on the device).

Training indices are ``(video_index, sample_seed)`` pairs from :class:`dataloader.loaders.TrainSampler`:
the random choices of a sample depend only on that seed, which makes an interrupted and
resumed run draw exactly what an uninterrupted one draws.
"""
from __future__ import annotations

import random

import torch
from torch.utils.data import Dataset

from .index import IndexedVideo
from .sampling import STACK_LENGTH, TEST_FRAMES, place_test_positions, segment_positions, stack_frames
from .transforms import (TSN_SCALES, CropParams, fit_for_crop, flow_to_tensor, multiscale_crop_params,
                         random_crop_params, rgb_to_tensor, test_view, train_crop)

TRAIN_CROPS = ("random", "multiscale")


class _VideoDataset(Dataset):
    def __init__(self, videos: list[IndexedVideo], train: bool, input_size: int = 224,
                 test_frames: int = TEST_FRAMES, test_mode: str = "resize",
                 stack_length: int = STACK_LENGTH, segments: int = 1, train_crop: str = "random",
                 crop_scales: tuple[float, ...] = TSN_SCALES, crop_positions: int = 5, flip: bool = True,
                 test_positions: str = "starts", test_scale_side: int | None = None):
        if not videos:
            raise ValueError("a dataset needs at least one video")
        if train_crop not in TRAIN_CROPS:
            raise ValueError(f"train_crop must be one of {TRAIN_CROPS}, got {train_crop!r}")
        self.videos = videos
        self.train = train
        self.input_size = input_size
        self.segments = segments
        self.train_crop, self.crop_scales, self.crop_positions = train_crop, tuple(crop_scales), crop_positions
        self.flip = flip
        self.test_mode = test_mode
        self.stack_length = stack_length
        self.test_frames = test_frames
        self.test_scale_side = test_scale_side  # multi-crop testing: frames' short side first scaled to this
        if not train:
            self.test_items = [(v, p) for v, video in enumerate(videos)
                               for p in place_test_positions(video.frames, test_frames, stack_length, test_positions)]

    def __len__(self) -> int:
        return len(self.videos) if self.train else len(self.test_items)

    @property
    def labels(self) -> list[int]:
        return [v.record.label for v in self.videos]

    def _fit(self, images: list) -> list:
        """The reference's crop needs frames at least as large as the input."""
        return images if self.train_crop == "multiscale" else [fit_for_crop(i, self.input_size) for i in images]

    def _crop_params(self, height: int, width: int, rng: random.Random) -> CropParams:
        if self.train_crop == "multiscale":
            return multiscale_crop_params(height, width, self.input_size, rng, self.crop_scales, self.crop_positions,
                                          flip=self.flip)
        return random_crop_params(height, width, self.input_size, rng, flip=self.flip)


class SpatialDataset(_VideoDataset):
    """RGB frames. Training: one random frame in each of ``segments`` equal parts of the
    video (TSN), same crop and flip for all. Testing: ``test_frames`` spread positions."""

    def __init__(self, videos: list[IndexedVideo], train: bool, segments: int = 3, **kwargs):
        super().__init__(videos, train, segments=segments, **kwargs)

    def __getitem__(self, item):
        if not self.train:
            return self.__getitems__([item])[0]
        index, seed = item
        rng = random.Random(seed)
        video = self.videos[index]
        positions = segment_positions(video.frames, self.segments, rng, self.stack_length)
        images = self._fit(video.sources[0].read(positions, "RGB"))
        params = self._crop_params(images[0].height, images[0].width, rng)
        return rgb_to_tensor([train_crop(img, self.input_size, params) for img in images]), video.record.label

    def __getitems__(self, items: list) -> list:
        """A batch of items; test positions of one video are read together (from a video file:
        one seek and one forward pass for all of them)."""
        if self.train:
            return [self[item] for item in items]
        wanted: dict[int, list[int]] = {}
        for item in items:
            v, position = self.test_items[item]
            wanted.setdefault(v, []).append(position)
        images = {v: dict(zip(positions, self.videos[v].sources[0].read(positions, "RGB")))
                  for v, positions in wanted.items()}
        out = []
        for item in items:
            v, position = self.test_items[item]
            frame = test_view(images[v][position], self.input_size, self.test_mode, self.test_scale_side)
            out.append((rgb_to_tensor([frame])[0], self.videos[v].record.label, v))
        return out


class MotionDataset(_VideoDataset):
    """Stacks of ``stack_length`` flow frames, x/y interleaved into 2L channels. Training: one
    random stack in each of ``segments`` parts of the video (default 1: one stack anywhere),
    one crop shared by all stacks and channels, a flip that negates x.
    ``reference_order`` reproduces the reference repo's rotated channel order."""

    def __init__(self, videos: list[IndexedVideo], train: bool, reference_order: bool = False, **kwargs):
        super().__init__(videos, train, **kwargs)
        self.reference_order = reference_order

    def _read_stack(self, video: IndexedVideo, start: int):
        x_source, y_source = video.sources
        frames = stack_frames(start, self.stack_length, self.reference_order)
        return x_source.read(frames, "L"), y_source.read(frames, "L")

    def __getitem__(self, item):
        if not self.train:
            v, start = self.test_items[item]
            video = self.videos[v]
            xs, ys = self._read_stack(video, start)
            view = (self.input_size, self.test_mode, self.test_scale_side)
            stack = flow_to_tensor([test_view(i, *view) for i in xs], [test_view(i, *view) for i in ys])
            return stack, video.record.label, v
        index, seed = item
        rng = random.Random(seed)
        video = self.videos[index]
        stacks = [self._read_stack(video, start)
                  for start in segment_positions(video.frames, self.segments, rng, self.stack_length)]
        stacks = [(self._fit(xs), self._fit(ys)) for xs, ys in stacks]
        params = self._crop_params(stacks[0][0][0].height, stacks[0][0][0].width, rng)
        size = self.input_size
        return torch.stack([flow_to_tensor([train_crop(i, size, params) for i in xs],
                                           [train_crop(i, size, params) for i in ys], flipped=params.flip)
                            for xs, ys in stacks]), video.record.label
