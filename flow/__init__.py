"""Optical flow on PyTorch: batched TV-L1 (CPU or CUDA) and torchvision's RAFT."""
from .tvl1 import TVL1, TVL1Params

__all__ = ["TVL1", "TVL1Params"]
