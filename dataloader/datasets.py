"""Spatial (RGB frame) and motion (stacked optical flow) datasets.

Training items are ``(frames, label)`` with frames a uint8 tensor [S, C, H, W] of S samples
of one video (spatial: 3 segments; motion: 1 stack); the model averages their logits.
Test items are ``(frames, label, video_idx)`` with frames [C, H, W], one item per test
position, so that the engine can sum them into video scores.

Training indices are ``(video_index, sample_seed)`` pairs from :class:`dataloader.loaders.TrainSampler`:
the random choices of a sample depend only on that seed, which makes an interrupted and
resumed run draw exactly what an uninterrupted one draws.
"""
from __future__ import annotations

import random

from torch.utils.data import Dataset

from .index import IndexedVideo
from .sampling import STACK_LENGTH, TEST_FRAMES, random_start, segment_positions, stack_frames, evaluation_positions
from .transforms import (fit_for_crop, flow_to_tensor, random_crop_params, read_image, rgb_to_tensor,
                         test_view, train_crop)


class _VideoDataset(Dataset):
    def __init__(self, videos: list[IndexedVideo], train: bool, input_size: int = 224,
                 test_frames: int = TEST_FRAMES, test_mode: str = "resize",
                 stack_length: int = STACK_LENGTH):
        if not videos:
            raise ValueError("a dataset needs at least one video")
        self.videos = videos
        self.train = train
        self.input_size = input_size
        self.test_mode = test_mode
        self.stack_length = stack_length
        self.test_frames = test_frames
        if not train:
            self.test_items = [(v, p) for v, video in enumerate(videos)
                               for p in evaluation_positions(video.frames, test_frames, stack_length)]

    def __len__(self) -> int:
        return len(self.videos) if self.train else len(self.test_items)

    @property
    def labels(self) -> list[int]:
        return [v.record.label for v in self.videos]


class SpatialDataset(_VideoDataset):
    """RGB frames. Training: one random frame in each of ``segments`` equal parts of the
    video (TSN), same crop and flip for all. Testing: ``test_frames`` spread positions."""

    def __init__(self, videos: list[IndexedVideo], train: bool, segments: int = 3, **kwargs):
        super().__init__(videos, train, **kwargs)
        self.segments = segments

    def __getitem__(self, item):
        if not self.train:
            v, position = self.test_items[item]
            video = self.videos[v]
            img = read_image(video.sources[0].path(position), "RGB")
            frame = test_view(img, self.input_size, self.test_mode)
            return rgb_to_tensor([frame])[0], video.record.label, v
        index, seed = item
        rng = random.Random(seed)
        video = self.videos[index]
        positions = segment_positions(video.frames, self.segments, rng, self.stack_length)
        images = [fit_for_crop(read_image(video.sources[0].path(p), "RGB"), self.input_size)
                  for p in positions]
        params = random_crop_params(images[0].height, images[0].width, self.input_size, rng)
        return rgb_to_tensor([train_crop(img, self.input_size, params) for img in images]), video.record.label


class MotionDataset(_VideoDataset):
    """Stacks of ``stack_length`` flow frames, x/y interleaved into 2L channels. Training: one
    random stack per video, random crop shared by all channels, flip that negates x.
    ``reference_order`` reproduces the reference repo's rotated channel order."""

    def __init__(self, videos: list[IndexedVideo], train: bool, reference_order: bool = False, **kwargs):
        super().__init__(videos, train, **kwargs)
        self.reference_order = reference_order

    def _read_stack(self, video: IndexedVideo, start: int):
        x_source, y_source = video.sources
        frames = stack_frames(start, self.stack_length, self.reference_order)
        return ([read_image(x_source.path(i), "L") for i in frames],
                [read_image(y_source.path(i), "L") for i in frames])

    def __getitem__(self, item):
        if not self.train:
            v, start = self.test_items[item]
            video = self.videos[v]
            xs, ys = self._read_stack(video, start)
            size, mode = self.input_size, self.test_mode
            stack = flow_to_tensor([test_view(i, size, mode) for i in xs], [test_view(i, size, mode) for i in ys])
            return stack, video.record.label, v
        index, seed = item
        rng = random.Random(seed)
        video = self.videos[index]
        start = random_start(video.frames, rng, self.stack_length)
        xs, ys = self._read_stack(video, start)
        xs = [fit_for_crop(i, self.input_size) for i in xs]
        ys = [fit_for_crop(i, self.input_size) for i in ys]
        params = random_crop_params(xs[0].height, xs[0].width, self.input_size, rng)
        stack = flow_to_tensor([train_crop(i, self.input_size, params) for i in xs],
                               [train_crop(i, self.input_size, params) for i in ys], flipped=params.flip)
        return stack.unsqueeze(0), video.record.label
