"""Generate an on-disk benchmark data set of realistic JPEGs (shared by the benchmarks).

RGB frames are smooth colour fields with texture (about 20 KB at 256x340, like UCF101's
jpegs_256), flow frames smooth grey fields around 128 (about 6 KB, like tvl1_flow).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from dataloader.index import LAYOUTS


def _smooth(rng: np.random.Generator, shape: tuple[int, int], channels: int, cells: int) -> np.ndarray:
    low = rng.uniform(0, 255, (cells, int(cells * shape[1] / shape[0]) + 1, channels)).astype(np.uint8)
    img = Image.fromarray(low.squeeze(-1) if channels == 1 else low)
    return np.asarray(img.resize((shape[1], shape[0]), Image.BICUBIC), dtype=np.float32).reshape(shape + (channels,))


def make_bench_data(root: str | Path, videos: int = 24, frames: int = 40, size=(256, 340),
                    classes: int = 4, seed: int = 0) -> tuple[Path, Path, Path]:
    """Write frames, flow and split lists under ``root`` (skipped when already there).
    Returns (split_dir, data_root, flow_root)."""
    root = Path(root)
    split_dir, data_root, flow_root = root / "splits", root / "frames", root / "flow"
    done = root / ".complete"
    names = [(f"C{v % classes}", f"v_C{v % classes}_g{v // classes + 1:02d}_c01") for v in range(videos)]
    if not done.exists():
        rng = np.random.default_rng(seed)
        layout = LAYOUTS["ucf101"]
        for _, name in names:
            base = _smooth(rng, size, 3, 12)
            detail = _smooth(rng, size, 1, 64) - 128
            for i in range(1, frames + 1):
                shift = np.roll(base, 3 * i, axis=1) + 0.25 * np.roll(detail, -2 * i, axis=0)
                _save(data_root / layout.rgb.format(video=name, idx=i), np.clip(shift, 0, 255).astype(np.uint8))
            for i in range(1, frames):
                for template in (layout.flow_x, layout.flow_y):
                    grey = 128 + 0.25 * (_smooth(rng, size, 1, 8) - 128)
                    _save(flow_root / template.format(video=name, idx=i), grey[..., 0].astype(np.uint8))
        split_dir.mkdir(parents=True, exist_ok=True)
        (split_dir / "classInd.txt").write_text("".join(f"{c + 1} C{c}\n" for c in range(classes)))
        (split_dir / "trainlist01.txt").write_text("".join(f"{c}/{n}.avi {int(c[1:]) + 1}\n" for c, n in names))
        (split_dir / "testlist01.txt").write_text("".join(f"{c}/{n}.avi\n" for c, n in names))
        done.touch()
    return split_dir, data_root, flow_root


def mean_jpeg_kb(folder: Path, limit: int = 200) -> float:
    sizes = []
    for dirpath, _, files in os.walk(folder):
        sizes += [os.path.getsize(os.path.join(dirpath, f)) for f in files if f.endswith(".jpg")]
        if len(sizes) >= limit:
            break
    return float(np.mean(sizes)) / 1024 if sizes else 0.0


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=90)


def make_bench_videos(root: str | Path, videos: int = 24, frames: int = 186, size=(240, 320), classes: int = 4,
                      gop: int = 12, bit_rate: int = 600_000, seed: int = 0) -> tuple[Path, Path]:
    """UCF101-like video files under ``root``: MPEG-4 part 2 AVI (UCF101's XviD), 320x240, 186
    frames (UCF101's mean), about 600 kbit/s, a key frame every ``gop`` frames, in class
    folders, with UCF101 split lists (skipped when already there). Returns (split_dir, video_root)."""
    import av

    root = Path(root)
    split_dir, video_root = root / "splits", root / "videos"
    done = root / f".complete-{videos}-{frames}-{gop}"
    names = [(f"C{v % classes}", f"v_C{v % classes}_g{v // classes + 1:02d}_c01") for v in range(videos)]
    if not done.exists():
        rng = np.random.default_rng(seed)
        for cls, name in names:
            base = _smooth(rng, size, 3, 12)
            detail = _smooth(rng, size, 1, 64) - 128
            (video_root / cls).mkdir(parents=True, exist_ok=True)
            with av.open(str(video_root / cls / f"{name}.avi"), "w") as container:
                stream = container.add_stream("mpeg4", rate=25)
                stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
                stream.codec_context.gop_size, stream.codec_context.bit_rate = gop, bit_rate
                stream.codec_context.max_b_frames = 0
                for i in range(frames):
                    shift = np.roll(base, 3 * i, axis=1) + 0.25 * np.roll(detail, -2 * i, axis=0)
                    image = np.clip(shift, 0, 255).astype(np.uint8)
                    for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        split_dir.mkdir(parents=True, exist_ok=True)
        (split_dir / "classInd.txt").write_text("".join(f"{c + 1} C{c}\n" for c in range(classes)))
        (split_dir / "trainlist01.txt").write_text("".join(f"{c}/{n}.avi {int(c[1:]) + 1}\n" for c, n in names))
        (split_dir / "testlist01.txt").write_text("".join(f"{c}/{n}.avi\n" for c, n in names))
        done.touch()
    return split_dir, video_root


def disk_usage(folder: Path) -> tuple[int, int]:
    """(bytes, files) under ``folder``, not counting hidden bookkeeping (stamps, locks)."""
    total, count = 0, 0
    for dirpath, folders, files in os.walk(folder):
        folders[:] = [f for f in folders if not f.startswith(".")]
        for name in (f for f in files if not f.startswith(".")):
            total += os.path.getsize(os.path.join(dirpath, name))
            count += 1
    return total, count
