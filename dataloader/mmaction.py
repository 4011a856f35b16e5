"""mmaction2's annotation lists (``--train-list``/``--test-list``): rawframe lists
"<frame_dir> <total_frames> <label>" or video lists "<video path> <label>", 0-based labels;
class names from ``--class-names`` (one a line) or the first path component."""
from __future__ import annotations

import warnings
from pathlib import Path

from guards import is_absolute

from .records import GROUP_RE, Split, SplitError, VideoRecord, inside_list_root, list_lines, plain_list_name


def _read_mmaction_list(path: Path, allow_absolute: bool = False) -> list[tuple[int, str, int, int | None]]:
    """(line number, relative path, label, listed frames or None) of a rawframe or video list."""
    rows, kinds = [], set()
    for lineno, line in list_lines(path):
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
        rows.append((lineno, inside_list_root(item, f"{path}:{lineno}", allow_absolute), int(label), frames))
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
                     if is_absolute(item)), None)
    if absolute and class_names is None:
        raise SplitError(f"{absolute[0]}:{absolute[1]}: an absolute path names no class (its first folder is "
                         f"outside the data root)\n  fix: pass --class-names FILE (one name a line, in label order)")
    if class_names is not None:
        classes = [plain_list_name(name, f"{class_names}:{lineno}", "class name") for lineno, name in list_lines(class_names)]
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
            stem = plain_list_name(relative.rsplit("/", 1)[-1], f"{path}:{lineno}")
            if stem in seen:
                raise SplitError(f"{path}:{lineno}: video {stem} is listed twice (first on line {seen[stem]})")
            seen[stem] = lineno
            match = GROUP_RE.search(stem)
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
