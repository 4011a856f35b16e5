"""Data layer: split lists -> video index -> sampling -> datasets -> loaders."""
from .datasets import MotionDataset, SpatialDataset
from .index import (LAYOUTS, FrameLayout, IndexedVideo, build_index, index_videos, resolve_layout,
                    stream_sources)
from .loaders import ShardSampler, TrainSampler, build_loader, default_workers
from .sampling import STACK_LENGTH, TEST_FRAMES, random_start, segment_positions, stack_frames, evaluation_positions
from .splits import DEFAULT_SPLIT_DIR, Split, SplitError, VideoRecord, holdout_groups, load_split
from .transforms import FrameReadError, InputNormalizer, motion_normalizer, spatial_normalizer

__all__ = [
    "LAYOUTS", "DEFAULT_SPLIT_DIR", "STACK_LENGTH", "TEST_FRAMES",
    "FrameLayout", "FrameReadError", "IndexedVideo", "InputNormalizer", "MotionDataset", "ShardSampler",
    "SpatialDataset", "Split", "SplitError", "TrainSampler", "VideoRecord",
    "build_index", "build_loader", "default_workers", "holdout_groups", "index_videos", "load_split",
    "motion_normalizer", "random_start", "resolve_layout", "segment_positions", "spatial_normalizer",
    "stack_frames", "stream_sources", "evaluation_positions",
]
