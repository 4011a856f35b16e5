"""Windows over a video and the frames and flow pairs their test protocol reads. Pure
functions over frame indices (0-based here) and timestamps; no decoding, no torch."""
from __future__ import annotations

from dataclasses import dataclass, field

from dataloader.sampling import place_test_positions, stack_frames


@dataclass(frozen=True)
class Window:
    """Frames [first, end) of the video, from ``start`` to ``stop`` seconds."""

    first: int
    end: int
    start: float
    stop: float


def count_windows(times: list[float], window: float, stride: float) -> int:
    """How many windows ``plan_windows`` makes at most, computed without making them."""
    span = times[-1] - times[0]
    if span < window:
        return 1
    return int((span - window) / stride) + 2


def plan_windows(times: list[float], window: float | None = None, stride: float | None = None) -> list[Window]:
    """The whole video as one window (``window`` None), or windows of ``window`` seconds every
    ``stride`` seconds by the frames' timestamps; a window longer than the video is the whole
    video, and the last window ends with the video. A window no frame falls in (a gap in the
    timestamps longer than it, or frames dropped live) is left out."""
    n = len(times)
    frame_time = (times[-1] - times[0]) / (n - 1) if n > 1 else 0.0
    end_time = times[-1] + frame_time  # when the last frame stops showing
    if window is None or times[-1] - times[0] < window:
        return [Window(0, n, times[0], end_time)]
    windows, first = [], 0
    start = times[0]
    while True:
        end = next((i for i in range(first, n) if times[i] >= start + window), n)
        if end > first:
            windows.append(Window(first, end, start, times[end] if end < n else end_time))
        if end >= n:
            return windows
        start += stride
        first = next((i for i in range(first, n) if times[i] >= start), n)
        if first >= n:
            return windows


@dataclass
class StreamPlan:
    """For one stream: each window's inputs as lists of frame indices (spatial: one frame an
    input; motion: one flow pair index an entry, pair i = frames i and i+1), and when each
    frame or pair is last used, so that it can be dropped after that window."""

    inputs: list[list[list[int]]] = field(default_factory=list)  # window -> input -> frames or pairs
    last_use: dict[int, int] = field(default_factory=dict)        # frame or pair -> last window


def plan_spatial(windows: list[Window], positions: list[int], stack_length: int,
                 placement: str = "starts") -> StreamPlan:
    """The test positions of each window (``positions[w]`` of them, placed as --evaluate places
    them in a video of the window's length: segment ``placement`` starts or centres), one frame each."""
    plan = StreamPlan()
    for w, window in enumerate(windows):
        frames = [window.first + p - 1 for p in place_test_positions(window.end - window.first, positions[w],
                                                                     stack_length, placement)]
        plan.inputs.append([[f] for f in frames])
        plan.last_use.update({f: w for f in frames})
    return plan


def plan_motion(windows: list[Window], positions: list[int], stack_length: int, total_frames: int,
                reference_order: bool = False, placement: str = "starts") -> StreamPlan:
    """The stacks at each window's test positions, as flow pair indices: flow frame j (1-based,
    of the window's n - 1 flow frames) is pair first + j - 1. A stack near the video's end is
    moved back so that its pairs exist."""
    plan = StreamPlan()
    last_start = total_frames - 1 - stack_length  # 0-based pair index of the last full stack's start
    for w, window in enumerate(windows):
        flow_frames = max(1, window.end - window.first - 1)
        stacks = []
        for p in place_test_positions(flow_frames, positions[w], stack_length, placement):
            shift = min(window.first + p - 1, last_start) - (window.first + p - 1)
            stacks.append([window.first + j - 1 + shift for j in stack_frames(p, stack_length, reference_order)])
        plan.inputs.append(stacks)
        plan.last_use.update({pair: w for stack in stacks for pair in stack})
    return plan


@dataclass
class Segment:
    """Consecutive windows with the same top class (None: no confident action)."""

    label: str | None
    start: float
    stop: float
    score: float  # the mean top probability over its windows


def segments(windows: list[dict], min_score: float = 0.0) -> list[Segment]:
    """Merge consecutive windows of a predict.py record (``start``, ``end``, ``topk``) whose top
    class is the same; a window whose top probability is below ``min_score`` counts as no
    confident action."""
    out: list[Segment] = []
    counts: list[int] = []
    for window in windows:
        best = window["topk"][0]
        label, score = (best["class"] if best["probability"] >= min_score else None), best["probability"]
        if out and out[-1].label == label:
            last = out[-1]
            counts[-1] += 1
            last.score += (score - last.score) / counts[-1]
            last.stop = max(last.stop, window["end"])
        else:
            out.append(Segment(label, window["start"], window["end"], score))
            counts.append(1)
    return out
