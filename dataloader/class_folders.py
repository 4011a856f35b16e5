"""Split lists for your own videos in class folders, ``VIDEO_DIR/<class>/<video>`` (the layout
torchvision's and Kinetics' tools use): stratified per class, group-aware, written in
UCF101's list format so that every script reads them unchanged. No torch here.
"""
from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from utils import UserError, atomic_write

from .video import VIDEO_EXTENSIONS


@dataclass(frozen=True)
class FolderVideo:
    class_name: str
    filename: str  # inside the class folder
    group: str     # videos of one class and group always land on the same side

    @property
    def stem(self) -> str:
        return self.filename.rsplit(".", 1)[0]


def scan_class_folders(video_dir: Path, group_pattern: str | None = None) -> dict[str, list[FolderVideo]]:
    """{class: videos} for every sub-folder of ``video_dir``. ``group_pattern``: a regular
    expression searched in each file name (its first group, or the whole match, names the
    group within the class, e.g. UCF101's ``_g(\\d+)_``: one actor); without a match a video
    is its own group."""
    if not video_dir.is_dir():
        raise UserError(f"video folder not found: {video_dir}")
    try:
        regex = re.compile(group_pattern) if group_pattern else None
    except re.error as err:
        raise UserError(f"--group-pattern {group_pattern!r} is not a regular expression ({err})\n"
                        f"  fix: e.g. '_g(\\d+)_' for UCF101's groups") from None
    folders = sorted(p for p in video_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"{video_dir} has no class folders\n  fix: put each class's videos in VIDEO_DIR/<class>/")
    classes, owner = {}, {}
    for folder in folders:
        files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not files:
            raise UserError(f"class folder {folder} has no videos ({', '.join(VIDEO_EXTENSIONS)})\n"
                            f"  fix: add videos or remove the folder")
        for name in [folder.name, *files]:
            if re.search(r"\s", name):
                raise UserError(f"{folder / name if name != folder.name else folder}: a name with whitespace "
                                f"cannot go into a split list\n  fix: rename it (e.g. spaces to underscores)")
        videos = []
        for filename in files:
            stem = filename.rsplit(".", 1)[0]
            if stem in owner:
                raise UserError(f"two videos are named {stem}: in {owner[stem]} and {folder.name}\n  fix: frame "
                                f"folders are named after the video file, so names must be unique: rename one")
            owner[stem] = folder.name
            match = regex.search(filename) if regex else None
            group = (match.group(1) if match.groups() else match.group(0)) if match else stem
            videos.append(FolderVideo(folder.name, filename, group))
        classes[folder.name] = videos
    if regex and not any(regex.search(v.filename) for videos in classes.values() for v in videos):
        warnings.warn(f"--group-pattern {group_pattern!r} matches no video name: every video is its own group",
                      stacklevel=2)
    return classes


def group_position(seed: int, class_name: str, group: str) -> float:
    """Where a group lies in [0, 1): a hash of its name, its class and the seed, the same
    whatever other videos there are."""
    digest = hashlib.sha256(f"{seed}\0{class_name}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(classes: dict[str, list[FolderVideo]], test_fraction: float, splits: int = 1,
                  seed: int = 0) -> list[dict[str, tuple[list[FolderVideo], list[FolderVideo]]]]:
    """For each split, {class: (train, test)}, group by group (a group is never on both sides):
    split k's test part is the groups whose position (:func:`group_position`) falls in the
    window [k / splits, k / splits + test_fraction) (wrapping around 1). A group's side depends
    on its own name only, so adding or removing videos never moves another group; each class's
    test part is ``test_fraction`` of its groups on average (not exactly, in a small class), and
    the splits' windows overlap only where the fraction exceeds 1 / splits."""
    result = []
    for k in range(splits):
        start = k / splits
        split = {}
        for class_name, videos in classes.items():
            side = {v.group: (group_position(seed, class_name, v.group) - start) % 1.0 < test_fraction
                    for v in videos}
            split[class_name] = ([v for v in videos if not side[v.group]], [v for v in videos if side[v.group]])
        result.append(split)
    return result


def write_split_lists(out_dir: Path, splits: list[dict[str, tuple[list[FolderVideo], list[FolderVideo]]]]) -> None:
    """classInd.txt, trainlistNN.txt and testlistNN.txt (UCF101's format) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = list(splits[0])
    with atomic_write(out_dir / "classInd.txt", "w") as f:
        f.write("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    for k, split in enumerate(splits, start=1):
        with atomic_write(out_dir / f"trainlist{k:02d}.txt", "w") as f:
            f.write("".join(f"{c}/{v.filename} {i + 1}\n" for i, c in enumerate(classes) for v in split[c][0]))
        with atomic_write(out_dir / f"testlist{k:02d}.txt", "w") as f:
            f.write("".join(f"{c}/{v.filename}\n" for c in classes for v in split[c][1]))


def one_sided(splits: list[dict[str, tuple[list[FolderVideo], list[FolderVideo]]]]) -> list[str]:
    """Classes with all their videos on one side in some split (too few videos or groups for
    the fraction, or a hash that put them so): '<class> (split K: no test videos)'."""
    out = []
    for k, split in enumerate(splits, start=1):
        for name, (train, test) in split.items():
            if not train or not test:
                out.append(f"{name} (split {k}: no {'training' if not train else 'test'} videos)")
    return out
