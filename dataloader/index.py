"""The video index: where each video's frames are on disk and how many there are.

Built by counting files on disk, cached in a plain CSV, and brought up to date cheaply: a
cached folder is recounted only when its modification time changed, and a video that had no
folder is looked for again. No torch here.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

from guards import inside_root
from utils import UserError, atomic_write

from .splits import VideoRecord


@dataclass(frozen=True)
class FrameLayout:
    """Path templates of one frame, relative to the data root (RGB) or flow root (x, y).

    Fields: ``{video}`` the frame folder name, ``{idx}`` the 1-based frame number
    (with a format spec such as ``{idx:06d}``), ``{class}`` the class folder (optional).
    A layout without ``{class}`` also finds videos that sit inside a class folder.
    """

    rgb: str
    flow_x: str
    flow_y: str


LAYOUTS: dict[str, FrameLayout] = {
    # The widely used pre-extracted UCF101 release (jpegs_256 / tvl1_flow) of the reference repo.
    "ucf101": FrameLayout(rgb="{video}/frame{idx:06d}.jpg",
                          flow_x="u/{video}/frame{idx:06d}.jpg",
                          flow_y="v/{video}/frame{idx:06d}.jpg"),
    # TSN / mmaction2 rawframes: RGB and flow in one folder per video.
    "tsn": FrameLayout(rgb="{video}/img_{idx:05d}.jpg",
                       flow_x="{video}/flow_x_{idx:05d}.jpg",
                       flow_y="{video}/flow_y_{idx:05d}.jpg"),
}


def resolve_layout(name: str, rgb: str | None = None, flow_x: str | None = None,
                   flow_y: str | None = None) -> FrameLayout:
    """A named preset, with any of its templates replaced by a free one."""
    if name not in LAYOUTS:
        raise UserError(f"unknown --layout {name!r}; choose one of {', '.join(LAYOUTS)} "
                        f"and override single templates with --rgb-template/--flow-x-template/"
                        f"--flow-y-template")
    base = LAYOUTS[name]
    layout = FrameLayout(rgb=rgb or base.rgb, flow_x=flow_x or base.flow_x,
                         flow_y=flow_y or base.flow_y)
    for template in (layout.rgb, layout.flow_x, layout.flow_y):
        FramePattern(template)  # validates
    return layout


class FramePattern:
    """One template split into a folder template and a file-name pattern."""

    def __init__(self, template: str):
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        if "idx" not in fields or "video" not in fields or not fields <= {"idx", "video", "class"}:
            raise UserError(f"frame template {template!r} must contain {{video}} and {{idx}} "
                            f"(and may contain {{class}}), e.g. '{{video}}/frame{{idx:06d}}.jpg'")
        inside_root(template, f"frame template {template!r}")  # frames are read under their root only
        folder, _, filename = template.rpartition("/")
        if "{idx" in folder or "{video" in filename:
            raise UserError(f"frame template {template!r}: {{idx}} belongs in the file name and "
                            f"{{video}} in the folder part")
        self.template = template
        self.folder = folder
        self.filename = filename
        regex = ""
        for literal, field, _, _ in string.Formatter().parse(filename):
            regex += re.escape(literal)
            if field is not None:
                regex += r"(\d+)"
        self.file_regex = re.compile(regex + r"$")

    def folders(self, record: VideoRecord) -> list[str]:
        """Candidate folders of a video, relative to the root, in order of preference."""
        out = []
        for name in record.folder_candidates():
            out.append(self.folder.format(video=name, **{"class": record.class_name}))
            if "{class}" not in self.folder:
                out.append(self.folder.replace("{video}", "{class}/{video}")
                           .format(video=name, **{"class": record.class_name}))
        return out

    def frame_path(self, root: str, folder: str, idx: int) -> str:
        return os.path.join(root, folder, self.filename.format(idx=idx))

    def count(self, directory: str) -> int:
        """Number of frame files in ``directory`` that match the file-name pattern."""
        match = self.file_regex.match
        with os.scandir(directory) as entries:
            return sum(1 for e in entries if match(e.name))


@dataclass(frozen=True)
class FrameSource:
    """Where one video's frames of one kind are: root + folder + pattern, and how many."""

    root: str
    folder: str
    frames: int
    pattern: FramePattern

    def path(self, idx: int) -> str:
        return self.pattern.frame_path(self.root, self.folder, idx)

    def read(self, positions: list[int], mode: str = "RGB") -> list:
        """The frames at 1-based ``positions`` as PIL images ('RGB' or 'L')."""
        from .transforms import read_image

        return [read_image(self.path(p), mode) for p in positions]

    def frame_shape(self) -> list[int]:
        """[height, width] of the first frame as stored."""
        from PIL import Image

        with Image.open(self.path(1)) as image:
            return [image.height, image.width]


class FrameCounter:
    """Counts frames of one template under one root, with a CSV cache.

    The cache file name carries a hash of (root, template), so several layouts or roots can
    share one cache folder. Cached rows store the folder's mtime; a changed mtime (files added
    or removed) triggers a recount of that folder only.
    """

    def __init__(self, root: str | Path, template: str, cache_dir: str | Path | None = None, save: bool = True):
        self.root, self.save = str(Path(root).resolve()), save
        self.pattern = FramePattern(template)
        self.cache_path = None
        if cache_dir is not None:
            digest = hashlib.sha1(f"{self.root}\n{template}".encode()).hexdigest()[:10]
            self.cache_path = Path(cache_dir) / f"frame_index_{digest}.csv"

    def _load_cache(self) -> dict[str, tuple[str, int, int]]:
        if self.cache_path is None or not self.cache_path.is_file():
            return {}
        try:
            with open(self.cache_path, newline="") as f:
                rows = csv.DictReader(f)
                return {r["video"]: (r["folder"], int(r["mtime_ns"]), int(r["frames"])) for r in rows}
        except (KeyError, ValueError, csv.Error):
            return {}  # a damaged cache is rebuilt, never trusted

    def count(self, records: list[VideoRecord]) -> dict[str, FrameSource | None]:
        """Return {record.name: FrameSource, or None when no folder with frames exists}."""
        cache = self._load_cache()
        result: dict[str, FrameSource | None] = {}
        fresh: dict[str, tuple[str, int, int]] = {}
        for record in records:
            hit = cache.get(record.name)
            source = None
            if hit is not None:
                folder, mtime, frames = hit
                try:
                    if os.stat(os.path.join(self.root, folder)).st_mtime_ns == mtime:
                        source = FrameSource(self.root, folder, frames, self.pattern)
                except OSError:
                    pass
            if source is None:
                source = self._scan(record)
            if source is not None:
                mtime = os.stat(os.path.join(self.root, source.folder)).st_mtime_ns
                fresh[record.name] = (source.folder, mtime, source.frames)
            result[record.name] = source
        if self.save and self.cache_path is not None and fresh != {k: v for k, v in cache.items() if k in fresh}:
            self._save_cache({**cache, **fresh})
        return result

    def where(self, record: VideoRecord) -> str:
        return f"folder not found ({Path(self.root) / self.pattern.folders(record)[0]})"

    def _scan(self, record: VideoRecord) -> FrameSource | None:
        for folder in self.pattern.folders(record):
            directory = os.path.join(self.root, folder)
            if os.path.isdir(directory):
                frames = self.pattern.count(directory)
                if frames:
                    return FrameSource(self.root, folder, frames, self.pattern)
        return None

    def _save_cache(self, rows: dict[str, tuple[str, int, int]]) -> None:
        try:
            with atomic_write(self.cache_path, "w") as f:
                writer = csv.writer(f)
                writer.writerow(["video", "folder", "mtime_ns", "frames"])
                for name in sorted(rows):
                    writer.writerow([name, *rows[name]])
        except OSError:
            pass  # a read-only cache folder only costs a recount next time


@dataclass(frozen=True)
class IndexedVideo:
    """A video of the split together with its frames on disk."""

    record: VideoRecord
    # (rgb,) for the spatial stream, (flow_x, flow_y) for motion; (VideoSource,) with --video-root
    sources: tuple

    @property
    def frames(self) -> int:
        """Usable frames: the smaller count when x and y flow differ."""
        return min(s.frames for s in self.sources)


def build_index(records: list[VideoRecord], sources: list, cache_dir: str | Path | None = None, min_frames: int = 1,
                save_cache: bool = True) -> tuple[list[IndexedVideo], list[tuple[VideoRecord, str]]]:
    """Find each record's frames in every source: a (root, template) pair of frame files, or
    video files (dataloader.video_index.VideoFiles). The cache in ``cache_dir`` is read, and
    written unless ``save_cache`` is false (torchrun: only rank 0 writes it).

    Returns (videos found with at least ``min_frames`` frames in every source, and
    [(record, why it is missing)] for the others)."""
    counters = [source_counter(source, cache_dir, save_cache) for source in sources]
    per_source = [counter.count(records) for counter in counters]
    found, missing = [], []
    for record in records:
        sources_found = tuple(counts[record.name] for counts in per_source)
        absent = [i for i, s in enumerate(sources_found) if s is None]
        if absent:
            what = _source_name(len(sources), absent[0]) if isinstance(sources[absent[0]], tuple) else "video"
            missing.append((record, f"{what} {counters[absent[0]].where(record)}"))
            continue
        video = IndexedVideo(record, sources_found)
        if video.frames < min_frames:
            missing.append((record, f"{video.frames} frames, fewer than {min_frames}"))
        else:
            found.append(video)
    return found, missing


def source_counter(source, cache_dir: str | Path | None = None, save: bool = True):
    """The counter of one source: FrameCounter for (root, template), the source's own otherwise."""
    if isinstance(source, tuple):
        return FrameCounter(*source, cache_dir, save)
    return source.counter(cache_dir, save)


def source_root(source) -> str:
    return str(source[0] if isinstance(source, tuple) else source.root)


def _source_name(count: int, i: int) -> str:
    names = {1: ("frame",), 2: ("flow x", "flow y"), 3: ("frame", "flow x", "flow y")}.get(count)
    return names[i] if names else f"source {i + 1}"


def check_missing(missing: list[tuple[VideoRecord, str]], total: int, what: str, roots: list[str | Path],
                  allow_missing: bool, hint: str = "") -> None:
    """Report videos without (enough) frames, and stop unless the user allows it; ``hint`` is
    added when none of them is there (the likely cause)."""
    if not missing:
        return
    if total == len(missing):
        allow_missing = False  # nothing to train or test on, whatever the flag says
    where = " and ".join(str(r) for r in roots)
    examples = "; ".join(f"{r.name}: {why}" for r, why in missing[:3])
    message = f"{len(missing)} of {total} {what} videos cannot be used under {where}, e.g. {examples}"
    if allow_missing:
        print(f"warning: {message}; they are skipped (--allow-missing)")
        return
    if hint and total == len(missing):
        raise UserError(f"{message}\n  {hint}")
    raise UserError(f"{message}\n  fix: check --data-root/--flow-root/--video-root and --layout, or pass "
                    f"--allow-missing to skip them")


def warn_uneven_flow(videos: list[IndexedVideo], what: str) -> None:
    """Flow x and y folders of one video with different frame counts are a damaged
    extraction: only the frames both have are used, and the user is told which videos."""
    uneven = [v for v in videos if len(v.sources) == 2 and v.sources[0].frames != v.sources[1].frames]
    if uneven:
        examples = ", ".join(f"{v.record.name} (x {v.sources[0].frames}, y {v.sources[1].frames})" for v in uneven[:3])
        print(f"warning: {len(uneven)} {what} videos have different flow x and y frame counts, e.g. {examples}; "
              f"the smaller count is used (re-run tools/compute_flow.py on them)", flush=True)


def warn_listed_frames(videos: list[IndexedVideo], what: str) -> list[IndexedVideo]:
    """A rawframe list (mmaction2) states each video's frame count: report the videos whose
    folders hold another number (flow has one frame fewer than RGB, or as many); the disk's
    count is what is used. Returns the mismatched videos."""
    def agrees(video: IndexedVideo) -> bool:
        listed = video.record.listed_frames
        return listed is None or video.frames == listed or (len(video.sources) == 2 and video.frames == listed - 1)
    wrong = [v for v in videos if not agrees(v)]
    if wrong:
        examples = ", ".join(f"{v.record.name} (list {v.record.listed_frames}, disk {v.frames})" for v in wrong[:3])
        print(f"warning: {len(wrong)} {what} videos have another frame count on disk than in the list, e.g. "
              f"{examples}; the counts on disk are used", flush=True)
    return wrong


def stream_sources(stream: str, layout: FrameLayout, data_root: str | Path | None = None,
                   flow_root: str | Path | None = None) -> list[tuple[str | Path, str]]:
    """The (root, template) pairs a stream reads: RGB for 'spatial', flow x and y for 'motion'."""
    if stream == "spatial":
        roots = [("--data-root", data_root, layout.rgb)]
    elif stream == "motion":
        roots = [("--flow-root", flow_root, layout.flow_x), ("--flow-root", flow_root, layout.flow_y)]
    else:
        raise ValueError(f"unknown stream {stream!r}")
    for flag, root, _ in roots:
        if root is None or not Path(root).is_dir():
            raise UserError(f"{flag} folder not found: {root}\n  fix: pass {flag} pointing at the "
                            f"extracted {'frames' if stream == 'spatial' else 'optical flow'} "
                            f"(see tools/extract_frames.py and tools/compute_flow.py)")
    return [(root, template) for _, root, template in roots]


def index_videos(records: list[VideoRecord], what: str, sources: list,
                 cache_dir: str | Path | None = None, allow_missing: bool = False,
                 min_frames: int = 1, warn: bool = True, hint: str = "", save_cache: bool = True) -> list[IndexedVideo]:
    """Index the records of one list ('train', 'test') and report the ones without frames
    before anything starts; raises unless ``allow_missing``."""
    found, missing = build_index(records, sources, cache_dir, min_frames, save_cache)
    check_missing(missing, len(records), what, sorted({source_root(s) for s in sources}), allow_missing, hint)
    if warn:
        warn_uneven_flow(found, what)
        warn_listed_frames(found, what)
    return found
