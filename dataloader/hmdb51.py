"""HMDB51's official split files: ``<class>_test_split<N>.txt``, 51 x 3 files, each line
"<video>.avi <0|1|2>" (1 train, 2 test, 0 unused in split N); class indices follow the sorted
class names; a video's group is its source film (the name before ``_<class>_``)."""
from __future__ import annotations

import re
from pathlib import Path

from .records import Split, SplitError, VideoRecord, list_lines, plain_list_name

HMDB_FILE_RE = re.compile(r"^(?P<cls>.+)_test_split(?P<split>\d+)\.txt$")


def hmdb51_film(stem: str, class_name: str) -> str:
    """HMDB51's source film: the part of ``<film>_<class>_<attributes>_<n>`` before the class
    (clips of one film must not straddle train and validation); the name itself otherwise."""
    at = stem.rfind(f"_{class_name}_")
    return stem[:at] if at > 0 else stem


def read_hmdb51(split_dir: Path, split: int) -> Split:
    """HMDB51's official ``<class>_test_split<N>.txt`` files (51 classes x 3 splits)."""
    files, any_split = {}, set()
    for path in sorted(split_dir.iterdir()):
        match = HMDB_FILE_RE.match(path.name)
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
    classes = sorted(plain_list_name(name, str(files[name]), "class name") for name in files)
    train, test = [], []
    seen: dict[str, str] = {}
    for label, class_name in enumerate(classes):
        path = files[class_name]
        for lineno, line in list_lines(path):
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise SplitError(f"{path}:{lineno}: expected '<video>.avi <0|1|2>', got {line!r}")
            filename, status = parts
            if status not in ("0", "1", "2"):
                raise SplitError(f"{path}:{lineno}: status {status!r} is not 0 (unused), 1 (train) or 2 (test)")
            stem = plain_list_name(filename.rsplit(".", 1)[0] if "." in filename else filename, f"{path}:{lineno}")
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
