"""Parse UCF101-style split lists: classInd.txt, trainlistNN.txt, testlistNN.txt.

Format (UCF101's own, also used for converted HMDB51 or custom data sets):
    classInd.txt      "1 ApplyEyeMakeup"                       (1-based index, class folder)
    trainlist01.txt   "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    testlist01.txt    "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi" (label from the folder)
CRLF or LF line endings and blank lines are accepted. Labels are returned 0-based.
No torch here: this module only reads text.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from utils import UserError

DEFAULT_SPLIT_DIR = Path(__file__).resolve().parent.parent / "splits" / "ucf101"
_GROUP_RE = re.compile(r"_(g\d+)_c\d+$")


class SplitError(UserError):
    """A split list that cannot be parsed; the message names file and line."""


@dataclass(frozen=True)
class VideoRecord:
    """One video of a split list.

    name:  the file stem as the list writes it, e.g. ``v_HandStandPushups_g01_c01``.
    key:   the name in score files (the reference repo's convention): no ``v_`` prefix and the
           class part spelled as the class folder, e.g. ``HandstandPushups_g01_c01``.
    group: UCF101's ``gXX`` (same actor/scene), or the key when the name has none.
    """

    name: str
    key: str
    class_name: str
    label: int
    group: str

    def folder_candidates(self) -> list[str]:
        """Frame-folder names this video may have on disk (UCF101 extractions differ)."""
        names = [self.name]
        if self.name.startswith("v_"):
            rest = self.name[2:].split("_", 1)
            if len(rest) == 2 and rest[0] != self.class_name:
                names.append(f"v_{self.class_name}_{rest[1]}")
        return names


def _lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise SplitError(f"split file not found: {path}\n"
                         f"  fix: pass --split-dir pointing at a folder with classInd.txt, "
                         f"trainlistNN.txt and testlistNN.txt")
    # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first line
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_class_index(path: Path) -> list[str]:
    """Read classInd.txt and return class names ordered by their 0-based label."""
    classes: dict[int, str] = {}
    for lineno, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise SplitError(f"{path}:{lineno}: expected '<index> <ClassName>', got {line!r}")
        index, name = int(parts[0]), parts[1]
        if index in classes or name in classes.values():
            raise SplitError(f"{path}:{lineno}: class {name!r} (index {index}) is listed twice")
        classes[index] = name
    if not classes:
        raise SplitError(f"{path}: no classes listed")
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise SplitError(f"{path}: class indices must run 1..{len(classes)} without gaps "
                         f"(classInd is 1-based)")
    return [classes[i] for i in range(1, len(classes) + 1)]


def _make_record(class_name: str, label: int, stem: str) -> VideoRecord:
    key = stem[2:] if stem.startswith("v_") else stem
    head, sep, tail = key.partition("_")
    if sep and head.lower() == class_name.lower():
        key = f"{class_name}_{tail}"
    match = _GROUP_RE.search(stem)
    return VideoRecord(name=stem, key=key, class_name=class_name, label=label,
                       group=match.group(1) if match else key)


def read_video_list(path: Path, classes: list[str]) -> list[VideoRecord]:
    """Read a train or test list. The label comes from the class folder; a train list's
    1-based label column, when present, must agree with it."""
    label_of = {name: i for i, name in enumerate(classes)}
    label_of_lower = {name.lower(): i for i, name in enumerate(classes)}
    records: list[VideoRecord] = []
    seen: dict[str, int] = {}
    for lineno, line in _lines(path):
        parts = line.split()
        if len(parts) not in (1, 2) or "/" not in parts[0]:
            raise SplitError(f"{path}:{lineno}: expected 'ClassName/video.avi [label]', got {line!r}")
        folder, _, filename = parts[0].rpartition("/")
        folder = folder.rsplit("/", 1)[-1]
        stem = filename.rsplit(".", 1)[0] if "." in filename else filename
        if not stem:
            raise SplitError(f"{path}:{lineno}: no video name in {line!r}")
        label = label_of.get(folder, label_of_lower.get(folder.lower()))
        if label is None:
            raise SplitError(f"{path}:{lineno}: unknown class {folder!r} "
                             f"(not in classInd.txt of the same folder)")
        if len(parts) == 2:
            if not parts[1].isdigit():
                raise SplitError(f"{path}:{lineno}: label {parts[1]!r} is not a number")
            if int(parts[1]) - 1 != label:
                raise SplitError(f"{path}:{lineno}: label {parts[1]} disagrees with class folder "
                                 f"{folder!r}, which is {label + 1} in classInd.txt")
        if stem in seen:
            raise SplitError(f"{path}:{lineno}: video {stem} is listed twice "
                             f"(first on line {seen[stem]})")
        seen[stem] = lineno
        records.append(_make_record(classes[label], label, stem))
    return records


@dataclass(frozen=True)
class Split:
    """A parsed split: class names and the train and test videos."""

    classes: list[str]
    train: list[VideoRecord]
    test: list[VideoRecord]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_split(split_dir: str | Path = DEFAULT_SPLIT_DIR, split: int = 1) -> Split:
    """Load split ``split`` (1, 2, 3, ...) from a folder in UCF101's list format."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise SplitError(f"split folder not found: {split_dir}\n"
                         f"  fix: --split-dir must name a folder with classInd.txt, "
                         f"trainlistNN.txt and testlistNN.txt")
    classes = read_class_index(split_dir / "classInd.txt")
    train = read_video_list(split_dir / f"trainlist{split:02d}.txt", classes)
    test = read_video_list(split_dir / f"testlist{split:02d}.txt", classes)
    overlap = {r.name for r in train} & {r.name for r in test}
    if overlap:  # legitimate for benchmarks, a leak anywhere else: say it loudly
        warnings.warn(f"{split_dir}: {len(overlap)} videos are in both trainlist{split:02d} and "
                      f"testlist{split:02d}, e.g. {sorted(overlap)[0]}: test results will be optimistic",
                      stacklevel=2)
    return Split(classes=classes, train=train, test=test)


def holdout_groups(records: list[VideoRecord], num_groups: int) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """Split training records into (train, validation) by whole groups, so that no actor or
    scene (UCF101's gXX) is on both sides. The validation set takes the ``num_groups``
    highest-numbered groups, which is deterministic and spreads over every class."""
    groups = sorted({r.group for r in records})
    if not 0 < num_groups < len(groups):
        raise UserError(f"--holdout-groups must be between 1 and {len(groups) - 1} "
                        f"(the training list has {len(groups)} groups), got {num_groups}")
    held = set(groups[-num_groups:])
    return [r for r in records if r.group not in held], [r for r in records if r.group in held]
