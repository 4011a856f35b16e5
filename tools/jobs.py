"""Parallel, resumable per-video jobs for the preprocessing tools.

A video's output is written into a hidden ``.partial-NAME`` folder beside its final folder
and renamed when complete, so that a finished video is exactly one whose final folder
exists: a stopped run, started again, skips those and redoes the half-written ones.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

from tqdm import tqdm

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")


def partial_folder(final: Path) -> Path:
    return final.parent / f".partial-{final.name}"


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


def run_jobs(jobs: list, work: Callable[[object], str | None], workers: int, desc: str) -> list[tuple[str, str]]:
    """Run ``work(job)`` for every job in parallel with a progress bar. ``work`` returns None
    on success or a reason on failure; returns [(job name, reason)] of the failures."""
    failures = []
    workers = max(1, min(workers, len(jobs))) if jobs else 1
    with tqdm(total=len(jobs), desc=desc, unit="video", dynamic_ncols=True) as progress:
        if workers == 1:
            _init_worker()
            results: Iterable = (_call(work, job) for job in jobs)
            for name, error in results:
                _record(name, error, failures, progress)
        else:
            with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
                for name, error in pool.imap_unordered(_Call(work), jobs):
                    _record(name, error, failures, progress)
    return failures


class _Call:
    def __init__(self, work):
        self.work = work

    def __call__(self, job):
        return _call(self.work, job)


def _call(work, job) -> tuple[str, str | None]:
    try:
        return job.name, work(job)
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
        print(f"{len(failures)} of {total} videos failed ({what}):")
        for name, error in sorted(failures):
            print(f"  {name}: {error}")
        return 1
    print(f"{total} videos {what}")
    return 0
