"""The video index of a folder of video files (``--video-root``): which file each listed video
is, how many frames decode from it and their timestamps, cached beside the run like the frame
index. A video is scanned again only when its file's size or modification time changed. No
torch here.
"""
from __future__ import annotations

import csv
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guards import inside_root
from utils import UserError, atomic_write

from .decoders import Timeline, VideoDecodeError, check_decoder, read, scan
from .records import VideoRecord
from .video import VIDEO_EXTENSIONS, find_videos, resize_frame

DEFAULT_FRAME_SIZE = (256, 340)  # tools/extract_frames.py's --size


@dataclass(frozen=True)
class VideoSource:
    """One video file: its frames as decoded, resized to ``size`` (height, width; None keeps
    the video's) exactly as tools/extract_frames.py resizes the frames it writes."""

    root: str
    file: str  # relative to root
    timeline: Timeline
    decoder: str
    size: tuple[int, int] | None

    @property
    def frames(self) -> int:
        return self.timeline.frames

    @property
    def path(self) -> str:
        return os.path.join(self.root, self.file)

    def read(self, positions: list[int], mode: str = "RGB") -> list:
        """The frames at 1-based ``positions`` as PIL images ('RGB' or 'L'): one seek and one
        forward pass through the file for all of them."""
        from PIL import Image

        from .transforms import FrameReadError

        try:
            arrays = read(self.path, [p - 1 for p in positions], self.timeline, self.decoder)
        except VideoDecodeError as err:
            raise FrameReadError(str(err)) from None
        resized: dict[int, object] = {}
        images = []
        for array in arrays:
            if id(array) not in resized:
                image = Image.fromarray(resize_frame(array, self.size))
                resized[id(array)] = image if mode == "RGB" else image.convert(mode)
            images.append(resized[id(array)])
        return images

    def frame_shape(self) -> list[int]:
        """[height, width] of the frames this source gives."""
        if self.size is not None:
            return list(self.size)
        return list(np.asarray(self.read([1])[0]).shape[:2])


@dataclass(frozen=True)
class VideoFiles:
    """What ``--video-root`` names: a folder of videos, read with ``decoder`` at ``size``."""

    root: str | Path
    decoder: str = "pyav"
    size: tuple[int, int] | None = DEFAULT_FRAME_SIZE

    def counter(self, cache_dir: str | Path | None = None, save: bool = True) -> "VideoCounter":
        return VideoCounter(self, cache_dir, save=save)


class VideoCounter:
    """Finds each record's video file and counts the frames that decode, with a CSV cache."""

    COLUMNS = ["video", "file", "size", "mtime_ns", "frames", "stamps", "keys"]

    def __init__(self, files: VideoFiles, cache_dir: str | Path | None = None, threads: int | None = None,
                 save: bool = True):
        check_decoder(files.decoder)
        self.files, self.save = files, save
        self.root = str(Path(files.root).resolve())
        self.threads = threads or min(8, os.cpu_count() or 1)
        self.problems: dict[str, str] = {}
        self._on_disk: dict[str, str] | None = None
        self.cache_path = None
        if cache_dir is not None:
            digest = hashlib.sha1(f"{self.root}\n{files.decoder}".encode()).hexdigest()[:10]
            self.cache_path = Path(cache_dir) / f"video_index_{digest}.csv"

    def where(self, record: VideoRecord) -> str:
        expected = Path(self.root) / record.class_name / record.name
        return self.problems.get(record.name, f"video file not found ({expected}"
                                              f".{{{','.join(e[1:] for e in VIDEO_EXTENSIONS)}}})")

    def find(self, record: VideoRecord) -> str | None:
        """The record's file relative to the root: NAME.ext or CLASS/NAME.ext (or the list's path)."""
        if self._on_disk is None:
            root = Path(self.root)
            self._on_disk = {}
            for video in find_videos(root):
                relative = video.relative_to(root).as_posix()
                self._on_disk.setdefault(relative.rsplit(".", 1)[0], relative)
        for name in record.folder_candidates():
            for stem in (name, f"{record.class_name}/{name}"):
                if stem in self._on_disk:
                    return self._on_disk[stem]
        return None

    def _load_cache(self) -> dict[str, dict]:
        if self.cache_path is None or not self.cache_path.is_file():
            return {}
        try:
            with open(self.cache_path, newline="") as f:
                rows = list(csv.DictReader(f))
            for r in rows:
                inside_root(r["file"], str(self.cache_path))  # an edited cache reads nothing outside the root
            return {r["video"]: {**r, "timeline": Timeline.decode(int(r["frames"]), r["stamps"], r["keys"]),
                                 "size": int(r["size"]), "mtime_ns": int(r["mtime_ns"])} for r in rows}
        except (KeyError, ValueError, TypeError, csv.Error, UserError):
            return {}  # a damaged cache is rebuilt, never trusted

    def count(self, records: list[VideoRecord]) -> dict[str, VideoSource | None]:
        """{record.name: VideoSource, or None when no file is found or none of its frames decode
        (``where(record)`` says which)}."""
        cache = self._load_cache()
        found: dict[str, str] = {}
        result: dict[str, VideoSource | None] = {}
        fresh: dict[str, dict] = {}
        to_scan = []
        for record in records:
            hit = cache.get(record.name)
            stat = _stat(os.path.join(self.root, hit["file"])) if hit else None
            if hit and stat == (hit["size"], hit["mtime_ns"]):
                fresh[record.name] = hit
                continue
            file = self.find(record)
            if file is None:
                result[record.name] = None
                continue
            found[record.name] = file
            to_scan.append(record.name)
        with ThreadPoolExecutor(self.threads) as pool:  # the decoders release the GIL
            scanned = pool.map(self._scan, [found[name] for name in to_scan])
            for name, (row, problem) in zip(to_scan, scanned):
                if row is None:
                    self.problems[name] = problem
                    result[name] = None
                else:
                    fresh[name] = row
        for record in records:
            row = fresh.get(record.name)
            if row is not None:
                result[record.name] = VideoSource(self.root, row["file"], row["timeline"], self.files.decoder,
                                                  self.files.size)
        if self.save and self.cache_path is not None and fresh != {k: v for k, v in cache.items() if k in fresh}:
            self._save_cache({**cache, **fresh})
        return result

    def _scan(self, file: str) -> tuple[dict | None, str]:
        path = os.path.join(self.root, file)
        stat = _stat(path)
        try:
            timeline = scan(path, self.files.decoder)
        except VideoDecodeError as err:
            return None, str(err).splitlines()[0]
        if timeline.frames == 0:
            return None, f"{path}: no frame decodes"
        return {"file": file, "size": stat[0], "mtime_ns": stat[1], "timeline": timeline}, ""

    def _save_cache(self, rows: dict[str, dict]) -> None:
        try:
            with atomic_write(self.cache_path, "w") as f:
                writer = csv.writer(f)
                writer.writerow(self.COLUMNS)
                for name in sorted(rows):
                    row = rows[name]
                    writer.writerow([name, row["file"], row["size"], row["mtime_ns"], row["timeline"].frames,
                                     *row["timeline"].encode()])
        except OSError:
            pass  # a read-only cache folder only costs a scan next time


def _stat(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def video_sources(video_root: str | Path | None, decoder: str = "pyav",
                  size: tuple[int, int] | None = DEFAULT_FRAME_SIZE) -> list[VideoFiles]:
    """What the spatial stream reads with ``--video-root``: one source, the video files."""
    if video_root is None or not Path(video_root).is_dir():
        raise UserError(f"--video-root folder not found: {video_root}\n  fix: pass the folder of the videos the "
                        f"split lists name (VIDEO_ROOT/<class>/<video>.avi or VIDEO_ROOT/<video>.avi)")
    check_decoder(decoder)
    return [VideoFiles(video_root, decoder, size)]
