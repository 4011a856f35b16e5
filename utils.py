"""Small shared helpers with no torch dependency: user-facing errors, atomic file writes,
CSV logs, and per-video score files (read safely, written atomically)."""
from __future__ import annotations

import contextlib
import csv
import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np


class UserError(Exception):
    """An error the user can fix. Scripts print its message and exit, without a traceback."""


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's main(); a UserError becomes one message on stderr and exit status 2,
    an int returned by main() becomes the exit status."""
    import sys
    try:
        result = main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if isinstance(result, int):
        sys.exit(result)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.
    A crash or a full disk never leaves a truncated file where a good one was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class CsvLogger:
    """Append one row a call to a CSV file, writing the header when the file is new."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def log(self, row: Mapping[str, object]) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def truncate_after(self, epoch: int) -> None:
        """Drop rows of epochs after ``epoch`` (used on resume, so a log never has two rows
        for one epoch)."""
        rows = [r for r in self.read() if int(r["epoch"]) <= epoch]
        if not self.path.exists():
            return
        with atomic_write(self.path, "w") as f:
            if rows:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)


# ---------------------------------------------------------------------------------------
# Per-video score files: {video_key: float array of num_classes}
# ---------------------------------------------------------------------------------------

class ScoreFileError(UserError):
    """A score file that cannot be read or does not fit the others."""


_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"), ("builtins", "dict"),
    ("_codecs", "encode"), ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
    ("__builtin__", "object"), ("builtins", "object"),
}


class _ScoreUnpickler(pickle.Unpickler):
    """Admit only what a score file needs: dicts, strings, numbers and numpy arrays.
    Any other global (a function, a class with side effects) is refused, so a score file
    from someone else cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = module.replace("numpy.core", "numpy._core", 1)  # numpy >= 2 naming
        if module == "copy_reg":
            module = "copyreg"
        if (module, name) in (("copyreg", "_reconstructor"),):
            return _safe_reconstructor
        return super().find_class(module, name)


def _safe_reconstructor(cls, base, state):
    # Python 2 pickles plain objects through copy_reg._reconstructor; only dict is allowed.
    if cls is not dict and cls is not object:
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")
    return dict() if state is None else dict(state)


def load_scores(path: str | Path) -> dict[str, np.ndarray]:
    """Load a per-video score file (.pickle from this repo, the reference repo, Python 2 or 3,
    any protocol; or .npz with arrays ``videos`` and ``scores``)."""
    path = Path(path)
    if not path.is_file():
        raise ScoreFileError(f"score file not found: {path}\n"
                             f"  fix: run the stream with --evaluate to write it, or pass its path")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                names, scores = data["videos"], data["scores"]
            raw = dict(zip((str(n) for n in names), scores))
        else:
            with open(path, "rb") as f:
                raw = _ScoreUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, OSError, AttributeError,
            ImportError, IndexError, TypeError) as err:
        raise ScoreFileError(f"{path}: not a readable score file ({err})\n"
                             f"  expected a pickle of {{video_name: array of class scores}} "
                             f"or an .npz with 'videos' and 'scores'") from None
    if not isinstance(raw, dict) or not raw:
        raise ScoreFileError(f"{path}: expected a non-empty dict {{video_name: scores}}, "
                             f"got {type(raw).__name__}")
    scores: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        if isinstance(name, bytes):
            name = name.decode("latin1")
        array = np.asarray(value, dtype=np.float64).reshape(-1)
        if not isinstance(name, str) or array.size == 0:
            raise ScoreFileError(f"{path}: entry {name!r} is not a video name with a score vector")
        scores[name] = array
    lengths = {a.size for a in scores.values()}
    if len(lengths) != 1:
        raise ScoreFileError(f"{path}: score vectors have different lengths {sorted(lengths)}")
    return scores


def save_scores(path: str | Path, scores: Mapping[str, np.ndarray]) -> None:
    """Write per-video scores atomically: pickle (the reference's format) or .npz by suffix."""
    path = Path(path)
    names = list(scores)
    matrix = np.stack([np.asarray(scores[n], dtype=np.float32) for n in names])
    with atomic_write(path) as f:
        if path.suffix == ".npz":
            np.savez(f, videos=np.array(names), scores=matrix)
        else:
            # protocol 2 so that the reference's Python 2 tooling reads our files too
            pickle.dump({n: matrix[i] for i, n in enumerate(names)}, f, protocol=2)
