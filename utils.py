"""Small shared helpers with no torch dependency: user-facing errors and the command-line
wrapper, optional imports, atomic file writes, folder checks and locks, CSV logs. Score files
are scorefiles.py's."""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Mapping


def default_workers() -> int:
    """Worker processes per loader or tool: the cores of this machine (or of this process's
    share of them under torchrun), at most 16, leaving one for the main process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(16, cores // local - 1))


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every command's --help: the description as written, each option's default after its help,
    once (not where the help already speaks of its default, nor for a default of None or False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})".strip()


class UserError(Exception):
    """An error the user can fix. Scripts print its message and exit, without a traceback."""


def optional_import(module: str, purpose: str):
    """``module``, one of the optional packages (requirements-extras.txt); when it is not
    installed, a UserError saying what needs it and how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise UserError(f"{purpose} needs the package {module}, which is not installed here ({err})\n"
                        f"  fix: pip install -r requirements-extras.txt (or pip install {module})") from None


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's main(); a UserError becomes its message on stderr and exit status 1
    (argparse's usage errors keep 2), an int returned by main() becomes the exit status."""
    import sys
    try:
        result = main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    if isinstance(result, int):
        sys.exit(result)


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask sets it, racing other threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file name beside ``path``, unique to this call (two processes writing one
    target never share it), for writers that need a name (OpenCV's video writer, ONNX): when
    the block ends without error it is renamed over ``path``, else removed. The file gets the
    permissions of a plain ``open`` (0666 less the umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX + path.suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file beside ``path`` (:func:`atomic_path`); on success fsync it and
    rename it over ``path``. A crash or a full disk never leaves a truncated file where a good
    one was."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed atomic writes left in ``folder``."""
    removed = []
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}*"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def check_writable_dir(folder: str | Path, what: str) -> None:
    """Fail now, naming the folder, if a file cannot be created in it (read-only, full, not a
    folder), rather than after an hour of work."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{what} {folder} is not a folder\n  fix: pass a folder")
    try:
        with tempfile.TemporaryFile(dir=folder) as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise UserError(f"cannot write to {what} {folder}: {err.strerror or err}\n  fix: pass a writable "
                        f"folder") from None


def hold_lock(folder: Path, lock_name: str, holder: str, other: str):
    """Take ``folder/lock_name`` exclusively (flock: released when the file closes or the process
    dies) and write who holds it; held by another process, a UserError names it: "``folder`` is in
    use by another ``holder`` (pid ...)", fix: wait or pass another ``other``. Returns the open file."""
    import fcntl
    import socket

    lock = open(folder / lock_name, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        owner = lock.read().strip() or f"another {holder}"
        lock.close()
        raise UserError(f"{folder} is in use by another {holder} ({owner})\n  fix: wait for it to finish, or pass "
                        f"another {other}") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on {socket.gethostname()}")
    lock.flush()
    return lock


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file, read in blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether writing ``a`` would replace ``b``: the same path, or the same existing file under
    another spelling or a hard link."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): no existing file can be replaced
        return False


def check_writable_file(path: str | Path, what: str) -> None:
    """Check before the work that ``path`` can be written (its folder exists and is writable)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder\n  fix: pass a file name")
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"{what} {path}: the folder {parent} does not exist\n  fix: create it or pass another path")
    check_writable_dir(parent, f"{what}'s folder")


class CsvLogger:
    """Append one row a call to a CSV file, writing the header when the file is new."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def log(self, row: Mapping[str, object]) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not new:
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), [])
            if header != list(row):  # a log of another version (another column): rewritten with both
                rows = self.read()
                columns = header + [name for name in row if name not in header]
                with atomic_write(self.path, "w") as f:
                    writer = csv.DictWriter(f, fieldnames=columns, restval="")
                    writer.writeheader()
                    writer.writerows([*rows, dict(row)])
                return
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
