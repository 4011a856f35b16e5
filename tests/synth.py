"""Tiny generated data sets for the tests: split lists plus RGB and flow JPEG folders."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dataloader.index import LAYOUTS

CLASSES = ("Alpha", "Beta", "Gamma")


@dataclass
class SynthData:
    split_dir: Path
    data_root: Path
    flow_root: Path
    classes: tuple[str, ...]
    train: list[str]
    test: list[str]


def video_name(cls: str, group: int, clip: int) -> str:
    return f"v_{cls}_g{group:02d}_c{clip:02d}"


def write_split(split_dir: Path, classes, train: list[tuple[str, str]], test: list[tuple[str, str]],
                newline: str = "\n", split: int = 1) -> None:
    split_dir.mkdir(parents=True, exist_ok=True)
    label = {c: i + 1 for i, c in enumerate(classes)}
    (split_dir / "classInd.txt").write_bytes(
        newline.join(f"{i + 1} {c}" for i, c in enumerate(classes)).encode() + newline.encode())
    (split_dir / f"trainlist{split:02d}.txt").write_bytes(
        newline.join(f"{c}/{n}.avi {label[c]}" for c, n in train).encode() + newline.encode())
    (split_dir / f"testlist{split:02d}.txt").write_bytes(
        newline.join(f"{c}/{n}.avi" for c, n in test).encode() + newline.encode())


def frame_path(root: Path, template: str, video: str, idx: int, cls: str, class_folder: bool) -> Path:
    if class_folder:
        template = template.replace("{video}", "{class}/{video}")
    return root / template.format(video=video, idx=idx, **{"class": cls})


def make_dataset(root: Path, classes=CLASSES, train_groups=(8, 9), test_groups=(1,), clips=2,
                 frames: int | dict = 14, size=(32, 40), layout: str = "ucf101",
                 class_folder: bool = False, seed: int = 0) -> SynthData:
    """Frames whose colour depends on the class and flow whose x component does, so that
    tiny models can learn something; ``frames`` may map video names to frame counts."""
    rng = np.random.default_rng(seed)
    templates = LAYOUTS[layout]
    data_root, flow_root = root / "frames", root / "flow"
    if layout == "tsn":
        flow_root = data_root
    train, test = [], []
    for cls in classes:
        for groups, out in ((train_groups, train), (test_groups, test)):
            for g in groups:
                for c in range(1, clips + 1):
                    out.append((cls, video_name(cls, g, c)))
    for ci, cls in enumerate(classes):
        for _, name in [t for t in train + test if t[0] == cls]:
            n = frames[name] if isinstance(frames, dict) else frames
            colour = np.array([(60 + 80 * ci) % 256, (200 - 70 * ci) % 256, (40 * ci) % 256])
            for i in range(1, n + 1):
                rgb = np.clip(colour + rng.integers(-30, 30, size + (3,)), 0, 255).astype(np.uint8)
                save(frame_path(data_root, templates.rgb, name, i, cls, class_folder), rgb)
            for i in range(1, n):
                fx = np.clip(128 + 40 * (ci - 1) + rng.integers(-10, 10, size), 0, 255).astype(np.uint8)
                fy = np.clip(128 + rng.integers(-10, 10, size), 0, 255).astype(np.uint8)
                save(frame_path(flow_root, templates.flow_x, name, i, cls, class_folder), fx)
                save(frame_path(flow_root, templates.flow_y, name, i, cls, class_folder), fy)
    split_dir = root / "splits"
    write_split(split_dir, classes, train, test)
    return SynthData(split_dir, data_root, flow_root, tuple(classes), [n for _, n in train], [n for _, n in test])


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)
