"""What predict.py makes of a video's windows: the segment table, a CSV, the timeline plot
and the annotated video."""
from __future__ import annotations

import csv
from pathlib import Path

from utils import UserError, atomic_path, atomic_write

from .windows import Segment


def clock(seconds: float) -> str:
    """mm:ss.s (h:mm:ss past an hour)."""
    minutes, rest = divmod(max(seconds, 0.0), 60)
    if minutes >= 60:
        hours, minutes = divmod(int(minutes), 60)
        return f"{hours}:{minutes:02d}:{rest:04.1f}"
    return f"{int(minutes):02d}:{rest:04.1f}"


def print_segments(segments: list[Segment]) -> None:
    print(f"  {'from':>8} {'to':>8}  {'action':30} {'mean p':>7}")
    for s in segments:
        print(f"  {clock(s.start):>8} {clock(s.stop):>8}  {s.label or '(no confident action)':30} {s.score:7.3f}")


def write_csv(path: str, records: list[dict], streams: list[str]) -> None:
    """One row per window and rank: video, start, end, rank, class, fused and per-stream probability."""
    with atomic_write(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "start", "end", "rank", "class", "probability", *streams])
        for record in records:
            for window in record["windows"]:
                for rank, entry in enumerate(window["topk"], start=1):
                    writer.writerow([record["video"], window["start"], window["end"], rank, entry["class"],
                                     entry["probability"], *[entry["streams"][s] for s in streams]])


def plot_timeline(path: Path, record: dict, top: int = 5) -> None:
    """Fused probability over time of the classes that top some window (at most ``top`` of
    them, by their best probability), one labelled line each; time in mm:ss."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    windows = record["windows"]
    centres = [(w["start"] + w["end"]) / 2 for w in windows]
    probability = {}
    for i, window in enumerate(windows):
        for entry in window["topk"]:
            probability.setdefault(entry["class"], [0.0] * len(windows))[i] = entry["probability"]
    leaders = {w["topk"][0]["class"] for w in windows}
    shown = sorted(leaders, key=lambda c: -max(probability[c]))[:top]
    fig, ax = plt.subplots(figsize=(10, 3.5))
    for name in shown:
        ax.plot(centres, probability[name], marker="o", markersize=3, label=name)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (mm:ss)")
    ax.set_ylabel("fused probability")
    ax.set_title(Path(record["video"]).name)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: clock(x)))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


class VideoWriter:
    """Frames (BGR) into a video file: .webm as VP8 through PyAV (what browsers play), .avi as
    MJPG and .mp4 as MPEG-4 through OpenCV. Opened at the first frame."""

    def __init__(self, path: Path, suffix: str, fps: float):
        self.path, self.suffix, self.fps = path, suffix.lower(), fps
        self.container = self.stream = self.writer = None

    def write(self, frame) -> None:
        if self.container is None and self.writer is None:
            self._open(frame.shape[1], frame.shape[0])
        if self.container is not None:
            import av

            for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                self.container.mux(packet)
        else:
            self.writer.write(frame)

    def _open(self, width: int, height: int) -> None:
        if self.suffix == ".webm":
            from fractions import Fraction

            import av

            self.container = av.open(str(self.path), "w", format="webm")
            self.stream = self.container.add_stream("libvpx", rate=Fraction(self.fps).limit_denominator(1001))
            self.stream.width, self.stream.height = width - width % 2, height - height % 2  # VP8: even sides
            self.stream.pix_fmt = "yuv420p"
            self.stream.codec_context.bit_rate = 2_000_000
            return
        import cv2

        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.suffix == ".avi" else "mp4v"))
        self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
        if not self.writer.isOpened():
            raise UserError(f"cannot write {self.path} (OpenCV has no encoder for {self.suffix})\n"
                            f"  fix: use --annotate with .avi, .mp4 or .webm")

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self.container = None
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def draw_label(frame, text: str):
    """``text`` in white with a black edge at the frame's top left, on a copy."""
    import cv2

    frame = frame.copy()
    scale = max(0.35, frame.shape[0] / 480)
    for colour, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(frame, text, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, width)
    return frame


def annotate_video(source: Path, target: Path, record: dict, size: tuple[int, int] | None) -> None:
    """The video with the current top class and its probability drawn on each frame (the
    latest window that has started; without windows, the video's label), at its frame rate."""
    from dataloader.video import VideoReader

    reader = VideoReader(source, size)
    windows = record.get("windows") or [{"start": 0.0, "topk": record["topk"]}]
    with atomic_path(target) as partial:  # renamed when complete
        writer = VideoWriter(partial, target.suffix, 0.0)
        try:
            current = 0
            for _, seconds, frame in reader.frames():
                writer.fps = writer.fps or reader.fps or 25.0
                while current + 1 < len(windows) and windows[current + 1]["start"] <= seconds:
                    current += 1
                best = windows[current]["topk"][0]
                writer.write(draw_label(frame, f"{best['class']} {best['probability']:.2f}"))
        finally:
            writer.close()
        if not writer.fps:
            raise UserError(f"{source}: no frame could be decoded, so {target} was not written")
