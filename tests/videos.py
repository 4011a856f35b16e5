"""Video files of the kinds the decoders must read exactly, written in the tests with PyAV:
MPEG-4 part 2 AVI (UCF101's XviD), H.264 with B-frames, variable frame rate, and an AVI whose
header claims more frames than it holds."""
from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import numpy as np

KINDS = ("xvid-avi", "h264-bframes", "vfr-mp4", "lying-header-avi")


def moving_frames(count: int, height: int = 48, width: int = 64, seed: int = 0) -> list[np.ndarray]:
    """RGB frames that differ from each other: a textured background that drifts and a block
    whose position encodes the frame number."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width * 2, 3), dtype=np.uint8)
    base = (base // 32 * 32).astype(np.uint8)  # coarse texture: codecs keep it
    frames = []
    for i in range(count):
        frame = np.ascontiguousarray(base[:, i % width:i % width + width])
        top, left = (i * 7) % (height - 8), (i * 13) % (width - 8)
        frame[top:top + 8, left:left + 8] = (255, 255 * (i % 2), 0)
        frames.append(frame)
    return frames


def write_video(path: Path, frames: list[np.ndarray], codec: str = "mpeg4", rate: int = 25,
                stamps: list[int] | None = None, bframes: int = 0, gop: int = 12, crf: int = 10) -> Path:
    """Encode RGB frames. ``stamps``: presentation times in milliseconds (variable frame rate);
    ``crf``: libx264's quality (10 nearly lossless, 23 its default)."""
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"bf": str(bframes), "crf": str(crf), "preset": "fast"}
        else:
            stream.codec_context.max_b_frames = bframes
            stream.codec_context.bit_rate = 4_000_000
        if stamps is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if stamps is not None:
                frame.pts, frame.time_base = stamps[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def claim_frames(avi: Path, frames: int) -> None:
    """Make an AVI's header claim ``frames`` frames (avih dwTotalFrames and strh dwLength), as
    a truncated or badly written file's does."""
    data = bytearray(avi.read_bytes())
    avih = data.index(b"avih")
    struct.pack_into("<I", data, avih + 8 + 16, frames)
    strh = data.index(b"strh")
    struct.pack_into("<I", data, strh + 8 + 32, frames)
    avi.write_bytes(bytes(data))


def make_video(kind: str, folder: Path, count: int = 60, seed: int = 0) -> Path:
    """One file of ``kind`` (KINDS) with ``count`` decodable frames."""
    frames = moving_frames(count, seed=seed)
    if kind == "xvid-avi":
        return write_video(folder / "xvid.avi", frames, "mpeg4", gop=12)
    if kind == "h264-bframes":
        return write_video(folder / "bframes.mp4", frames, "libx264", bframes=3, gop=10)
    if kind == "vfr-mp4":
        rng = np.random.default_rng(seed)
        stamps = np.cumsum(rng.choice([20, 33, 40, 67, 100], size=count)) - 20
        return write_video(folder / "vfr.mp4", frames, "libx264", stamps=[int(s) for s in stamps], bframes=2, gop=8)
    if kind == "lying-header-avi":
        path = write_video(folder / "lying.avi", frames, "mpeg4", gop=12)
        claim_frames(path, count + count // 2)
        return path
    raise ValueError(f"unknown kind {kind!r}")


SHAPES = ("Square", "Disc", "Bar")


def shape_frames(shape: str, count: int, seed: int, height: int = 96, width: int = 128) -> list[np.ndarray]:
    """A grey shape (the class: square, disc or bar) drifting over a textured background: a class
    a single frame shows by its form, not by an exact colour."""
    rng = np.random.default_rng(seed)
    background = np.kron(rng.uniform(60, 140, (height // 8 + 1, width // 8 + 1)), np.ones((8, 8)))[:height, :width]
    y, x = np.mgrid[:height, :width]
    top, left = rng.uniform(10, height - 40), rng.uniform(10, width - 40)
    dy, dx = rng.uniform(-1.5, 1.5, 2)
    shade = rng.uniform(170, 220)
    frames = []
    for t in range(count):
        cy, cx = top + dy * t + 15, left + dx * t + 15
        if shape == "Square":
            mask = (abs(y - cy) < 12) & (abs(x - cx) < 12)
        elif shape == "Disc":
            mask = (y - cy) ** 2 + (x - cx) ** 2 < 14 ** 2
        else:
            mask = (abs(y - cy) < 4) & (abs(x - cx) < 22)
        grey = np.where(mask, shade, background) + rng.normal(0, 2, (height, width))
        frames.append(np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
    return frames


def make_shape_dataset(root: Path, per_class: int = 8, frames: int = 30, test_per_class: int = 3) -> Path:
    """MPEG-4 AVI videos (UCF101's codec) in ROOT/videos/<Class>/v_<Class>_gXX_c01.avi and UCF101
    split lists in ROOT/splits; returns the split folder."""
    train, test = [], []
    for c, shape in enumerate(SHAPES):
        for g in range(1, per_class + 1):
            name = f"v_{shape}_g{g:02d}_c01"
            folder = root / "videos" / shape
            folder.mkdir(parents=True, exist_ok=True)
            write_video(folder / f"{name}.avi", shape_frames(shape, frames, seed=100 * c + g), "mpeg4", gop=12)
            (test if g <= test_per_class else train).append(f"{shape}/{name}.avi")
    splits = root / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {s}\n" for i, s in enumerate(SHAPES)))
    (splits / "trainlist01.txt").write_text("".join(f"{v} {SHAPES.index(v.split('/')[0]) + 1}\n" for v in train))
    (splits / "testlist01.txt").write_text("".join(f"{v}\n" for v in test))
    return splits


LIVE_CLASSES = ["Left", "Right", "Still"]


def untrained_checkpoint(path: Path, stream: str, stack_length: int = 3, seed: int = 0, arch: str = "resnet18",
                         classes: list[str] = LIVE_CLASSES, frame_size=(48, 64), input_size: int = 32,
                         test_frames: int = 3) -> Path:
    """A checkpoint in this repo's format with a ResNet of seeded random weights: scores that
    differ from class to class, for comparing two ways of computing them (or for timing)."""
    import torch

    from models import build_model

    torch.manual_seed(seed)
    channels = 3 if stream == "spatial" else 2 * stack_length
    model = build_model(arch, len(classes), channels, "none")
    torch.save({"format": "two-stream-checkpoint/1", "stream": stream, "arch": arch,
                "num_classes": len(classes), "in_channels": channels, "class_names": list(classes),
                "frame_size": list(frame_size), "epoch": 1, "best_top1": 0.0, "model": model.state_dict(),
                "args": {"arch": arch, "input_size": input_size, "test_frames": test_frames,
                         "stack_length": stack_length, "recipe": "reference"}}, path)
    return path


def action_change_video(path: Path, seconds: float, fps: int = 10, seed: int = 0) -> Path:
    """A square that moves right, then left, then stands still (an action change a third of the
    way through and another two thirds), over a noisy textured background: MPEG-4 AVI."""
    rng = np.random.default_rng(seed)
    count = int(seconds * fps)
    background = np.kron(rng.integers(60, 160, (7, 9, 3)), np.ones((8, 8, 1)))[:48, :64]
    frames, x = [], 20.0
    for t in range(count):
        x += 2.0 if t < count / 3 else -2.0 if t < 2 * count / 3 else 0.0
        frame = background.copy()
        left = int(x) % 48
        frame[16:32, left:left + 16] = (220, 200, 40)
        frames.append(np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8))
    return write_video(path, frames, "mpeg4", rate=fps, gop=10)
