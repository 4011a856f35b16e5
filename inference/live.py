"""predict.py --live: both streams on a camera, a stream or a video file as it plays.

A capture thread reads the source's frames, resized as predict.py resizes them, into a short
queue. The main thread plans predict.py's --window/--stride windows as the frames' timestamps
arrive (the windows of ``inference.windows.plan_windows``, made one at a time), keeps only the
frames of the windows still open, and scores each window with predict.py's StreamingScorer as
soon as the last frame it reads is in; the flow of a frame pair is computed once and kept while
a later window reads it. When scoring falls behind, the capture thread drops the new frames
(and counts them) instead of queueing them: latency stays bounded and memory flat however long
it runs. ``--pace fast`` on a file drops nothing: its windows are then predict.py's timeline."""
from __future__ import annotations

import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from utils import UserError

from .scorer import StreamingScorer, StreamModel
from .windows import Window

PACES = "realtime (a file plays at its frame rate), fast (as fast as it decodes, nothing dropped) or Nx (N times " \
        "its frame rate)"
QUEUE_FRAMES = 128  # frames the capture thread may hold ahead of the scorer before it drops new ones
MAX_LAG = 1.0  # seconds a frame may wait for the scorer before it is dropped (latency stays bounded)
NO_FRAMES_YET = 10**12  # the planned length of a source that has not ended: stacks are never moved back


def parse_pace(text: str) -> float:
    """--pace: 1.0 for realtime, 0.0 for fast, N for 'Nx'."""
    if text == "realtime":
        return 1.0
    if text == "fast":
        return 0.0
    try:
        speed = float(text[:-1]) if text.endswith("x") else float("nan")
    except ValueError:
        speed = float("nan")
    if not np.isfinite(speed) or not 0.01 <= speed <= 1000:
        raise UserError(f"--pace {text!r}: give {PACES}, N between 0.01 and 1000")
    return speed


# --- the source -----------------------------------------------------------------------------------

def source_kind(source: str) -> str:
    """'camera' (a device index), 'stream' (a URL) or 'file'."""
    if source.isdecimal():
        return "camera"
    if "://" in source:
        return "stream"
    return "file"


def open_capture(source: str, stall_seconds: float):
    """An opened OpenCV capture of a camera index or a stream URL, or a UserError with the fix."""
    import cv2

    kind = source_kind(source)
    timeout_ms = int(stall_seconds * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
    capture = cv2.VideoCapture(int(source) if kind == "camera" else source, cv2.CAP_ANY, params)
    if not capture.isOpened():
        capture.release()
        fix = ("check that the camera is connected and not in use, and the index (0 is the first camera)"
               if kind == "camera" else "check the URL, the network and that the stream is running")
        raise UserError(f"cannot open the {kind} {source}\n  fix: {fix}")
    return capture


def live_frames(source: str, size: tuple[int, int] | None, reconnect: int,
                stall_seconds: float) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds since the first frame, BGR frame resized to ``size``) of a camera or stream, as
    they come; a stalled or broken stream is opened again ``reconnect`` times, then it ends
    with a UserError naming it."""
    from dataloader.video import resize_frame

    capture, retries, started = open_capture(source, stall_seconds), 0, None
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                capture.release()
                if retries >= reconnect:
                    raise UserError(f"the {source_kind(source)} {source} stalled or ended"
                                    f"{f' ({reconnect} reconnects tried)' if reconnect else ''}\n  fix: check "
                                    f"the source, or allow more --reconnect")
                retries += 1
                time.sleep(min(5.0, 0.5 * retries))
                capture = open_capture(source, stall_seconds)
                continue
            now = time.monotonic()
            started = now if started is None else started
            yield now - started, resize_frame(frame, size)
    finally:
        capture.release()


def file_frames(path: Path, size: tuple[int, int] | None) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds, frame) of a video file, decoded and timed exactly as predict.py reads it."""
    from dataloader.video import VideoReader

    for _, seconds, frame in VideoReader(path, size).frames():
        yield seconds, frame


@dataclass
class Captured:
    """A frame as the scorer receives it: its number among the frames kept, its time in the
    source, and when it was read (time.monotonic)."""

    index: int
    seconds: float
    frame: np.ndarray
    arrived: float


class Capture:
    """Reads ``frames`` in a thread into a queue of QUEUE_FRAMES. ``speed`` > 0 plays a file at
    that multiple of its frame rate. With ``drop``, a frame that finds the queue full, or that
    waited more than ``max_lag`` seconds for the scorer, is dropped and counted (the scorer is
    behind); without, the thread waits and nothing is lost. The frames kept are numbered in
    order."""

    END = object()

    def __init__(self, frames: Iterator[tuple[float, np.ndarray]], speed: float, drop: bool,
                 max_lag: float = MAX_LAG):
        self.frames, self.speed, self.drop, self.max_lag = frames, speed, drop, max_lag
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self.dropped, self.read = 0, 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Capture":
        self.thread.start()
        return self

    def _put(self, item) -> bool:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        clock_start, first_seconds = None, None
        try:
            for seconds, frame in self.frames:
                if self.stopping.is_set():
                    return
                now = time.monotonic()
                if self.speed > 0:  # keep the file's pace
                    if clock_start is None:
                        clock_start, first_seconds = now, seconds
                    wait = clock_start + (seconds - first_seconds) / self.speed - now
                    if wait > 0:
                        time.sleep(wait)
                        now = time.monotonic()
                self.read += 1
                item = Captured(-1, seconds, frame, now)
                if self.drop:
                    try:
                        self.queue.put_nowait(item)
                    except queue.Full:
                        self.dropped += 1
                elif not self._put(item):
                    return
            self._put(self.END)
        except BaseException as err:  # handed to the scorer's thread
            self._put(err)

    def __iter__(self) -> Iterator[Captured]:
        kept = 0
        while True:
            item = self.queue.get()
            if item is self.END:
                return
            if isinstance(item, BaseException):
                raise item
            if self.drop and time.monotonic() - item.arrived > self.max_lag:
                self.dropped += 1  # too old to be worth scoring: the scorer is behind
                continue
            item.index, kept = kept, kept + 1
            yield item

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


# --- the windows, one at a time ------------------------------------------------------------------

class WindowPlanner:
    """``plan_windows(times, window, stride)`` made as the timestamps arrive: ``push`` returns
    the windows a new frame closes (its time reaches their end), ``finish`` those the end of
    the source closes. The same arithmetic in the same order, so the same windows."""

    def __init__(self, window: float, stride: float):
        self.window, self.stride = window, stride
        self.times: dict[int, float] = {}  # index -> seconds, from the open window's first frame on
        self.first_time: float | None = None
        self.start = 0.0
        self.first: int | None = 0  # the open window's first frame (None: not arrived yet)
        self.count, self.closed = 0, 0

    def push(self, index: int, seconds: float) -> list[Window]:
        if self.first_time is None:
            self.first_time, self.start = seconds, seconds
        self.times[index] = seconds
        self.count = index + 1
        closed = []
        while True:
            if self.first is None:
                if seconds < self.start:
                    break
                self.first = index
            if seconds < self.start + self.window:
                break
            if index > self.first:  # a window no frame falls in is left out, as plan_windows leaves it
                closed.append(Window(self.first, index, self.start, seconds))
            self.closed += 1
            self.start += self.stride
            self.first = next((i for i in range(self.first, index + 1) if self.times[i] >= self.start), None)
        oldest = index if self.first is None else self.first
        for i in [i for i in self.times if i < oldest]:
            del self.times[i]
        return closed

    def finish(self, last_seconds: float) -> list[Window]:
        """The window the end of the source closes (the whole source when none closed before)."""
        if self.first_time is None:
            return []
        n = self.count
        frame_time = (last_seconds - self.first_time) / (n - 1) if n > 1 else 0.0
        end_time = last_seconds + frame_time
        if self.closed == 0:
            return [Window(0, n, self.first_time, end_time)]
        if self.first is None:
            return []
        return [Window(self.first, n, self.start, end_time)]

    @property
    def oldest_needed(self) -> int:
        """The first frame a window still to close reads."""
        return self.count if self.first is None else self.first


# --- scoring ----------------------------------------------------------------------------------

class LiveScorer:
    """Scores the windows of frames pushed in order (predict.py's windows and scores); ``score``
    makes a window's record of its summed scores."""

    def __init__(self, streams: list[StreamModel], flow_of, window: float, stride: float,
                 window_frames: int | None, bound: float, quality: int, device,
                 score: Callable[[Window, object], dict]):
        self.streams, self.flow_of, self.device = streams, flow_of, device
        self.bound, self.quality, self.score = bound, quality, score
        self.planner = WindowPlanner(window, stride)
        self.positions = {s.name: window_frames or s.test_frames for s in streams}
        self.buffer: dict[int, Captured] = {}
        self.pending: list[Window] = []
        self.flows: dict = {}  # flow pair -> its stored views, while a window may read it

    def push(self, frame: Captured) -> list[tuple[Window, dict, Captured]]:
        self.buffer[frame.index] = frame
        self.pending += self.planner.push(frame.index, frame.seconds)
        return self._score_ready(NO_FRAMES_YET)

    def finish(self) -> list[tuple[Window, dict, Captured]]:
        if not self.buffer:
            return []
        last = self.buffer[max(self.buffer)]
        self.pending += self.planner.finish(last.seconds)
        return self._score_ready(self.planner.count)

    def _score_ready(self, total_frames: int) -> list[tuple[Window, dict, Captured]]:
        """Every pending window whose frames are all in, in order: (window, its scores, the
        newest frame it read)."""
        out = []
        newest = max(self.buffer) if self.buffer else -1
        while self.pending:
            window = self.pending[0]
            scorer = StreamingScorer(self.streams, [window], {name: [k] for name, k in self.positions.items()},
                                     total_frames, self.flow_of, self.bound, self.quality, self.device,
                                     flow_cache=self.flows)
            last = scorer.ready_at[0]
            if last > newest:
                break  # its last stack reads frames still to come
            # a stack at the source's end is moved back (as offline), maybe before the window's first frame
            first = min(scorer.keep | {window.first})
            frames = ((i, self.buffer[i].seconds, self.buffer[i].frame) for i in range(first, last + 1))
            out.append((window, self.score(window, scorer.run(frames)[0]), self.buffer[last]))
            self.pending.pop(0)
        self._release()
        return out

    def _release(self) -> None:
        """Drop the frames and flows no window still to be scored reads."""
        # the frames of a stack that the source's end may move back stay too
        margin = max(s.stack_length for s in self.streams) + 1
        oldest = min([w.first for w in self.pending] + [self.planner.oldest_needed]) - margin
        for i in [i for i in self.buffer if i < oldest]:
            del self.buffer[i]
        for pair in [p for p in self.flows if p < oldest]:
            del self.flows[pair]


class Stop(Exception):
    """SIGTERM, turned into a clean stop like Ctrl-C."""


def on_sigterm(signum, frame):  # noqa: ARG001
    raise Stop()


def install_sigterm() -> Callable[[], None]:
    """SIGTERM stops the live loop as Ctrl-C does; returns the function that restores the handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)


# --- the loop ------------------------------------------------------------------------------------

def source_fps(source: str) -> float:
    """The frame rate a camera, stream or file reports (25 when it reports none)."""
    import cv2

    capture = cv2.VideoCapture(int(source) if source_kind(source) == "camera" else source)
    fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    capture.release()
    return fps if 1.0 <= fps <= 1000.0 else 25.0


def check_show() -> None:
    """--show: OpenCV can open a window here."""
    import cv2

    try:
        cv2.namedWindow("predict.py --live")
    except cv2.error:
        raise UserError("--show needs OpenCV with window support and a display; this OpenCV is headless\n"
                        "  fix: pip install opencv-contrib-python (not -headless) on a desktop, or drop --show and "
                        "use --annotate OUT.mp4 or --jsonl") from None


class Outputs:
    """Where the windows go: the terminal, --jsonl, --annotate and --show."""

    def __init__(self, args, files, fps: float):
        from utils import atomic_path, atomic_write

        self.args, self.label, self.writer = args, "", None
        self.jsonl = files.enter_context(atomic_write(args.jsonl, "w")) if args.jsonl else None
        self.annotate = files.enter_context(atomic_path(args.annotate)) if args.annotate else None
        self.fps = fps
        files.callback(self.close)

    def window(self, record: dict) -> None:
        from .outputs import clock

        best = record["topk"][:3]
        shown = "  ".join(f"{e['class']} {e['probability']:.2f}" for e in best)
        print(f"{clock(record['start'])}-{clock(record['end'])}  {shown}  | latency {record['latency']:.2f} s, "
              f"dropped {record['dropped']}", flush=True)
        self.label = f"{best[0]['class']} {best[0]['probability']:.2f}"
        self.line(record)

    def line(self, record: dict) -> None:
        import json

        if self.jsonl is not None:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()

    def frame(self, frame: np.ndarray) -> bool:
        """Draw the current label on the frame for --annotate and --show; False when the user
        closed the --show window (q or Esc)."""
        if self.annotate is None and not self.args.show:
            return True
        from .outputs import VideoWriter, draw_label

        drawn = draw_label(frame, self.label) if self.label else frame
        if self.annotate is not None:
            if self.writer is None:
                self.writer = VideoWriter(self.annotate, Path(self.args.annotate).suffix, self.fps)
            self.writer.write(drawn)
        if self.args.show:
            import cv2

            cv2.imshow("predict.py --live", drawn)
            return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)
        return True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def run_live(args, streams: list[StreamModel], weights: list[float], flow_of, device) -> int:
    """predict.py --live: score the source's windows as it plays until it ends, Ctrl-C or SIGTERM;
    returns the exit status (0 at its end, 130 Ctrl-C, 143 SIGTERM). A source that stalls or
    breaks for good keeps what was scored (the files complete, the summary) and then raises its
    UserError."""
    import contextlib
    import resource

    from .predictor import resolve_frame_size, window_record

    if args.show:
        check_show()
    size = resolve_frame_size(args, streams)
    kind = source_kind(args.live)
    speed = parse_pace(args.pace) if kind == "file" else 0.0  # a camera or stream comes at its own pace
    frames = (file_frames(Path(args.live), size) if kind == "file"
              else live_frames(args.live, size, args.reconnect, args.stall))

    def score(window, result) -> dict:
        return window_record(window, result, streams, weights, args.topk)
    scorer = LiveScorer(streams, flow_of, args.window, args.stride, args.window_frames, args.bound,
                        args.jpeg_quality, device, score)
    capture = Capture(frames, speed, drop=not (kind == "file" and speed == 0.0))
    latencies: list[float] = []
    windows, latency_sum, status, started, failure = 0, 0.0, 0, time.monotonic(), None
    restore = install_sigterm()
    with contextlib.ExitStack() as files:
        out = Outputs(args, files, source_fps(args.live) if args.annotate else 25.0)

        def emit(scored) -> None:
            nonlocal windows, latency_sum
            for _, record, newest in scored:
                latency = time.monotonic() - newest.arrived
                windows, latency_sum = windows + 1, latency_sum + latency
                latencies.append(latency)
                del latencies[:-10_000]  # the p95 of the last 10,000 windows: memory stays flat
                out.window({**record, "wall_time": round(time.time(), 3), "latency": round(latency, 4),
                            "dropped": capture.dropped})
        try:
            capture.start()
            for frame in capture:
                emit(scorer.push(frame))
                if not out.frame(frame.frame):
                    break
            else:
                emit(scorer.finish())
        except KeyboardInterrupt:
            status = 130
        except Stop:
            status = 143
        except UserError as err:  # the source stalled or broke: what was scored is kept, then the message
            status, failure = 1, err
        finally:
            capture.stop()
            restore()
        summary = {"summary": True, "windows": windows,
                   "latency_mean": round(latency_sum / windows, 4) if windows else None,
                   "latency_p95": round(float(np.percentile(latencies, 95)), 4) if latencies else None,
                   "frames_read": capture.read, "frames_dropped": capture.dropped,
                   "drop_rate": round(capture.dropped / capture.read, 4) if capture.read else 0.0,
                   "seconds": round(time.monotonic() - started, 3),
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                   "stopped_by": {0: "end", 1: "error", 130: "SIGINT", 143: "SIGTERM"}[status]}
        out.line(summary)
    print(f"\n{windows} windows in {summary['seconds']:.1f} s; latency mean {summary['latency_mean']} s, "
          f"p95 {summary['latency_p95']} s; {capture.dropped} of {capture.read} frames dropped "
          f"({100 * summary['drop_rate']:.1f}%); peak memory {summary['peak_rss_mb']} MB"
          + ("" if status == 0 else f"; stopped by {summary['stopped_by']}"), flush=True)
    if failure is not None:
        raise failure
    return status
