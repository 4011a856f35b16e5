"""Data layer: split lists -> video index -> sampling -> datasets -> loaders.

The split parser, the index and the sampling functions need no torch; the names below are
imported on first use (PEP 562), so that ``import dataloader.splits`` (average_fusion.py)
does not pay for importing torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "datasets": ("MotionDataset", "SpatialDataset", "TRAIN_CROPS"),
    "index": ("LAYOUTS", "FrameLayout", "IndexedVideo", "build_index", "index_videos", "resolve_layout",
              "stream_sources"),
    "loaders": ("ShardSampler", "TrainSampler", "build_loader", "default_workers"),
    "sampling": ("STACK_LENGTH", "TEST_FRAMES", "random_start", "segment_positions", "stack_frames",
                 "evaluation_positions", "centre_positions", "place_test_positions", "TEST_POSITIONS"),
    "splits": ("DEFAULT_SPLIT_DIR", "Split", "SplitError", "VideoRecord", "holdout_groups", "load_split"),
    "transforms": ("FrameReadError", "InputNormalizer", "MOTION_SCALES", "TEST_CROPS", "TSN_SCALES", "MultiCrop",
                   "motion_normalizer", "spatial_normalizer", "TEST_SCALES", "multicrop_scale_side"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'dataloader' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
