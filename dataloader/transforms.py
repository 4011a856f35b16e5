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
    """Where to crop, how large (0: the input size) and whether to flip; drawn once per
    sample, applied to all its frames and flow channels."""

    top: int
    left: int
    flip: bool
    height: int = 0
    width: int = 0


def random_crop_params(height: int, width: int, size: int, rng: random.Random,
                       flip: bool = True) -> CropParams:
    """The reference's augmentation: a size x size crop anywhere, flipped half of the time."""
    return CropParams(top=rng.randint(0, height - size), left=rng.randint(0, width - size),
                      flip=flip and rng.random() < 0.5)


TSN_SCALES = (1.0, 0.875, 0.75, 0.66)  # of the short side: 256, 224, 192, 168 on 256x340 frames
MOTION_SCALES = TSN_SCALES[:3]


def crop_sizes(short_side: int, input_size: int, scales: tuple[float, ...]) -> list[int]:
    """The candidate crop sides; one within 3 pixels of the input size is snapped to it (as
    TSN does), so that 224 crops of 256 frames need no resize."""
    sizes = [int(short_side * s) for s in scales]
    return [input_size if abs(s - input_size) < 3 else s for s in sizes]


def fixed_offsets(height: int, width: int, crop_h: int, crop_w: int, positions: int = 5) -> list[tuple[int, int]]:
    """(top, left) of TSN's fixed crop positions: 4 corners and the centre, or with
    ``positions`` 13 also the edge middles and the quarter points."""
    h, w = (height - crop_h) // 4, (width - crop_w) // 4
    offsets = [(0, 0), (0, 4 * w), (4 * h, 0), (4 * h, 4 * w), (2 * h, 2 * w)]
    if positions == 13:
        offsets += [(2 * h, 0), (2 * h, 4 * w), (4 * h, 2 * w), (0, 2 * w),
                    (h, w), (h, 3 * w), (3 * h, w), (3 * h, 3 * w)]
    return offsets


def multiscale_crop_params(height: int, width: int, input_size: int, rng: random.Random,
                           scales: tuple[float, ...] = TSN_SCALES, positions: int = 5,
                           max_distort: int = 1, flip: bool = True) -> CropParams:
    """TSN's multi-scale corner crop with scale jittering: width and height each one of the
    ``scales`` of the short side, at most ``max_distort`` steps apart, at a fixed position."""
    sides = crop_sizes(min(height, width), input_size, scales)
    pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= max_distort]
    crop_h, crop_w = pairs[rng.randrange(len(pairs))]
    offsets = fixed_offsets(height, width, crop_h, crop_w, positions)
    top, left = offsets[rng.randrange(len(offsets))]
    return CropParams(top=top, left=left, flip=flip and rng.random() < 0.5, height=crop_h, width=crop_w)


def fit_for_crop(img: Image.Image, size: int) -> Image.Image:
    """Upscale a frame smaller than the crop so that any frame size works."""
    w, h = img.size
    if min(w, h) >= size:
        return img
    scale = size / min(w, h)
    return img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)


def train_crop(img: Image.Image, size: int, params: CropParams) -> np.ndarray:
    """Crop (and flip) a decoded frame; returns an HxW or HxWxC uint8 array of side ``size``.

    A crop of the input size is a slice (a view); a multi-scale crop of another size is cut
    and resized to ``size`` in one PIL call (bilinear, antialiased), on the crop's pixels only."""
    height, width = params.height or size, params.width or size
    if (height, width) == (size, size):
        array = np.asarray(img)[params.top:params.top + size, params.left:params.left + size]
    else:
        box = (params.left, params.top, params.left + width, params.top + height)
        array = np.asarray(img.resize((size, size), Image.BILINEAR, box=box))
    return array[:, ::-1] if params.flip else array


TEST_SCALES = ("stored", "tsn")


def multicrop_scale_side(test_scale: str, input_size: int) -> int | None:
    """The short side frames are scaled to before multi-crop testing: None keeps them as stored;
    ``tsn`` is tsn-pytorch's ``scale_size = input_size * 256 // 224`` (256 for 224 crops)."""
    if test_scale == "stored":
        return None
    if test_scale == "tsn":
        return input_size * 256 // 224
    raise ValueError(f"test scale must be one of {TEST_SCALES}, got {test_scale!r}")


def scale_short_side(img: Image.Image, side: int) -> Image.Image:
    """Resize so that the short side is ``side``, keeping the aspect ratio (torchvision's and so
    tsn-pytorch's GroupScale: the long side truncated, bilinear)."""
    w, h = img.size
    if min(w, h) == side:
        return img
    size = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)
    return img.resize(size, Image.BILINEAR)


def test_view(img: Image.Image, size: int, mode: str = "resize", scale_side: int | None = None) -> np.ndarray:
    """Test-time view: the reference resizes the whole frame to size x size (default, keeps
    results comparable); ``center`` resizes the short side and takes the central square;
    ``full`` keeps the decoded frame as it is, for a resize of the whole batch on the device;
    ``crops`` too (short side scaled to ``scale_side`` when given, else upscaled only if below
    ``size``), for test crops cut on the device."""
    if mode == "full":
        return np.asarray(img)
    if mode == "crops":
        if scale_side is not None:
            img = scale_short_side(img, scale_side)
        return np.asarray(fit_for_crop(img, size))
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


TEST_CROPS = (1, 3, 5, 10)


def multi_crop_boxes(height: int, width: int, size: int, count: int) -> list[tuple[int, int, bool]]:
    """(top, left, flipped) of the ``count`` test crops of side ``size``: 1 = the centre;
    3 = the start, centre and end of the long side; 5 = the 4 corners and the centre, placed
    as TSN places them (tsn-pytorch GroupOverSample and mmaction2 TenCrop: multiples of a
    quarter of the margin, ``fixed_offsets``); 10 = those 5, then the same 5 flipped."""
    if height < size or width < size:
        raise ValueError(f"a {height}x{width} frame is smaller than the {size}x{size} test crop")
    centre = ((height - size) // 2, (width - size) // 2)
    if count == 1:
        return [(*centre, False)]
    if count == 3:
        if width >= height:
            return [(centre[0], left, False) for left in (0, centre[1], width - size)]
        return [(top, centre[1], False) for top in (0, centre[0], height - size)]
    if count in (5, 10):
        five = fixed_offsets(height, width, size, size, 5)
        return [(t, l, False) for t, l in five] + [(t, l, True) for t, l in five if count == 10]
    raise ValueError(f"test crops must be one of {TEST_CROPS}, got {count}")


class MultiCrop(torch.nn.Module):
    """uint8 batch [B, C, H, W] of whole frames on the device -> [B * count, C, size, size],
    the crops of each frame together. Each frame was decoded once; its crops are slices.
    ``flow``: a flipped crop's x channels (0, 2, 4, ...) become 255 - x, negating the flow."""

    def __init__(self, size: int, count: int, flow: bool = False):
        super().__init__()
        multi_crop_boxes(size, size, size, count)  # a bad count fails here, not in the first batch
        self.size, self.count, self.flow = size, count, flow

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        crops = []
        for top, left, flipped in multi_crop_boxes(batch.shape[-2], batch.shape[-1], self.size, self.count):
            crop = batch[..., top:top + self.size, left:left + self.size]
            if flipped:
                crop = crop.flip(-1)
                if self.flow:
                    crop[:, 0::2] = 255 - crop[:, 0::2]  # flip() made a copy
            crops.append(crop)
        return torch.stack(crops, dim=1).flatten(0, 1)


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
                      resize: tuple[int, int] | None = None, std: float = 1.0) -> InputNormalizer:
    """Flow in [0, 1] (the stored 0..255 / 255), minus ``mean``, divided by ``std``; mmaction2's
    flow models were trained on (x - 128) / 128: mean 128/255, std 128/255."""
    return InputNormalizer((mean,) * channels, (std,) * channels, channels_last, resize)
