"""Frame pairs with known flow, for tests and benchmarks."""
from __future__ import annotations

import numpy as np


def warped_pair(h: int, w: int, magnitude: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth random texture (second) and its warp by a smooth random flow field whose
    largest component is ``magnitude`` pixels (first), so that first(p) = second(p + flow(p)),
    the convention of the flow estimators. Returns (first, second) uint8 and flow HxWx2."""
    import cv2

    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 1.5)
    texture = cv2.normalize(texture, None, 10, 245, cv2.NORM_MINMAX)
    field = [cv2.resize(rng.normal(0, 1, (4, 5)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
             for _ in range(2)]
    scale = magnitude / max(np.abs(field[0]).max(), np.abs(field[1]).max())
    fx, fy = field[0] * scale, field[1] * scale
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    first = cv2.remap(texture, xs + fx, ys + fy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)

    def to_u8(a):
        return np.clip(np.round(a), 0, 255).astype(np.uint8)
    return to_u8(first), to_u8(texture), np.stack([fx, fy], axis=-1)
