"""Frame reading and augmentation.

The CPU side (in loader workers) only decodes JPEGs to uint8, crops by slicing and flips:
no per-pixel float work. Conversion to float and normalisation happen on the device, as one
batch operation (:class:`InputNormalizer`), which is what keeps a GPU fed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from utils import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLOW_MEAN = 0.5  # flow JPEGs map [-bound, bound] to 0..255: 0.5 is zero motion


class FrameReadError(UserError):
    """A frame that is missing or cannot be decoded."""


def read_image(path: str, mode: str) -> Image.Image:
    """Decode one JPEG (libjpeg-turbo through PIL) as 'RGB' or 'L'; a clear error otherwise."""
    try:
        with Image.open(path) as img:
            img.load()
            return img if img.mode == mode else img.convert(mode)
    except FileNotFoundError:
        raise FrameReadError(f"frame not found: {path}\n  fix: the frame folder has fewer frames "
                             f"than the index counted; delete the index cache or re-extract "
                             f"this video") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise FrameReadError(f"cannot decode frame {path}: {err}\n  fix: re-extract this video's "
                             f"frames (tools/extract_frames.py / tools/compute_flow.py)") from None


@dataclass(frozen=True)
class CropParams:
    """Where to crop and whether to flip; drawn once per sample, applied to all its frames."""

    top: int
    left: int
    flip: bool


def random_crop_params(height: int, width: int, size: int, rng: random.Random,
                       flip: bool = True) -> CropParams:
    return CropParams(top=rng.randint(0, height - size), left=rng.randint(0, width - size),
                      flip=flip and rng.random() < 0.5)


def fit_for_crop(img: Image.Image, size: int) -> Image.Image:
    """Upscale a frame smaller than the crop so that any frame size works."""
    w, h = img.size
    if min(w, h) >= size:
        return img
    scale = size / min(w, h)
    return img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)


def train_crop(img: Image.Image, size: int, params: CropParams) -> np.ndarray:
    """Crop (and flip) a decoded frame; returns an HxW or HxWxC uint8 array (a view)."""
    array = np.asarray(img)
    array = array[params.top:params.top + size, params.left:params.left + size]
    return array[:, ::-1] if params.flip else array


def test_view(img: Image.Image, size: int, mode: str = "resize") -> np.ndarray:
    """Test-time view: the reference resizes the whole frame to size x size (default, keeps
    results comparable); ``center`` resizes the short side and takes the central square;
    ``full`` keeps the decoded frame as it is, for a resize of the whole batch on the device."""
    if mode == "full":
        return np.asarray(img)
    if mode == "resize":
        return np.asarray(img.resize((size, size), Image.BILINEAR))
    if mode == "center":
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        top, left = (h - size) // 2, (w - size) // 2
        return np.asarray(img)[top:top + size, left:left + size]
    raise UserError(f"unknown test view {mode!r}; use 'resize', 'center' or 'full'")


def rgb_to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """List of HxWx3 uint8 arrays -> uint8 tensor [N, 3, H, W]."""
    return torch.from_numpy(np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2)))


def flow_to_tensor(x_frames: list[np.ndarray], y_frames: list[np.ndarray],
                   flipped: bool = False) -> torch.Tensor:
    """Interleave flow x/y frames into a uint8 tensor [2L, H, W]: x_1, y_1, x_2, y_2, ...

    After a horizontal flip the x component points the other way: 255 - x (the JPEGs store
    [-bound, bound] as 0..255, so this negates the flow)."""
    stack = np.empty((2 * len(x_frames),) + x_frames[0].shape, dtype=np.uint8)
    stack[0::2] = x_frames
    stack[1::2] = y_frames
    if flipped:
        np.subtract(255, stack[0::2], out=stack[0::2])
    return torch.from_numpy(stack)


class InputNormalizer(torch.nn.Module):
    """uint8 batch on the device -> normalised float batch.

    With ``resize`` (height, width), batches of another size are first resized as one batch
    operation (bilinear with antialiasing, which matches PIL's resize), which takes that
    per-image work off the loader's CPU workers in evaluation."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], channels_last: bool = False,
                 resize: tuple[int, int] | None = None):
        super().__init__()
        self.resize = resize
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        # (x/255 - mean)/std == x * scale + shift
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)
        self.channels_last = channels_last

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        batch = batch.to(memory_format=memory_format).float()
        if self.resize is not None and tuple(batch.shape[-2:]) != tuple(self.resize):
            batch = torch.nn.functional.interpolate(batch, size=self.resize, mode="bilinear", antialias=True,
                                                    align_corners=False).round_()
        # in place on the fresh float copy: much faster on the CPU than a broadcast addcmul
        return batch.mul_(self.scale).add_(self.shift)


def spatial_normalizer(channels_last: bool = False, resize: tuple[int, int] | None = None) -> InputNormalizer:
    return InputNormalizer(IMAGENET_MEAN, IMAGENET_STD, channels_last, resize)


def motion_normalizer(channels: int, mean: float = FLOW_MEAN, channels_last: bool = False,
                      resize: tuple[int, int] | None = None) -> InputNormalizer:
    return InputNormalizer((mean,) * channels, (1.0,) * channels, channels_last, resize)
