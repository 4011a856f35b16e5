"""The guarantees every command goes through, one mechanism each (docs/reliability.md):

- **Every number bounded**: :data:`BOUNDS` is the one table of what each number may be
  (finite, a range, an upper bound for what sizes memory or time). Every numeric flag's
  ``type=`` is one of its entries (``type=bound("epochs")``), and :func:`check_values` applies
  the same entries to the values a checkpoint, sidecar or exported record brings.
- **Inside the root**: :func:`inside_root` (a listed path) and :func:`plain_name` (a video or
  class name) are what every list reader passes its entries through.
- **Outputs never inputs**: parsers mark each path option as an input or an output
  (:func:`add_path`); :func:`check_io` compares all of a command's outputs with all of its
  inputs and with each other, before any work.

Atomic, collision-free writes are ``utils.atomic_write`` and ``utils.atomic_path``. No torch here.
"""
from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from utils import UserError, same_file

# --- every number bounded ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """What one number may be: ``kind`` (int or float), finite, within [low, high] (either end
    open when its flag says so). Called on a string, it is an argparse ``type``."""

    kind: type
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        what = "a whole number" if self.kind is int else "a number"
        return (f"{what} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not allowed (None when it is)."""
        numeric = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            return f"{value!r} is not {self.describe()}"
        if not math.isfinite(value):
            return f"{value} is not finite (must be {self.describe()})"
        outside = (value < self.low or (self.low_open and value == self.low)
                   or value > self.high or (self.high_open and value == self.high))
        shown = value if isinstance(value, int) else f"{value:g}"
        return f"{shown} is not {self.describe()}" if outside else None

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.describe()}") from None
        problem = self.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value


def _int(low: int, high: int) -> Bound:
    return Bound(int, low, high)


def _float(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Bound:
    return Bound(float, low, high, low_open, high_open)


MAX_TEST_FRAMES = 1000  # test positions a video or window: the reference reads 19, TSN 25
MAX_STACK_LENGTH = 64   # flow frames a stack (2L input channels): the literature uses 5 to 20
MAX_CLASSES = 100_000   # as score files (scorefiles.py)

# name -> bound; the parsers' numeric flags and the records' values of the same name
BOUNDS: dict[str, Bound] = {
    # data and test protocol
    "input_size": _int(8, 4096),
    "segments": _int(1, 64),
    "test_frames": _int(1, MAX_TEST_FRAMES),
    "test_crops": _int(1, 10),
    "crop_positions": _int(1, 13),
    "crop_scales": _float(0, 1, low_open=True),
    "stack_length": _int(1, MAX_STACK_LENGTH),
    "flow_mean": _float(-1000, 1000),
    "flow_std": _float(0, 1000, low_open=True),
    "split": _int(1, 100),
    "holdout_groups": _int(0, 1_000_000),
    "test_fraction": _float(0, 1, low_open=True, high_open=True),
    "splits": _int(1, 100),
    # frames and flow on disk
    "size": _int(0, 8192),
    "frame_size": _int(8, 8192),  # what a checkpoint was trained on: (height, width) of its frames
    "every": _int(1, 100_000),
    "quality": _int(1, 100),
    "jpeg_quality": _int(0, 100),
    "bound": _float(0, 1000, low_open=True),
    # model and optimisation
    "in_channels": _int(1, 2 * MAX_STACK_LENGTH),
    "num_classes": _int(1, MAX_CLASSES),
    "dropout": _float(0, 1, high_open=True),
    "epochs": _int(1, 100_000),
    "start_epoch": _int(0, 100_000),
    "batch_size": _int(1, 65_536),
    "test_batch_size": _int(1, 65_536),
    "lr": _float(0, 100, low_open=True),
    "momentum": _float(0, 1, high_open=True),
    "weight_decay": _float(0, 1),
    "lr_patience": _int(0, 100_000),
    "lr_step": _int(1, 100_000),
    "lr_milestones": _int(1, 100_000),
    "clip_grad_norm": _float(0, 1e6, low_open=True),
    "seed": _int(0, 2**32 - 1),
    # processes and batches (speed only)
    "workers": _int(0, 256),          # loader worker processes (0: in the main process)
    "processes": _int(1, 256),        # a tool's processes
    "flow_batch": _int(1, 65_536),    # frame pairs a launch
    # prediction and fusion
    "fusion_weight": _float(0, 1e6),
    "topk": _int(1, MAX_CLASSES),
    "seconds": _float(0, 1e7, low_open=True),
    "reconnect": _int(0, 1000),       # predict.py --live: reopening a stalled stream
    "upload_mb": _float(0, 100_000, low_open=True),  # app.py: the largest video accepted
    "port": _int(1, 65535),
    "window_frames": _int(1, MAX_TEST_FRAMES),
    "probability": _float(0, 1),
    # generated data and benchmarks
    "video_frames": _int(2, 100_000),
    "videos_per_class": _int(1, 100_000),
    "count": _int(1, 1_000_000),
    "print_freq": _int(0, 1_000_000),
    "val_interval": _int(1, 100_000),
}


def frame_size(size: list[int], flag: str = "--size", keep: bool = True) -> tuple[int, int] | None:
    """``--size H W`` as (H, W); ``0 0`` (where ``keep``) is None: the video's own size. A single
    0, or a side under 8 pixels, is a UserError."""
    if keep and list(size) == [0, 0]:
        return None
    if min(size) < 8:
        raise UserError(f"{flag} {' '.join(map(str, size))}: both sides must be at least 8 pixels"
                        + (", or 0 0 for the video's own size" if keep else ""))
    return int(size[0]), int(size[1])


def bound(name: str) -> Bound:
    """The argparse ``type`` of a numeric flag: its entry in :data:`BOUNDS`."""
    return BOUNDS[name]


def value_problems(values: Mapping[str, object], names: Iterable[str] | None = None,
                   bounds: Mapping[str, Bound] = BOUNDS) -> list[str]:
    """What is wrong with the values of ``values`` (a checkpoint's settings, a record) whose names
    have a bound in ``bounds`` (all of them, or ``names``): lists element by element; None means
    "the default" and passes."""
    problems = []
    for name in sorted(bounds.keys() & values.keys()) if names is None else names:
        value = values.get(name)
        if value is None or name not in bounds:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            problem = bounds[name].problem(item)
            if problem:
                problems.append(f"{name} {problem}")
                break
    return problems


def check_options(parser: argparse.ArgumentParser, values: Mapping[str, object]) -> None:
    """Values set on a parsed namespace by code rather than by the command line (a library's
    keyword arguments) against the bounds of the parser's options of those names."""
    problems = value_problems(values, bounds={a.dest: a.type for a in parser._actions if isinstance(a.type, Bound)})
    if problems:
        raise UserError("; ".join(problems))


def check_values(values: Mapping[str, object], where: str, names: Iterable[str] | None = None) -> None:
    """:func:`value_problems` as one UserError naming ``where``."""
    problems = value_problems(values, names)
    if problems:
        raise UserError(f"{where} holds values no run can have: {'; '.join(problems)}\n  fix: the file was edited, "
                        f"damaged or written by another program; use the file this project wrote")


# --- inside the root -------------------------------------------------------------------------------

def is_absolute(item: str) -> bool:
    """A POSIX, UNC or Windows drive path."""
    return item.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", item) is not None


def inside_root(item: str, where: str, allow_absolute: bool = False, error: type[UserError] = UserError) -> str:
    """``item``, a path a list names relative to its root (the data, frame or video folder),
    without empty or '.' parts, if it stays under that root: a '..' part (between '/' or '\\'),
    no name at all, or an absolute path (unless ``allow_absolute``) is an ``error`` naming
    ``where`` (file:line)."""
    parts = [part for part in item.split("/") if part not in ("", ".")]
    absolute = is_absolute(item)
    if ".." in re.split(r"[/\\]", item) or not parts or (absolute and not allow_absolute):
        raise error(f"{where}: {item!r} leaves the data root (an absolute path, '..' or no name)\n"
                    f"  fix: write paths relative to the folder the command is given"
                    + ("" if ".." in item or not parts else ", or pass --allow-absolute-paths"))
    return ("/" if item.startswith("/") else "") + "/".join(parts)


def plain_name(name: str, where: str, what: str = "video name", error: type[UserError] = UserError) -> str:
    """``name`` if it can name one folder under a root: not empty, '.' or '..', no '/' (nor a
    '..' between backslashes, a Windows list's parent)."""
    if name in ("", ".", "..") or "/" in name or "\0" in name or ".." in name.split("\\"):
        raise error(f"{where}: {what} {name!r} cannot name a folder under the data root\n"
                    f"  fix: give every video and class a plain name")
    return name


# --- outputs never inputs ----------------------------------------------------------------------------

INPUT, OUTPUT = "input", "output"


VIDEO_FILES = ("*.avi", "*.mp4", "*.mkv", "*.mov", "*.webm", "*.mpg", "*.mpeg", "*.m4v")  # dataloader.video's
FRAME_FILES = ("*.jpg",)
LIST_FILES = ("*.txt",)


def add_path(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *flags: str, role: str,
             folder: bool = False, reads: tuple[str, ...] = (), **kwargs) -> argparse.Action:
    """``parser.add_argument`` for an option that names a file (or, ``folder``, a folder) the
    command reads (``role`` INPUT) or writes (OUTPUT); :func:`check_io` compares them. ``reads``:
    the files an input folder's command reads in it, at any depth (glob patterns of names):
    no output may be one of them."""
    action = parser.add_argument(*flags, **kwargs)
    action.role, action.folder, action.reads = role, folder, reads
    return action


def path_options(parser: argparse.ArgumentParser, role: str) -> list[argparse.Action]:
    """The options of ``parser`` that :func:`add_path` marked with ``role``."""
    return [a for a in parser._actions if getattr(a, "role", None) == role]


def _values(value: object) -> list[str]:
    if value is None or value is False:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def option_name(action: argparse.Action) -> str:
    """``--flag``; for a positional argument its metavar, or 'the <its name>'."""
    if action.option_strings:
        return action.option_strings[-1]
    return action.metavar if isinstance(action.metavar, str) else f"the {action.dest.replace('_', ' ')}"


def local_path(value: str) -> Path:
    """Where an input lies on this machine: a URL's file in torch.hub's cache, else the path."""
    if value.startswith(("https://", "http://")):
        from models.zoo import cached_file_of_url  # torch only where a URL is given
        return cached_file_of_url(value)
    if value.startswith("mmaction2-"):
        from models.zoo import ZOO_PRESETS, cached_file_of_url
        if value in ZOO_PRESETS:
            return cached_file_of_url(ZOO_PRESETS[value])
    return Path(value)


def check_io(parser: argparse.ArgumentParser, args: argparse.Namespace,
             inputs: Mapping[str, str | Path] | None = None, outputs: Mapping[str, str | Path] | None = None) -> None:
    """Refuse, before any work, an output that is one of the command's inputs (the same path,
    another spelling or a hard link of it, the cache file a URL resolves to) or another of its
    outputs. The parser's marked options are compared, and ``inputs``/``outputs`` add what
    they do not show ({label: path}: files a folder option expands to, computed names)."""
    read = {label: Path(path) for label, path in (inputs or {}).items()}
    read.update({f"{option_name(a)} {v}": local_path(v)
                 for a in path_options(parser, INPUT) for v in _values(getattr(args, a.dest, None))})
    written = {f"{option_name(a)} {v}": Path(v)
               for a in path_options(parser, OUTPUT) for v in _values(getattr(args, a.dest, None))}
    written.update({label: Path(path) for label, path in (outputs or {}).items()})
    folders = [(f"{option_name(a)} {v}", Path(v).resolve(), a.reads)
               for a in path_options(parser, INPUT) if a.reads for v in _values(getattr(args, a.dest, None))]
    seen: dict[str, Path] = {}
    for what, path in written.items():
        for other, existing in [*read.items(), *seen.items()]:
            if same_file(path, existing):
                raise UserError(f"{what} is {other}: writing it would replace it\n  fix: give another output path")
        for other, folder, patterns in folders:
            inside = path.resolve()
            if inside.is_relative_to(folder) and any(inside.relative_to(folder).match(p) for p in patterns):
                raise UserError(f"{what} is a file of {other}, which this command reads ({', '.join(patterns)}): "
                                f"writing it would replace or add an input\n  fix: write it outside {folder}")
        seen[what] = path
