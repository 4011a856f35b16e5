"""What every split format is read into: :class:`VideoRecord` (one video of a list) and
:class:`Split` (class names, train and test videos), the line reader they share, and the
checks that keep listed names under their root (guards.py). No torch here."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from guards import inside_root, plain_name
from utils import UserError

GROUP_RE = re.compile(r"_(g\d+)_c\d+$")  # UCF101's group (one actor) in a video name


class SplitError(UserError):
    """A split list that cannot be parsed; the message names file and line."""


def inside_list_root(item: str, where: str, allow_absolute: bool = False) -> str:
    return inside_root(item, where, allow_absolute, SplitError)


def plain_list_name(name: str, where: str, what: str = "video name") -> str:
    return plain_name(name, where, what, SplitError)


@dataclass(frozen=True)
class VideoRecord:
    """One video of a split list.

    name:  the file stem as the list writes it, e.g. ``v_HandStandPushups_g01_c01``.
    key:   the name in score files (the reference repo's convention): no ``v_`` prefix and the
           class part spelled as the class folder, e.g. ``HandstandPushups_g01_c01``.
    group: UCF101's ``gXX`` (same actor/scene), HMDB51's source film, or the key when the
           name gives none (one group per video).
    path:  the list's relative path without extension, when it has folders (mmaction2 lists).
    listed_frames: the frame count a rawframe list states (checked against the disk).
    """

    name: str
    key: str
    class_name: str
    label: int
    group: str
    path: str = ""
    listed_frames: int | None = None

    def __post_init__(self) -> None:
        # the readers refuse these naming the file and line; this is the backstop for any other maker
        plain_list_name(self.name, "a split list")
        plain_list_name(self.class_name, "a split list", "class name")
        if self.path:
            inside_list_root(self.path, "a split list", allow_absolute=True)

    def folder_candidates(self) -> list[str]:
        """Frame-folder names this video may have on disk (UCF101 extractions differ)."""
        names = [self.name]
        if self.name.startswith("v_"):
            rest = self.name[2:].split("_", 1)
            if len(rest) == 2 and rest[0] != self.class_name:
                names.append(f"v_{self.class_name}_{rest[1]}")
        if self.path and self.path not in names:
            names.append(self.path)
        return names


def list_lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise SplitError(f"split file not found: {path}\n"
                         f"  fix: pass --split-dir pointing at a folder with classInd.txt, "
                         f"trainlistNN.txt and testlistNN.txt")
    # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first line
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


@dataclass(frozen=True)
class Split:
    """A parsed split: class names and the train and test videos."""

    classes: list[str]
    train: list[VideoRecord]
    test: list[VideoRecord]

    @property
    def num_classes(self) -> int:
        return len(self.classes)
