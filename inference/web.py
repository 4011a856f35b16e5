"""app.py's web page: upload a video (or record one with the browser's webcam) and see what the
two streams make of it: the fused top-5 with bars, the timeline of a long video, the annotated
video and predict.py's JSON record. The same Predictor as predict.py (inference/predictor.py);
one model in memory, requests queued one at a time."""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from utils import UserError

from .predictor import Predictor


@dataclass(frozen=True)
class Limits:
    """What the page accepts: at most ``max_mb`` megabytes and ``max_seconds`` seconds of video."""

    max_mb: float
    max_seconds: float


def check_upload(path: str | None, upload_root: Path, limits: Limits) -> Path:
    """The uploaded file, if it lies in the upload folder, is within the limits and is a video
    that decodes; else a UserError whose message the page shows."""
    from dataloader.video import VideoReader

    if not path:
        raise UserError("choose a video file (or record one with the webcam) first")
    file = Path(path).resolve()
    if not file.is_relative_to(upload_root.resolve()):
        raise UserError("that file is not an upload of this page, so it is not read")
    if not file.is_file():
        raise UserError("the upload is gone; upload the video again")
    megabytes = file.stat().st_size / 2**20
    if megabytes > limits.max_mb:
        raise UserError(f"the video is {megabytes:.0f} MB, more than this page takes ({limits.max_mb:g} MB)")
    try:
        times = VideoReader(file).timestamps()
    except UserError:
        times = []
    if not times:
        raise UserError(f"{file.name} is not a video this page can decode (a renamed or damaged file?)")
    if times[-1] - times[0] > limits.max_seconds:
        raise UserError(f"the video lasts {times[-1] - times[0]:.0f} s, more than this page takes "
                        f"({limits.max_seconds:g} s); cut it, or run predict.py on it")
    return file


def top5_table(record: dict) -> str:
    """The fused top-k with each stream's probability, as a Markdown table."""
    streams = list(record["streams"])
    head = "| class | fused | " + " | ".join(streams) + " |\n|---|---|" + "---|" * len(streams) + "\n"
    return head + "".join(f"| {e['class']} | {e['probability']:.5f} | "
                          + " | ".join(f"{e['streams'][s]:.5f}" for s in streams) + " |\n" for e in record["topk"])


class Analyser:
    """Runs the Predictor on an upload and makes the page's outputs, in a folder of its own
    for each request (kept until the next request replaces them)."""

    def __init__(self, predictor: Predictor, upload_root: Path, limits: Limits, work: Path):
        self.predictor, self.upload_root, self.limits, self.work = predictor, upload_root, limits, work
        self.lock = threading.Lock()  # one video at a time through the one model

    def __call__(self, path: str | None):
        from .outputs import annotate_video, plot_timeline

        try:
            video = check_upload(path, self.upload_root, self.limits)
            with self.lock:
                record = self.predictor(video)
                folder = Path(tempfile.mkdtemp(prefix="request-", dir=self.work))
                annotated = folder / f"{video.stem}_annotated.webm"
                annotate_video(video, annotated, record, None)
                plot = None
                if len(record.get("windows", [])) > 1:
                    plot = folder / f"{video.stem}_timeline.png"
                    plot_timeline(plot, record)
                for old in self.work.iterdir():  # the previous requests' files: served no more
                    if old != folder:
                        shutil.rmtree(old, ignore_errors=True)
        except UserError as err:
            return {}, "", None, None, None, f"**Cannot use this file:** {err}"
        label = {e["class"]: e["probability"] for e in record["topk"]}
        status = (f"{record['frames']} frames, {record['duration']:.1f} s of video, scored in "
                  f"{record['seconds']:.1f} s")
        return label, top5_table(record), str(plot) if plot else None, str(annotated), record, status


def build_page(analyser: Analyser, title: str):
    """The Gradio Blocks of the page."""
    import gradio as gr

    with gr.Blocks(title=title) as page:
        gr.Markdown(f"# {title}\nUpload a video, or record one with your webcam, then press **Recognise**. "
                    f"Classes: {', '.join(analyser.predictor.classes[:20])}"
                    f"{' ...' if len(analyser.predictor.classes) > 20 else ''}")
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="video", sources=["upload", "webcam"], include_audio=True, elem_id="video")
                run = gr.Button("Recognise", variant="primary", elem_id="recognise")
                status = gr.Markdown(elem_id="status")
            with gr.Column():
                label = gr.Label(label="top-5 (fused)", num_top_classes=5, elem_id="top5")
                table = gr.Markdown(elem_id="top5-table")
        with gr.Row():
            plot = gr.Image(label="timeline", type="filepath", elem_id="timeline")
            annotated = gr.Video(label="annotated video", height=300, elem_id="annotated")
        with gr.Accordion("predict.py's record (JSON)", open=False):
            record = gr.JSON(label="record", elem_id="record")
        run.click(analyser, inputs=video, outputs=[label, table, plot, annotated, record, status],
                  concurrency_limit=1)
    return page


def upload_folder() -> Path:
    """Gradio's upload and cache folder for this server: GRADIO_TEMP_DIR, set to a folder of its
    own unless the user set one."""
    if "GRADIO_TEMP_DIR" not in os.environ:
        os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="two-stream-app-")
    folder = Path(os.environ["GRADIO_TEMP_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    return folder
