"""UCF101's split lists (also what tools/make_splits.py writes for your own videos):
classInd.txt "1 ApplyEyeMakeup" (1-based), trainlistNN.txt "ApplyEyeMakeup/v_..._g08_c01.avi 1",
testlistNN.txt "ApplyEyeMakeup/v_..._g01_c01.avi" (the label from the folder)."""
from __future__ import annotations

from pathlib import Path

from .records import GROUP_RE, Split, SplitError, VideoRecord, inside_list_root, list_lines, plain_list_name


def read_class_index(path: Path) -> list[str]:
    """Read classInd.txt and return class names ordered by their 0-based label."""
    classes: dict[int, str] = {}
    for lineno, line in list_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdecimal():
            raise SplitError(f"{path}:{lineno}: expected '<index> <ClassName>', got {line!r}")
        index, name = int(parts[0]), plain_list_name(parts[1], f"{path}:{lineno}", "class name")
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
    match = GROUP_RE.search(stem)
    return VideoRecord(name=stem, key=key, class_name=class_name, label=label,
                       group=match.group(1) if match else key)


def read_video_list(path: Path, classes: list[str]) -> list[VideoRecord]:
    """Read a train or test list. The label comes from the class folder; a train list's
    1-based label column, when present, must agree with it."""
    label_of = {name: i for i, name in enumerate(classes)}
    label_of_lower = {name.lower(): i for i, name in enumerate(classes)}
    records: list[VideoRecord] = []
    seen: dict[str, int] = {}
    for lineno, line in list_lines(path):
        parts = line.split()
        if len(parts) not in (1, 2) or "/" not in parts[0]:
            raise SplitError(f"{path}:{lineno}: expected 'ClassName/video.avi [label]', got {line!r}")
        where = f"{path}:{lineno}"
        folder, _, filename = inside_list_root(parts[0], where).rpartition("/")
        folder = folder.rsplit("/", 1)[-1]
        stem = plain_list_name(filename.rsplit(".", 1)[0] if "." in filename else filename, where)
        label = label_of.get(folder, label_of_lower.get(folder.lower()))
        if label is None:
            raise SplitError(f"{path}:{lineno}: unknown class {folder!r} "
                             f"(not in classInd.txt of the same folder)")
        if len(parts) == 2:
            if not parts[1].isdecimal():
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


def read_ucf101(split_dir: Path, split: int) -> Split:
    """UCF101's classInd.txt, trainlistNN.txt and testlistNN.txt."""
    classes = read_class_index(split_dir / "classInd.txt")
    train = read_video_list(split_dir / f"trainlist{split:02d}.txt", classes)
    test = read_video_list(split_dir / f"testlist{split:02d}.txt", classes)
    return Split(classes=classes, train=train, test=test)
