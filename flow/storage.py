"""How flow is stored: each component clipped to [-bound, bound] pixels and mapped linearly
to 0..255 (value = round((flow + bound) * 255 / (2 bound))), so 128 is no motion; and the
OpenCV flow methods that compute it on the CPU. tools/compute_flow.py writes this format,
the motion stream reads it, predict.py reproduces it."""
from __future__ import annotations

from typing import Callable

import numpy as np

from utils import UserError

CPU_METHODS = ("tvl1", "farneback")
DEVICE_METHODS = ("tvl1-torch", "raft")
METHODS = CPU_METHODS + DEVICE_METHODS


def quantize(flow: np.ndarray, bound: float) -> np.ndarray:
    """Flow in pixels -> uint8: [-bound, bound] mapped linearly to 0..255."""
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2 * bound))
    return np.round(scaled).astype(np.uint8)


def dequantize(image: np.ndarray, bound: float) -> np.ndarray:
    """uint8 flow image -> pixels (the inverse of :func:`quantize`, up to rounding)."""
    return image.astype(np.float32) * (2 * bound / 255.0) - bound


def quantize_tensor(flow, bound: float):
    """The same mapping as :func:`quantize`, on a tensor (on its device)."""
    import torch

    return ((flow.clamp(-bound, bound) + bound) * (255.0 / (2 * bound))).round().to(torch.uint8)


def flow_function(method: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A function (prev_grey, next_grey) -> flow HxWx2 float32 for an OpenCV method."""
    import cv2

    if method == "tvl1":
        if not hasattr(cv2, "optflow"):
            raise UserError("TV-L1 needs opencv-contrib: pip install opencv-contrib-python-headless "
                            "(and uninstall opencv-python-headless), or use --method farneback")
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        return lambda prev, nxt: tvl1.calc(prev, nxt, None)
    if method == "farneback":
        return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    raise UserError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
