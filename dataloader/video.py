"""Reading video files: finding them, decoding frames in order with their timestamps, and
resizing them as the extracted training frames were. OpenCV's videoio (FFmpeg); no torch."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from utils import UserError

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")


def find_videos(video_dir: Path) -> list[Path]:
    """All files with a video extension under ``video_dir``, recursively, sorted. Symlinked
    folders are followed (as tools/make_splits.py lists their videos), each real folder once."""
    if not video_dir.is_dir():
        raise UserError(f"video folder not found: {video_dir}")
    videos, seen = [], set()
    for folder, subfolders, files in os.walk(video_dir, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree, or a second link to one folder
            subfolders.clear()
            continue
        seen.add(real)
        videos += [Path(folder) / f for f in files if Path(f).suffix.lower() in VIDEO_EXTENSIONS
                   and os.path.isfile(os.path.join(folder, f))]
    return sorted(videos)


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize a decoded frame to (height, width): area averaging when shrinking, bilinear when
    enlarging; None keeps it. Extraction and predict.py use this one function, so that their
    frames are equal."""
    import cv2

    if size is None or frame.shape[:2] == tuple(size):
        return frame
    h, w = size
    shrink = h * w < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class VideoReader:
    """Decode a video in order. ``timestamps()`` runs through it without converting frames
    (the container's frame count is often wrong for AVI and variable frame rates, so the true
    one is counted), ``frames()`` yields (index, seconds, BGR frame) resized to ``size``."""

    def __init__(self, path: Path, size: tuple[int, int] | None = None):
        self.path, self.size = Path(path), size
        if not self.path.is_file():
            raise UserError("file not found")
        self.fps = 0.0
        self.listed_frames = 0  # what the container says, which may be wrong

    def _open(self):
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise UserError("cannot open (not a video, or a codec OpenCV's FFmpeg lacks)")
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.listed_frames = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        return capture

    def _seconds(self, capture, index: int) -> float:
        """The frame's presentation time from the container, or index / fps without one."""
        import cv2

        msec = capture.get(cv2.CAP_PROP_POS_MSEC)
        if msec > 0 or index == 0:
            return msec / 1000.0
        return index / self.fps if self.fps > 0 else float(index)

    def timestamps(self) -> list[float]:
        """The time (seconds) of every frame that decodes, from a pass that skips conversion."""
        capture = self._open()
        times = []
        try:
            while capture.grab():
                times.append(self._seconds(capture, len(times)))
        finally:
            capture.release()
        return times

    def frames(self, keep: set[int] | None = None) -> Iterator[tuple[int, float, np.ndarray | None]]:
        """(index, seconds, frame) for every frame in order; frames not in ``keep`` (when
        given) are grabbed but not converted or resized, and come as None."""
        capture = self._open()
        index = 0
        try:
            while capture.grab():
                seconds = self._seconds(capture, index)
                frame = None
                if keep is None or index in keep:
                    ok, frame = capture.retrieve()
                    if not ok:
                        break
                    frame = resize_frame(frame, self.size)
                yield index, seconds, frame
                index += 1
        finally:
            capture.release()


def read_ahead(items: Iterator, depth: int = 32) -> Iterator:
    """Iterate ``items`` in a background thread, at most ``depth`` ahead, so that decoding the
    next frames overlaps the caller's work on this one (OpenCV releases the GIL while it
    decodes). Errors in the thread are raised here; stopping early stops the thread."""
    import queue
    import threading

    done = object()
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand_over(item):
                    return
            hand_over(done)
        except BaseException as err:  # handed to the consumer
            hand_over(err)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
