"""Parallel, resumable per-video jobs for the preprocessing tools.

A video's output is written into a hidden ``.partial-NAME`` folder beside its final folder
and renamed when complete, so that a finished video is exactly one whose final folder
exists: a stopped run, started again, skips those and redoes the half-written ones.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Callable, Iterable

from tqdm import tqdm

from utils import UserError, atomic_write, sha256_of


def partial_folder(final: Path) -> Path:
    return final.parent / f".partial-{final.name}"


# --- one writer a video, and what its output was made from --------------------------------------
# OUT_DIR/.jobs/NAME.lock: held (flock) by the one process writing NAME's output; a second one
# says who holds it and waits, then finds the output finished. OUT_DIR/.jobs/NAME.json: the stamp
# of what the output was made from (the source's size and content hash, the flags that shape
# it): an output whose stamp differs is made again. Outputs from before stamps existed count as
# finished; a stamp that cannot be read does not (its output is made again).

@contextlib.contextmanager
def claim(out_dir: Path, name: str):
    """Hold the exclusive right to write ``name``'s output in ``out_dir``; another holder is named
    (a stopped process keeps its claim until it is continued or ended) and waited for."""
    import socket

    folder = Path(out_dir) / ".jobs"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a+") as lock:
        try:  # released when the file closes, also when the holder dies
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            print(f"{name}: waiting for {holder}, which is writing its output in {out_dir} (a stopped process holds "
                  f"it until it is continued or ended)", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}")
        lock.flush()
        try:
            yield
        finally:  # the holder is named only while it holds the claim
            lock.seek(0)
            lock.truncate()


def _stamp_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / ".jobs" / f"{name}.json"


def read_stamp(out_dir: Path, name: str) -> dict | None:
    try:
        stamp = json.loads(_stamp_path(out_dir, name).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def write_stamp(out_dir: Path, name: str, stamp: dict) -> None:
    with atomic_write(_stamp_path(out_dir, name), "w") as f:
        json.dump(stamp, f, sort_keys=True)


def stamps_match(old: object, new: object) -> bool:
    """Whether two stamps say the output is made from the same things: a file by its size and
    content hash (its modification time only where an old stamp has no hash)."""
    if isinstance(old, dict) and isinstance(new, dict):
        if "bytes" in new:  # a file_stamp
            if old.get("bytes") != new["bytes"]:
                return False
            if "sha256" in old and "sha256" in new:
                return old["sha256"] == new["sha256"]
            return old.get("mtime_ns") == new.get("mtime_ns")
        return old.keys() == new.keys() and all(stamps_match(old[k], new[k]) for k in new)
    return old == new


def stale(out_dir: Path, name: str, stamp: dict) -> bool:
    """Whether a finished output was made from something else than ``stamp`` says. A stampless
    output, from before stamps, is taken as it is; a damaged stamp proves nothing: stale."""
    if not _stamp_path(out_dir, name).exists():
        return False
    written = read_stamp(out_dir, name)
    return written is None or not stamps_match(written, stamp)


def run_claimed(out_dir: str | Path, name: str, stamp: dict | Callable[[], dict], finished: Callable[[], bool],
                work: Callable[[], str | None]) -> str | None:
    """``work()`` as the one writer of ``name``'s output, unless it is ``finished()`` and made
    from what ``stamp`` says (or returns, computed once the claim is held); stamps what it
    wrote. Returns None or the reason it failed."""
    with claim(Path(out_dir), name):
        now = stamp() if callable(stamp) else stamp
        if finished() and not stale(Path(out_dir), name, now):
            if read_stamp(Path(out_dir), name) not in (None, now):  # the same content, touched: remember its time
                write_stamp(Path(out_dir), name, now)
            return None  # finished in an earlier run (or by another process meanwhile)
        error = work()
        if error is None:
            write_stamp(Path(out_dir), name, now)
        return error


def file_stamp(path: str | Path, known: dict | None = None) -> dict:
    """What identifies a source file: its size and content hash, and its modification time,
    which only tells whether ``known`` (the stamp written last time) still holds the hash, so
    that an unchanged file is not read again."""
    info = os.stat(path)
    if known and [known.get("bytes"), known.get("mtime_ns")] == [info.st_size, info.st_mtime_ns]:
        return dict(known)  # as hashed last time (an old stamp without a hash stays so)
    return {"bytes": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": sha256_of(path)}


def start_partial(final: Path) -> Path:
    """A fresh, empty partial folder for ``final`` (a leftover from a stopped run is removed)."""
    tmp = partial_folder(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def finish_partial(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def _init_worker() -> None:
    import cv2
    cv2.setNumThreads(1)  # one video per process; OpenCV's own threads would oversubscribe
    # Ctrl-C reaches the whole process group: the parent alone decides, and stops the pool
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while the jobs ran."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def run_jobs(jobs: list, work: Callable[[object], str | None], workers: int, desc: str) -> list[tuple[str, str]]:
    """Run ``work(job)`` for every job in parallel with a progress bar. ``work`` returns None
    on success or a reason on failure; returns [(job name, reason)] of the failures.

    SIGINT/SIGTERM stop the workers at once (finished videos stay finished, half-written ones
    are redone by the next run), print "interrupted; run again to resume" and exit 130/143."""
    failures = []
    workers = max(1, min(workers, len(jobs))) if jobs else 1
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    pool = None
    try:
        with tqdm(total=len(jobs), desc=desc, unit="video", dynamic_ncols=True) as progress:
            if workers == 1:
                _init_worker()
                signal.signal(signal.SIGINT, _raise_interrupted)
                results: Iterable = (_call(work, job) for job in jobs)
            else:
                # workers start with SIGINT ignored (kept across exec), so a Ctrl-C while they
                # are still importing does not print their tracebacks
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)
                signal.signal(signal.SIGINT, _raise_interrupted)
                results = pool.imap_unordered(_Call(work), jobs)
            for name, error in results:
                _record(name, error, failures, progress)
    except (Interrupted, KeyboardInterrupt) as stop:
        signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
        print(f"\ninterrupted ({signal.Signals(signum).name}); run again to resume", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum) from None
    finally:  # workers stop at once (they ignore SIGINT, so they print nothing meanwhile)
        if pool is not None:
            pool.terminate()
            pool.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return failures


class _Call:
    def __init__(self, work):
        self.work = work

    def __call__(self, job):
        return _call(self.work, job)


def _call(work, job) -> tuple[str, str | None]:
    try:
        return job.name, work(job)
    except Interrupted:
        raise
    except Exception as err:  # one bad video must not stop the others
        return job.name, f"{type(err).__name__}: {err}"


def _record(name, error, failures, progress) -> None:
    if error is not None:
        failures.append((name, error))
        progress.write(f"failed: {name}: {error}")
    progress.update()


def report(failures: list[tuple[str, str]], total: int, what: str) -> int:
    """Print the summary; the exit status is 1 when anything failed."""
    if failures:
        return _list_problems(f"{len(failures)} of {total} videos failed ({what}):", failures)
    print(f"{total} videos {what}")
    return 0


def _list_problems(header: str, problems: list[tuple[str, str]]) -> int:
    print(header)
    for name, why in sorted(problems):
        print(f"  {name}: {why}")
    return 1


def resolve_shard(option: str | None, environ: dict | None = None) -> tuple[int, int]:
    """(K, N) of this process: ``--shard K/N`` (K 0-based), else torchrun's RANK/WORLD_SIZE,
    else a Slurm job array's task id among SLURM_ARRAY_TASK_COUNT ids (MIN, MIN + STEP, ...,
    MAX), else (0, 1). Values that cannot be a shard are refused, never silently mapped."""

    env = os.environ if environ is None else environ
    if option:
        k, sep, n = option.partition("/")
        if not (sep and k.isdecimal() and n.isdecimal() and 0 <= int(k) < int(n)):
            raise UserError(f"--shard wants K/N with 0 <= K < N (e.g. 0/4), got {option!r}")
        return int(k), int(n)

    def number(name: str, default: int | None = None) -> int:
        value = env.get(name)
        if value is None and default is not None:
            return default
        if value is None or not value.strip().isdecimal():
            raise UserError(f"the environment variable {name}={value!r} is not a whole number 0 or more\n"
                            f"  fix: unset it, or pass --shard K/N")
        return int(value)

    if "RANK" in env and "WORLD_SIZE" in env:
        k, n = number("RANK"), number("WORLD_SIZE")
        if not k < n:
            raise UserError(f"RANK={k} with WORLD_SIZE={n}: a rank must be below the world size\n"
                            f"  fix: start the processes with torchrun, or pass --shard K/N")
        return k, n
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        task, count = number("SLURM_ARRAY_TASK_ID"), number("SLURM_ARRAY_TASK_COUNT")
        first, step = number("SLURM_ARRAY_TASK_MIN", 0), number("SLURM_ARRAY_TASK_STEP", 1)
        last = number("SLURM_ARRAY_TASK_MAX", first + step * (count - 1))
        evenly_spaced = count >= 1 and step >= 1 and last - first == step * (count - 1)
        k = (task - first) // step if evenly_spaced else -1
        if not (evenly_spaced and (task - first) % step == 0 and 0 <= k < count):
            raise UserError(f"Slurm array task {task} of {count} (ids {first}..{last} step {step}): the task ids are "
                            f"not MIN, MIN+STEP, ..., MAX, so they cannot name {count} shards that cover every "
                            f"video\n  fix: use an array of consecutive ids (--array=0-{max(count - 1, 0)}), or "
                            f"pass --shard K/N")
        return k, count
    return 0, 1


def check_unique_names(jobs: list, what: str) -> None:
    """Jobs write one folder each, named after their video's file name: two videos with one name
    would write one folder, so they are refused (naming them) before any work."""
    names = [job.name for job in jobs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserError(f"two videos have the same file name ({', '.join(twice[:3])}); {what} folders are named "
                        f"after it\n  fix: rename one of them")


def shard(jobs: list, k: int, n: int) -> list:
    """Job i of the sorted list goes to shard i mod n: disjoint shards that cover every job."""
    return sorted(jobs, key=lambda job: job.name)[k::n]


def shard_note(k: int, n: int, mine: int, total: int) -> str:
    return f" (shard {k}/{n}: {mine} of {total} videos)" if n > 1 else ""


def report_check(missing: list[tuple[str, str]], total: int, what: str) -> int:
    """--check: the videos whose output is missing or incomplete; exit status 1 if any."""
    if missing:
        return _list_problems(f"{len(missing)} of {total} videos have no complete {what}:", missing)
    print(f"all {total} videos have complete {what}")
    return 0
