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
from pathlib import Path

from guards import INPUT, LIST_FILES, add_path, bound
from utils import UserError

from .hmdb51 import HMDB_FILE_RE, hmdb51_film, read_hmdb51  # noqa: F401 (the formats' readers, by one name)
from .mmaction import read_mmaction
from .records import GROUP_RE, Split, SplitError, VideoRecord, inside_list_root, list_lines, plain_list_name  # noqa: F401
from .ucf101 import read_class_index, read_ucf101, read_video_list  # noqa: F401 (re-exported)

DEFAULT_SPLIT_DIR = Path(__file__).resolve().parent.parent / "splits" / "ucf101"
SPLIT_FORMATS = ("ucf101", "hmdb51", "mmaction")


def detect_format(split_dir: Path) -> str:
    """ucf101 or hmdb51 from the files in ``split_dir``; a clear error when neither or both."""
    names = sorted(p.name for p in split_dir.iterdir()) if split_dir.is_dir() else []
    found = [fmt for fmt, present in (("ucf101", "classInd.txt" in names),
                                      ("hmdb51", any(HMDB_FILE_RE.match(n) for n in names))) if present]
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
    hmdb = HMDB_FILE_RE.match(path.name)
    split_format = split_format or ("hmdb51" if hmdb else "ucf101")
    if split_format == "hmdb51":
        if not hmdb:
            raise SplitError(f"{path}: an HMDB51 split file is named <class>_test_split<N>.txt")
        videos = []
        for lineno, line in list_lines(path):
            parts = line.rsplit(None, 1)
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise SplitError(f"{path}:{lineno}: expected '<video>.avi <0|1|2>', got {line!r}")
            if parts[1] != "0":
                videos.append(f"{plain_list_name(hmdb['cls'], str(path), 'class name')}/"
                              f"{plain_list_name(parts[0], f'{path}:{lineno}')}")
        return videos
    rows = [(lineno, line.split()) for lineno, line in list_lines(path)]
    if split_format == "mmaction" and rows and len(rows[0][1]) == 3:
        raise SplitError(f"{path}: a rawframe list names frame folders, not videos: its frames are extracted already")
    videos = [inside_list_root(row[0], f"{path}:{lineno}", allow_absolute) for lineno, row in rows]
    for lineno, video in zip((lineno for lineno, _ in rows), videos):  # as the split readers name the video
        filename = video.rsplit("/", 1)[-1]
        plain_list_name(filename.rsplit(".", 1)[0] if "." in filename else filename, f"{path}:{lineno}")
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
