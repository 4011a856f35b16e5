"""Exact frames from video files: a scan that finds every frame that decodes, and reads of
chosen frames in one forward pass from a seek. No torch here.

Frame k of a video is the k-th frame of a sequential decode (0-based in this module), whatever
the container's header says: headers of AVI files and variable frame rate files are often
wrong. The scan records each frame's presentation timestamp and the key frames
(:class:`Timeline`); a read seeks to the key frame before the first frame it needs and decodes
forward, taking frames by their timestamps, so that B-frames, variable frame rates and seeks
that land late change nothing. It seeks again only where a later frame's key frame lies past
the frame before it (decoding the frames between would cost more).

Backends (``--decoder``): ``pyav`` (PyAV's FFmpeg, from the lock; the default), ``opencv``
(OpenCV's FFmpeg: no exact seek, so a read decodes from the start up to the last frame it
needs) and ``torchcodec`` (TorchCodec with FFmpeg's libraries from the system; NVDEC on CUDA).
Frames come as RGB uint8 arrays [H, W, 3] at the video's size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from utils import UserError

DECODERS = ("pyav", "opencv", "torchcodec")


class VideoDecodeError(UserError):
    """A video that cannot be opened or decoded; the message names the file."""


def _runs(values: Sequence[int]) -> tuple[tuple[int, int, int], ...]:
    """Increasing integers as runs ``(first, step, count)``."""
    runs: list[list[int]] = []
    for value in values:
        if runs and runs[-1][2] == 1:
            runs[-1][1], runs[-1][2] = value - runs[-1][0], 2
        elif runs and value == runs[-1][0] + runs[-1][1] * runs[-1][2]:
            runs[-1][2] += 1
        else:
            runs.append([value, 0, 1])
    return tuple(tuple(r) for r in runs)


def _expand(runs: tuple[tuple[int, int, int], ...]) -> list[int]:
    return [first + step * k for first, step, count in runs for k in range(count)]


def _encode_runs(runs: tuple[tuple[int, int, int], ...]) -> str:
    return ";".join(f"{a}:{b}:{c}" for a, b, c in runs)


def _decode_runs(text: str) -> tuple[tuple[int, int, int], ...]:
    runs = tuple(tuple(int(x) for x in run.split(":")) for run in text.split(";") if run)
    if any(len(run) != 3 or run[2] < 1 for run in runs):
        raise ValueError("damaged runs")
    return runs


@dataclass(frozen=True)
class Timeline:
    """The frames that decode: how many, their presentation timestamps (stream time base) as
    runs ``(first, step, count)``, and which are key frames (0-based, increasing). ``runs`` is
    empty when timestamps cannot identify frames (missing, repeated or out of order): reads
    then count frames from the start."""

    frames: int
    runs: tuple[tuple[int, int, int], ...] = ()
    keys: tuple[int, ...] = ()

    @classmethod
    def from_scan(cls, stamps: Sequence[int | None], keys: Sequence[int] = ()) -> "Timeline":
        if any(s is None for s in stamps) or any(b <= a for a, b in zip(stamps, stamps[1:])):
            return cls(len(stamps))
        return cls(len(stamps), _runs(stamps), tuple(keys))

    @property
    def seekable(self) -> bool:
        return bool(self.runs)

    def stamp(self, index: int) -> int:
        """The presentation timestamp of frame ``index`` (0-based)."""
        for first, step, count in self.runs:
            if index < count:
                return first + step * index
            index -= count
        raise IndexError("frame index past the video's end")

    def key_before(self, index: int) -> int:
        """The last key frame at or before frame ``index`` (0 when none is known)."""
        import bisect

        k = bisect.bisect_right(self.keys, index)
        return self.keys[k - 1] if k else 0

    def encode(self) -> tuple[str, str]:
        """Two CSV cells: the timestamp runs and the key frames' runs (empty: not seekable)."""
        return _encode_runs(self.runs), _encode_runs(_runs(self.keys))

    @classmethod
    def decode(cls, frames: int, stamps: str, keys: str) -> "Timeline":
        runs, key_frames = _decode_runs(stamps), tuple(_expand(_decode_runs(keys)))
        if (runs and sum(r[2] for r in runs) != frames) or any(not 0 <= k < frames for k in key_frames):
            raise ValueError("damaged timeline")
        return cls(frames, runs, key_frames)


def check_decoder(name: str) -> None:
    """Fail early, with the fix, when ``name``'s library is missing or cannot load."""
    if name not in DECODERS:
        raise UserError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}")
    try:
        if name == "pyav":
            import av  # noqa: F401
        elif name == "opencv":
            import cv2  # noqa: F401
        else:
            from torchcodec.decoders import VideoDecoder  # noqa: F401
    except (ImportError, OSError, RuntimeError) as err:
        fix = {"pyav": "pip install av (it is in requirements.lock: make install)",
               "opencv": "pip install opencv-contrib-python-headless (make install)",
               "torchcodec": "pip install torchcodec and install FFmpeg's libraries (apt-get install ffmpeg), "
                             "or use --decoder pyav"}[name]
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"--decoder {name} cannot load: {first_line}\n  fix: {fix}") from None


def scan(path: str, decoder: str = "pyav") -> Timeline:
    """Decode the whole video once: the frames that decode and their timestamps."""
    try:
        if decoder == "pyav":
            return _pyav_scan(path)
        if decoder == "opencv":
            return _opencv_scan(path)
        return _torchcodec_scan(path)
    except VideoDecodeError:
        raise
    except Exception as err:  # a damaged file raises whatever its library raises
        raise VideoDecodeError(f"{path}: cannot decode ({err})") from None


def read(path: str, indices: Sequence[int], timeline: Timeline, decoder: str = "pyav") -> list[np.ndarray]:
    """Frames ``indices`` (0-based, any order, repeats allowed) of the video, as RGB arrays:
    one forward pass from a seek, skipping ahead by a seek only over whole key-frame intervals."""
    wanted = sorted(set(indices))
    if not wanted:
        return []
    if wanted[0] < 0 or wanted[-1] >= timeline.frames:
        raise VideoDecodeError(f"{path}: frame {wanted[-1] + 1} asked for, the index counted {timeline.frames}\n"
                               f"  fix: the video changed after it was indexed; run again to re-index it")
    try:
        if decoder == "pyav":
            frames = _pyav_read(path, wanted, timeline)
        elif decoder == "opencv":
            frames = _opencv_read(path, wanted)
        else:
            frames = _torchcodec_read(path, wanted)
    except VideoDecodeError:
        raise
    except Exception as err:
        raise VideoDecodeError(f"{path}: cannot decode ({err})") from None
    missing = [i for i in wanted if i not in frames]
    if missing:
        raise VideoDecodeError(f"{path}: frame {missing[0] + 1} did not decode (the index counted "
                               f"{timeline.frames})\n  fix: the video changed or is damaged; run again to re-index it")
    return [frames[i] for i in indices]


# --- PyAV -----------------------------------------------------------------------------------------

def _pyav_open(path: str):
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as err:
        raise VideoDecodeError(f"{path}: cannot open ({err})") from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{path}: no video stream in it")
    stream = container.streams.video[0]
    stream.thread_count = 1  # parallel over videos (loader workers, the index's threads), not inside one
    return container, stream


def _pyav_scan(path: str) -> Timeline:
    container, stream = _pyav_open(path)
    stamps, keys = [], []
    with container:
        for index, frame in enumerate(container.decode(stream)):
            stamps.append(frame.pts)
            if frame.key_frame:
                keys.append(index)
    return Timeline.from_scan(stamps, keys)


def _pyav_read(path: str, wanted: list[int], timeline: Timeline) -> dict[int, np.ndarray]:
    container, stream = _pyav_open(path)
    with container:
        if not timeline.seekable:
            return _pyav_count_from_start(container, stream, wanted)
        frames: dict[int, np.ndarray] = {}
        for group in _seek_groups(wanted, timeline):
            frames.update(_pyav_group(container, stream, group, timeline, path))
        return frames


def _seek_groups(wanted: list[int], timeline: Timeline) -> list[list[int]]:
    """The wanted frames split where a seek saves decoding: a frame whose key frame comes after
    the frame before it starts a new group (one seek, then forward to the group's last frame)."""
    groups = [[wanted[0]]]
    for index in wanted[1:]:
        if timeline.key_before(index) > groups[-1][-1]:
            groups.append([index])
        else:
            groups[-1].append(index)
    return groups


def _pyav_group(container, stream, group: list[int], timeline: Timeline, path: str) -> dict[int, np.ndarray]:
    """One seek to the key frame before ``group[0]`` and one forward pass to ``group[-1]``. A seek
    that lands after ``group[0]`` (demuxers seek by decoding time) goes further back; at the
    start, frames are counted as the scan counted them."""
    by_stamp = {timeline.stamp(i): i for i in group}
    first, last = timeline.stamp(group[0]), timeline.stamp(group[-1])
    back = 0
    while True:
        start = timeline.key_before(max(0, group[0] - back))
        if start == 0:
            with _pyav_open(path)[0] as fresh:
                return _pyav_count_from_start(fresh, fresh.streams.video[0], group)
        container.seek(timeline.stamp(start), stream=stream, backward=True, any_frame=False)
        frames = _pyav_collect(container, stream, by_stamp, first, last)
        if frames is not None:
            return frames
        back = max(16, 2 * back)


def _pyav_collect(container, stream, by_stamp: dict[int, int], first: int, last: int) -> dict[int, np.ndarray] | None:
    """Decode forward from a seek; None when the seek landed after ``first``. Frames before the
    first key frame decoded after the seek are not trusted (an open GOP's leading B-frames lack
    their references)."""
    out: dict[int, np.ndarray] = {}
    trusted = False
    for frame in container.decode(stream):
        if frame.pts is None:
            return None
        trusted = trusted or frame.key_frame
        if not trusted:
            continue
        if not out and frame.pts > first:
            return None
        index = by_stamp.get(frame.pts)
        if index is not None:
            out[index] = frame.to_ndarray(format="rgb24")
        if frame.pts >= last:
            break
    return out


def _pyav_count_from_start(container, stream, wanted: list[int]) -> dict[int, np.ndarray]:
    """A sequential decode from the file's start up to the last frame wanted (a fresh container)."""
    keep, out = set(wanted), {}
    for index, frame in enumerate(container.decode(stream)):
        if index in keep:
            out[index] = frame.to_ndarray(format="rgb24")
        if index >= wanted[-1]:
            break
    return out


# --- OpenCV ---------------------------------------------------------------------------------------

def _opencv_open(path: str):
    import cv2

    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise VideoDecodeError(f"{path}: cannot open (not a video, or a codec OpenCV's FFmpeg lacks)")
    return capture


def _opencv_scan(path: str) -> Timeline:
    import cv2

    capture = _opencv_open(path)
    stamps = []
    try:
        while capture.grab():
            stamps.append(round(capture.get(cv2.CAP_PROP_POS_MSEC) * 1000))  # microseconds
    finally:
        capture.release()
    return Timeline.from_scan(stamps)


def _opencv_read(path: str, wanted: list[int]) -> dict[int, np.ndarray]:
    import cv2

    capture = _opencv_open(path)
    keep, out = set(wanted), {}
    try:
        for index in range(wanted[-1] + 1):
            if not capture.grab():
                break
            if index in keep:
                ok, frame = capture.retrieve()
                if not ok:
                    break
                out[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    return out


# --- TorchCodec -----------------------------------------------------------------------------------

def _torchcodec_decoder(path: str):
    check_decoder("torchcodec")
    from torchcodec.decoders import VideoDecoder

    return VideoDecoder(path, seek_mode="exact", dimension_order="NHWC")


def _torchcodec_scan(path: str) -> Timeline:
    """Every frame decoded, in order, 32 at a time: the count of frames that decode, not of
    packets. TorchCodec's exact mode finds frames by index itself, so no timestamps are kept."""
    decoder, frames = _torchcodec_decoder(path), 0
    for start in range(0, len(decoder), 32):
        try:
            frames += decoder.get_frames_in_range(start=start, stop=min(start + 32, len(decoder))).data.shape[0]
        except (RuntimeError, IndexError):
            break  # the first frame that does not decode ends the video
    return Timeline(frames)


def _torchcodec_read(path: str, wanted: list[int]) -> dict[int, np.ndarray]:
    decoder = _torchcodec_decoder(path)
    batch = decoder.get_frames_at(indices=wanted).data.numpy()
    return {index: batch[k] for k, index in enumerate(wanted)}
