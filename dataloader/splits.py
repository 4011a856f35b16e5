"""Parse split lists in three formats into one :class:`Split` (labels 0-based).

``ucf101`` (UCF101's own; also what tools/make_splits.py writes for your own videos):
    classInd.txt      "1 ApplyEyeMakeup"                       (1-based index, class folder)
    trainlist01.txt   "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    testlist01.txt    "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi" (label from the folder)
``hmdb51`` (HMDB51's official files): ``<class>_test_split<N>.txt``, 51 x 3 files, each line
    "<video>.avi <0|1|2>" (1 train, 2 test, 0 unused in split N); class indices follow the
    sorted class names; a video's group is its source film (the name before ``_<class>_``).
``mmaction`` (mmaction2 annotation lists, ``--train-list``/``--test-list``): rawframe lists
    "<frame_dir> <total_frames> <label>" or video lists "<video path> <label>", 0-based labels;
    class names from ``--class-names`` (one a line) or the first path component.
CRLF or LF line endings, a byte-order mark and blank lines are accepted. The format is
detected from the files when not given. No torch here: this module only reads text.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from guards import INPUT, LIST_FILES, add_path, bound, inside_root, plain_name
from utils import UserError

DEFAULT_SPLIT_DIR = Path(__file__).resolve().parent.parent / "splits" / "ucf101"
SPLIT_FORMATS = ("ucf101", "hmdb51", "mmaction")
_GROUP_RE = re.compile(r"_(g\d+)_c\d+$")
_HMDB_FILE_RE = re.compile(r"^(?P<cls>.+)_test_split(?P<split>\d+)\.txt$")


class SplitError(UserError):
    """A split list that cannot be parsed; the message names file and line."""


def _inside_root(item: str, where: str, allow_absolute: bool = False) -> str:
    return inside_root(item, where, allow_absolute, SplitError)


def _plain_name(name: str, where: str, what: str = "video name") -> str:
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
        _plain_name(self.name, "a split list")
        _plain_name(self.class_name, "a split list", "class name")
        if self.path:
            _inside_root(self.path, "a split list", allow_absolute=True)

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
        if len(parts) != 2 or not parts[0].isdecimal():
            raise SplitError(f"{path}:{lineno}: expected '<index> <ClassName>', got {line!r}")
        index, name = int(parts[0]), _plain_name(parts[1], f"{path}:{lineno}", "class name")
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
        where = f"{path}:{lineno}"
        folder, _, filename = _inside_root(parts[0], where).rpartition("/")
        folder = folder.rsplit("/", 1)[-1]
        stem = _plain_name(filename.rsplit(".", 1)[0] if "." in filename else filename, where)
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


@dataclass(frozen=True)
class Split:
    """A parsed split: class names and the train and test videos."""

    classes: list[str]
    train: list[VideoRecord]
    test: list[VideoRecord]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_ucf101(split_dir: Path, split: int) -> Split:
    """UCF101's classInd.txt, trainlistNN.txt and testlistNN.txt."""
    classes = read_class_index(split_dir / "classInd.txt")
    train = read_video_list(split_dir / f"trainlist{split:02d}.txt", classes)
    test = read_video_list(split_dir / f"testlist{split:02d}.txt", classes)
    return Split(classes=classes, train=train, test=test)


# --- HMDB51 ----------------------------------------------------------------------------------

def hmdb51_film(stem: str, class_name: str) -> str:
    """HMDB51's source film: the part of ``<film>_<class>_<attributes>_<n>`` before the class
    (clips of one film must not straddle train and validation); the name itself otherwise."""
    at = stem.rfind(f"_{class_name}_")
    return stem[:at] if at > 0 else stem


def read_hmdb51(split_dir: Path, split: int) -> Split:
    """HMDB51's official ``<class>_test_split<N>.txt`` files (51 classes x 3 splits)."""
    files, any_split = {}, set()
    for path in sorted(split_dir.iterdir()):
        match = _HMDB_FILE_RE.match(path.name)
        if match:
            any_split.add(match["cls"])
            if int(match["split"]) == split:
                files[match["cls"]] = path
    if not files:
        raise SplitError(f"{split_dir}: no HMDB51 split files <class>_test_split{split}.txt\n"
                         f"  fix: pass the folder of HMDB51's testTrainMulti_7030_splits and a --split it has")
    lacking = sorted(any_split - set(files))
    if lacking:  # reading on would drop these classes and renumber the others
        raise SplitError(f"{split_dir}: {len(lacking)} classes have split files but none for split {split}: "
                         f"{', '.join(f'{c}_test_split{split}.txt' for c in lacking[:5])}"
                         f"{' ...' if len(lacking) > 5 else ''}\n  fix: restore the missing files")
    classes = sorted(_plain_name(name, str(files[name]), "class name") for name in files)
    train, test = [], []
    seen: dict[str, str] = {}
    for label, class_name in enumerate(classes):
        path = files[class_name]
        for lineno, line in _lines(path):
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise SplitError(f"{path}:{lineno}: expected '<video>.avi <0|1|2>', got {line!r}")
            filename, status = parts
            if status not in ("0", "1", "2"):
                raise SplitError(f"{path}:{lineno}: status {status!r} is not 0 (unused), 1 (train) or 2 (test)")
            stem = _plain_name(filename.rsplit(".", 1)[0] if "." in filename else filename, f"{path}:{lineno}")
            if stem in seen:
                raise SplitError(f"{path}:{lineno}: video {stem} is also listed at {seen[stem]}\n"
                                 f"  fix: a video belongs to one class file, once")
            seen[stem] = f"{path.name}:{lineno}"
            if status == "0":
                continue
            record = VideoRecord(name=stem, key=stem, class_name=class_name, label=label,
                                 group=hmdb51_film(stem, class_name))
            (train if status == "1" else test).append(record)
    return Split(classes=classes, train=train, test=test)


# --- mmaction2 -------------------------------------------------------------------------------

def _is_absolute(item: str) -> bool:
    return item.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", item) is not None


def _read_mmaction_list(path: Path, allow_absolute: bool = False) -> list[tuple[int, str, int, int | None]]:
    """(line number, relative path, label, listed frames or None) of a rawframe or video list."""
    rows, kinds = [], set()
    for lineno, line in _lines(path):
        parts = line.split()
        if len(parts) == 3 and parts[1].isdecimal():
            kind, item, frames, label = "rawframes", parts[0], int(parts[1]), parts[2]
        elif len(parts) == 2:
            kind, item, frames, label = "videos", parts[0], None, parts[1]
        else:
            raise SplitError(f"{path}:{lineno}: expected '<frame_dir> <total_frames> <label>' (rawframes) or "
                             f"'<video> <label>' (videos), got {line!r}")
        if not label.isdecimal():
            raise SplitError(f"{path}:{lineno}: label {label!r} is not a number (0-based)")
        kinds.add(kind)
        if len(kinds) > 1:
            raise SplitError(f"{path}:{lineno}: rawframe and video lines mixed in one list")
        rows.append((lineno, _inside_root(item, f"{path}:{lineno}", allow_absolute), int(label), frames))
    if not rows:
        raise SplitError(f"{path}: the list is empty")
    return rows


def read_mmaction(train_list: Path, test_list: Path, class_names: Path | None = None,
                  allow_absolute: bool = False) -> Split:
    """mmaction2 annotation lists; class names from a file or from the first path component
    (never from an absolute path's: ``allow_absolute`` lists need ``class_names``)."""
    lists = {what: (path, _read_mmaction_list(path, allow_absolute))
             for what, path in (("train", train_list), ("test", test_list))}
    absolute = next(((path, lineno) for path, rows in lists.values() for lineno, item, _, _ in rows
                     if _is_absolute(item)), None)
    if absolute and class_names is None:
        raise SplitError(f"{absolute[0]}:{absolute[1]}: an absolute path names no class (its first folder is "
                         f"outside the data root)\n  fix: pass --class-names FILE (one name a line, in label order)")
    if class_names is not None:
        classes = [_plain_name(name, f"{class_names}:{lineno}", "class name") for lineno, name in _lines(class_names)]
        if len(set(classes)) != len(classes):
            raise SplitError(f"{class_names}: a class name is listed twice")
    else:
        folders: dict[int, set[str]] = {}
        for _, rows in lists.values():
            for _, item, label, _ in rows:
                folders.setdefault(label, set()).add(item.split("/")[0] if "/" in item else f"class_{label}")
        clash = {label: names for label, names in folders.items() if len(names) > 1}
        if clash:
            label, names = min(clash.items())
            raise SplitError(f"{train_list}: label {label} has videos in the folders {sorted(names)}\n"
                             f"  fix: pass --class-names FILE (one class name a line, in label order)")
        classes = [next(iter(folders[i])) if i in folders else f"class_{i}" for i in range(max(folders) + 1)]
    out = {}
    for what, (path, rows) in lists.items():
        records = []
        seen: dict[str, int] = {}
        for lineno, item, label, frames in rows:
            if label >= len(classes):
                raise SplitError(f"{path}:{lineno}: label {label} is out of range: {len(classes)} classes "
                                 f"(labels 0..{len(classes) - 1}{' in ' + str(class_names) if class_names else ''})")
            # a video list names files (drop the extension), a rawframe list folders (keep dots)
            relative = item if frames is not None or "." not in item.rsplit("/", 1)[-1] else item.rsplit(".", 1)[0]
            stem = _plain_name(relative.rsplit("/", 1)[-1], f"{path}:{lineno}")
            if stem in seen:
                raise SplitError(f"{path}:{lineno}: video {stem} is listed twice (first on line {seen[stem]})")
            seen[stem] = lineno
            match = _GROUP_RE.search(stem)
            records.append(VideoRecord(name=stem, key=stem, class_name=classes[label], label=label,
                                       group=match.group(1) if match else stem,
                                       path=relative if relative != stem else "", listed_frames=frames))
        out[what] = records
    untrained = sorted({r.label for r in out["test"]} - {r.label for r in out["train"]})
    if untrained:
        shown = ", ".join(f"{classes[label]} ({sum(r.label == label for r in out['test'])} test videos)"
                          for label in untrained[:5])
        warnings.warn(f"{test_list}: {len(untrained)} test classes have no training videos in {train_list}, so no "
                      f"model can learn them: {shown}{' ...' if len(untrained) > 5 else ''}", stacklevel=2)
    return Split(classes=classes, train=out["train"], test=out["test"])


# --- any format ------------------------------------------------------------------------------

def detect_format(split_dir: Path) -> str:
    """ucf101 or hmdb51 from the files in ``split_dir``; a clear error when neither or both."""
    names = sorted(p.name for p in split_dir.iterdir()) if split_dir.is_dir() else []
    found = [fmt for fmt, present in (("ucf101", "classInd.txt" in names),
                                      ("hmdb51", any(_HMDB_FILE_RE.match(n) for n in names))) if present]
    if len(found) == 1:
        return found[0]
    if found:
        raise SplitError(f"{split_dir} holds both UCF101 lists (classInd.txt) and HMDB51 files (*_test_split*.txt)\n"
                         f"  fix: pass --split-format ucf101 or --split-format hmdb51")
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "") if names else "nothing"
    raise SplitError(f"cannot tell the split format of {split_dir} (it holds {shown})\n"
                     f"  fix: UCF101 lists (classInd.txt, trainlistNN.txt, testlistNN.txt), HMDB51 files "
                     f"(<class>_test_splitN.txt), or mmaction2 lists with --train-list/--test-list; "
                     f"tools/make_splits.py writes lists for videos in class folders")


def load_split(split_dir: str | Path = DEFAULT_SPLIT_DIR, split: int = 1, split_format: str | None = None,
               train_list: str | Path | None = None, test_list: str | Path | None = None,
               class_names: str | Path | None = None, allow_absolute: bool = False) -> Split:
    """Load split ``split`` (1, 2, 3, ...) in any of :data:`SPLIT_FORMATS` (detected when None:
    mmaction2 when --train-list is given, else from the files in ``split_dir``)."""
    if split_format is None and (train_list or test_list):
        split_format = "mmaction"
    if split_format != "mmaction" and (train_list or test_list or class_names):
        raise SplitError(f"--train-list, --test-list and --class-names are mmaction2 lists, but --split-format is "
                         f"{split_format}\n  fix: drop --split-format (or pass mmaction), or drop the lists")
    if split_format == "mmaction":
        if not train_list or not test_list:
            raise SplitError("--split-format mmaction needs --train-list and --test-list (mmaction2 annotation files)")
        for path in (train_list, test_list, class_names):
            if path and not Path(path).is_file():
                raise SplitError(f"list file not found: {path}")
        split_obj = read_mmaction(Path(train_list), Path(test_list), Path(class_names) if class_names else None,
                                  allow_absolute)
        where = f"{train_list} and {test_list}"
    else:
        split_dir = Path(split_dir)
        if not split_dir.is_dir():
            raise SplitError(f"split folder not found: {split_dir}\n"
                             f"  fix: --split-dir must name a folder of split lists (UCF101's or HMDB51's)")
        split_format = split_format or detect_format(split_dir)
        if split_format not in SPLIT_FORMATS:
            raise SplitError(f"unknown --split-format {split_format!r}; choose one of {', '.join(SPLIT_FORMATS)}")
        split_obj = (read_ucf101 if split_format == "ucf101" else read_hmdb51)(split_dir, split)
        where = str(split_dir)
    overlap = {r.name for r in split_obj.train} & {r.name for r in split_obj.test}
    if overlap:  # legitimate for benchmarks, a leak anywhere else: say it loudly
        lists = (f"trainlist{split:02d} and testlist{split:02d}" if split_format == "ucf101"
                 else f"the training and the test list of split {split}")
        warnings.warn(f"{where}: {len(overlap)} videos are in both {lists}, e.g. {sorted(overlap)[0]}: test "
                      f"results will be optimistic", stacklevel=2)
    return split_obj


def listed_videos(list_file: str | Path, split_format: str | None = None, allow_absolute: bool = False) -> list[str]:
    """The video paths a list file names, relative to the video folder, for
    tools/extract_frames.py --list: a UCF101 list's or an mmaction2 video list's first
    column, or an HMDB51 split file's ``<class>/<video>`` lines used in that split (1 or 2)."""
    path = Path(list_file)
    if not path.is_file():
        raise SplitError(f"list file not found: {path}")
    hmdb = _HMDB_FILE_RE.match(path.name)
    split_format = split_format or ("hmdb51" if hmdb else "ucf101")
    if split_format == "hmdb51":
        if not hmdb:
            raise SplitError(f"{path}: an HMDB51 split file is named <class>_test_split<N>.txt")
        videos = []
        for lineno, line in _lines(path):
            parts = line.rsplit(None, 1)
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise SplitError(f"{path}:{lineno}: expected '<video>.avi <0|1|2>', got {line!r}")
            if parts[1] != "0":
                videos.append(f"{_plain_name(hmdb['cls'], str(path), 'class name')}/"
                              f"{_plain_name(parts[0], f'{path}:{lineno}')}")
        return videos
    rows = [(lineno, line.split()) for lineno, line in _lines(path)]
    if split_format == "mmaction" and rows and len(rows[0][1]) == 3:
        raise SplitError(f"{path}: a rawframe list names frame folders, not videos: its frames are extracted already")
    videos = [_inside_root(row[0], f"{path}:{lineno}", allow_absolute) for lineno, row in rows]
    for lineno, video in zip((lineno for lineno, _ in rows), videos):  # as the split readers name the video
        filename = video.rsplit("/", 1)[-1]
        _plain_name(filename.rsplit(".", 1)[0] if "." in filename else filename, f"{path}:{lineno}")
    return videos


def add_split_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The flags that choose a split, shared by every script that reads one."""
    add_path(parser, "--split-dir", role=INPUT, folder=True, reads=LIST_FILES, default=str(DEFAULT_SPLIT_DIR),
             help="folder of the split lists (UCF101's or HMDB51's)")
    parser.add_argument("--split", type=bound("split"), default=1, help="split number (1-3 for UCF101 and HMDB51)")
    parser.add_argument("--split-format", choices=SPLIT_FORMATS, default=None,
                        help="ucf101 | hmdb51 | mmaction (default: detected from --split-dir, or mmaction with "
                             "--train-list)")
    add_path(parser, "--train-list", role=INPUT, help="mmaction2 training annotation list (rawframes or videos)")
    add_path(parser, "--test-list", role=INPUT, help="mmaction2 test annotation list")
    add_path(parser, "--class-names", role=INPUT, help="mmaction2: class names, one a line in label order (default: "
                                                        "the first folder of each listed path)")
    parser.add_argument("--allow-absolute-paths", action="store_true",
                        help="mmaction2: let list entries be absolute paths outside the data root (then with "
                             "--class-names); '..' is never allowed")


def split_from_args(args: argparse.Namespace) -> Split:
    """The split that :func:`add_split_arguments`'s flags name."""
    return load_split(args.split_dir, args.split, args.split_format, args.train_list, args.test_list,
                      args.class_names, getattr(args, "allow_absolute_paths", False))


def holdout_groups(records: list[VideoRecord], num_groups: int) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """Split training records into (train, validation) by whole groups, so that no actor,
    scene or film is on both sides. UCF101's groups: the ``num_groups`` highest-numbered
    (deterministic, and each spans every class); other groups (films, single videos): the
    first ``num_groups`` in an order fixed by a hash of their names, which spreads them over
    the classes."""
    groups = sorted({r.group for r in records})
    if not 0 < num_groups < len(groups):
        raise UserError(f"--holdout-groups must be between 1 and {len(groups) - 1} "
                        f"(the training list has {len(groups)} groups), got {num_groups}")
    if all(re.fullmatch(r"g\d+", g) for g in groups):
        held = set(sorted(groups, key=lambda g: int(g[1:]))[-num_groups:])
    else:
        held = set(sorted(groups, key=lambda g: hashlib.sha1(g.encode()).hexdigest())[:num_groups])
    return [r for r in records if r.group not in held], [r for r in records if r.group in held]


def groups_are_videos(records: list[VideoRecord]) -> bool:
    """Whether the names gave no groups (every video its own group)."""
    return all(r.group == r.key for r in records)
