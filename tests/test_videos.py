"""Videos as data: exact frames from video files (dataloader/decoders.py), the video index
(dataloader/video_index.py), the spatial stream from --video-root, flow from videos and the
pipeline without frames."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import spatial_cnn
from dataloader import decoders, index_videos, load_split
from dataloader.decoders import Timeline
from dataloader.video_index import VideoFiles, video_sources
from scorefiles import load_scores
from tests.videos import KINDS, make_shape_dataset, make_video
from utils import UserError

ROOT = Path(__file__).resolve().parent.parent
FRAMES = 60


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds")
    return {kind: make_video(kind, folder, FRAMES) for kind in KINDS}


def sequential_decode(path: Path) -> list[np.ndarray]:
    """The reference: every frame of a plain PyAV decode from the start, no seek."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def mismatches(path: Path, decoder: str, trials: int = 25) -> int:
    """Frames read at random positions (1 to 6 a read) that differ from the sequential decode."""
    reference = sequential_decode(path)
    timeline = decoders.scan(str(path), decoder)
    rng = random.Random(0)
    wrong = 0
    for _ in range(trials):
        wanted = sorted(rng.sample(range(timeline.frames), rng.randint(1, 6)))
        for index, frame in zip(wanted, decoders.read(str(path), wanted, timeline, decoder)):
            wrong += not np.array_equal(frame, reference[index])
    return wrong


# --- exact frames ----------------------------------------------------------------------------------

def torchcodec_loads() -> bool:
    try:
        decoders.check_decoder("torchcodec")
        return True
    except UserError:
        return False


TORCHCODEC = pytest.param("torchcodec", marks=pytest.mark.skipif(
    not torchcodec_loads(), reason="TorchCodec cannot load here: pip install torchcodec (in the lock) and FFmpeg's "
                                   "shared libraries, e.g. apt-get install ffmpeg (.ci/run installs them)"))


@pytest.mark.parametrize("decoder", ["pyav", "opencv", TORCHCODEC])
@pytest.mark.parametrize("kind", KINDS)
def test_frames_read_at_random_positions_equal_a_sequential_decode(videos, kind, decoder):
    assert len(sequential_decode(videos[kind])) == FRAMES
    assert decoders.scan(str(videos[kind]), decoder).frames == FRAMES
    assert mismatches(videos[kind], decoder) == 0


def test_the_lying_header_gives_the_decoded_count(videos):
    import av
    import cv2

    capture = cv2.VideoCapture(str(videos["lying-header-avi"]))
    claimed = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    with av.open(str(videos["lying-header-avi"])) as container:
        assert container.streams.video[0].frames == claimed == FRAMES + FRAMES // 2  # both read the header
    for decoder in ("pyav", "opencv", *(["torchcodec"] if torchcodec_loads() else [])):
        assert decoders.scan(str(videos["lying-header-avi"]), decoder).frames == FRAMES


def test_a_planted_off_by_one_after_a_seek_is_caught(videos, monkeypatch):
    group = decoders._pyav_group

    def one_late(container, stream, wanted, timeline, path):  # the frame after each one asked for
        shifted = [min(i + 1, timeline.frames - 1) for i in wanted]
        got = group(container, stream, shifted, timeline, path)
        return {i: got[j] for i, j in zip(wanted, shifted)}
    monkeypatch.setattr(decoders, "_pyav_group", one_late)
    assert mismatches(videos["xvid-avi"], "pyav") > 0


def test_a_planted_index_trusting_the_header_is_caught(videos, monkeypatch):
    import av

    def header_count(path):
        with av.open(path) as container:
            return Timeline(container.streams.video[0].frames)
    monkeypatch.setattr(decoders, "_pyav_scan", header_count)
    assert decoders.scan(str(videos["lying-header-avi"])).frames != FRAMES


@pytest.mark.parametrize("kind", ["xvid-avi", "h264-bframes", "vfr-mp4"])
def test_late_frames_come_from_a_seek_not_from_the_start(videos, kind, monkeypatch):
    timeline = decoders.scan(str(videos[kind]))
    assert len(timeline.keys) > 2
    reference = sequential_decode(videos[kind])

    def refuse(*args):
        raise AssertionError("decoded from the start")
    monkeypatch.setattr(decoders, "_pyav_count_from_start", refuse)
    wanted = [timeline.keys[-2] + 1, FRAMES - 1]
    for index, frame in zip(wanted, decoders.read(str(videos[kind]), wanted, timeline)):
        assert np.array_equal(frame, reference[index])


def test_timelines_round_trip_through_their_cache_cells():
    timeline = Timeline.from_scan([0, 512, 1024, 1536, 2560, 3072], keys=[0, 4])
    assert timeline.runs == ((0, 512, 4), (2560, 512, 2)) and timeline.stamp(4) == 2560
    assert Timeline.decode(6, *timeline.encode()) == timeline
    assert not Timeline.from_scan([0, 512, 512]).seekable  # repeated stamps: frames are counted instead
    with pytest.raises(ValueError):
        Timeline.decode(7, *timeline.encode())


# --- the video index -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_shape_dataset(root, per_class=5, frames=24, test_per_class=2)
    return root


def test_the_index_is_cached_and_follows_changed_files(shapes, tmp_path, monkeypatch):
    split = load_split(shapes / "splits", 1)
    files = VideoFiles(shapes / "videos", size=None)
    videos = index_videos(split.test, "test", [files], tmp_path)
    assert [v.frames for v in videos] == [24] * len(split.test)
    assert len(list(tmp_path.glob("video_index_*.csv"))) == 1

    scans = []
    real_scan = decoders.scan
    monkeypatch.setattr("dataloader.video_index.scan", lambda path, decoder: scans.append(path) or real_scan(path))
    index_videos(split.test, "test", [files], tmp_path)
    assert scans == []  # nothing changed: nothing decoded
    changed = shapes / "videos" / "Disc" / "v_Disc_g01_c01.avi"
    os.utime(changed, ns=(1, 1))
    index_videos(split.test, "test", [files], tmp_path)
    assert scans == [str(changed.resolve())]


def test_an_undecodable_video_is_one_message_or_skipped(shapes, tmp_path):
    root = tmp_path / "videos"
    for cls in ("Square", "Disc", "Bar"):
        (root / cls).mkdir(parents=True)
        for video in (shapes / "videos" / cls).iterdir():
            (root / cls / video.name).symlink_to(video)
    broken = root / "Bar" / "v_Bar_g01_c01.avi"
    broken.unlink()
    broken.write_text("not a video")
    split = load_split(shapes / "splits", 1)
    with pytest.raises(UserError) as err:
        index_videos(split.test, "test", video_sources(root), tmp_path)
    assert "v_Bar_g01_c01" in str(err.value) and "--allow-missing" in str(err.value)
    assert len(index_videos(split.test, "test", video_sources(root), tmp_path, allow_missing=True)) == \
        len(split.test) - 1


def test_an_edited_cache_reads_nothing_outside_the_root(shapes, tmp_path):
    split = load_split(shapes / "splits", 1)
    files = VideoFiles(shapes / "videos", size=None)
    index_videos(split.test, "test", [files], tmp_path)
    cache = next(tmp_path.glob("video_index_*.csv"))
    cache.write_text(cache.read_text().replace("Disc/v_Disc_g01_c01.avi", "../../outside.avi"))
    videos = index_videos(split.test, "test", [files], tmp_path)
    assert all(".." not in v.sources[0].file for v in videos)


# --- the spatial stream from videos ----------------------------------------------------------------

def spatial(shapes, out, source, *extra):
    return spatial_cnn.parse_args([
        *source, "--split-dir", str(shapes / "splits"), "--output-dir", str(out), "--arch", "resnet18",
        "--pretrained", "none", "--input-size", "48", "--batch-size", "3", "--workers", "0", "--test-frames", "5",
        "--lr", "0.01", *extra])


def test_a_frames_checkpoint_scores_the_same_from_the_videos(shapes, tmp_path):
    from tools import extract_frames

    frames = tmp_path / "frames"
    extract_frames.main(extract_frames.get_args_parser().parse_args(
        [str(shapes / "videos"), str(frames), "--size", "0", "0", "--quality", "100", "--workers", "1"]))
    spatial_cnn.main(spatial(shapes, tmp_path / "run", ["--data-root", str(frames)], "--epochs", "4"))
    checkpoint = str(tmp_path / "run" / "checkpoint.pth.tar")
    from_frames = spatial_cnn.main(spatial(shapes, tmp_path / "f", ["--data-root", str(frames)], "--evaluate",
                                           "--resume", checkpoint))
    from_videos = spatial_cnn.main(spatial(shapes, tmp_path / "v", ["--video-root", str(shapes / "videos")],
                                           "--evaluate", "--resume", checkpoint))
    assert from_videos["top1"] == from_frames["top1"]
    a = load_scores(tmp_path / "f" / "spatial_video_preds.pickle")
    b = load_scores(tmp_path / "v" / "spatial_video_preds.pickle")
    largest = max(np.abs(s).max() for s in a.values())
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].argmax() == b[key].argmax()
        assert np.abs(a[key] - b[key]).max() <= 0.01 * largest, key


def _interrupt_at_step(monkeypatch, step):
    from tests.test_engine import _interrupt_at_step as interrupt
    interrupt(monkeypatch, step)


def test_training_from_videos_resumes_exactly_and_stores_its_source(shapes, tmp_path, monkeypatch):
    source = ["--video-root", str(shapes / "videos"), "--frame-size", "40", "52"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    spatial_cnn.main(spatial(shapes, straight, source, "--epochs", "2"))
    with monkeypatch.context() as m:
        _interrupt_at_step(m, 2)
        with pytest.raises(SystemExit):
            spatial_cnn.main(spatial(shapes, broken, source, "--epochs", "2"))
    spatial_cnn.main(spatial_cnn.parse_args(["--resume", str(broken / "checkpoint.pth.tar")]))  # the README's form
    a = torch.load(straight / "checkpoint.pth.tar", weights_only=True)
    b = torch.load(broken / "checkpoint.pth.tar", weights_only=True)
    assert b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["frame_size"] == [40, 52]  # what predict.py resizes to
    assert a["args"]["video_root"] == str(shapes / "videos") and a["args"]["decoder"] == "pyav"


@pytest.mark.slow
def test_training_from_videos_under_torchrun_resumes_exactly(shapes, tmp_path):
    def launch(out, epochs, *extra):
        argv = ["--video-root", shapes / "videos", "--frame-size", "40", "52", "--split-dir", shapes / "splits",
                "--output-dir", out, "--arch", "resnet18", "--pretrained", "none", "--input-size", "32",
                "--batch-size", "2", "--workers", "0", "--test-frames", "3", "--device", "cpu", "--epochs", epochs,
                *extra]
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   "spatial_cnn.py", *map(str, argv)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    launch(tmp_path / "straight", 2)
    launch(tmp_path / "resumed", 1)
    launch(tmp_path / "resumed", 2, "--resume", tmp_path / "resumed" / "checkpoint.pth.tar")
    a = torch.load(tmp_path / "straight" / "checkpoint.pth.tar", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pth.tar", weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_video_root_errors_name_the_fix(shapes, tmp_path):
    with pytest.raises(UserError, match="--video-root folder not found"):
        spatial_cnn.main(spatial(shapes, tmp_path / "a", ["--video-root", str(tmp_path / "nope")], "--epochs", "1"))
    with pytest.raises(SystemExit):
        spatial(shapes, tmp_path / "b", ["--video-root", str(shapes / "videos"), "--frame-size", "0", "52"])


# --- flow from videos, the pipeline without frames ----------------------------------------------

def test_flow_from_videos_matches_flow_from_their_frames(shapes, tmp_path):
    from tools import compute_flow, extract_frames

    videos = tmp_path / "videos"
    (videos / "Disc").mkdir(parents=True)
    for name in ("v_Disc_g01_c01.avi", "v_Disc_g02_c01.avi"):
        (videos / "Disc" / name).symlink_to(shapes / "videos" / "Disc" / name)
    extract_frames.main(extract_frames.get_args_parser().parse_args(
        [str(videos), str(tmp_path / "frames"), "--size", "48", "64", "--quality", "100", "--workers", "1"]))

    def flow(*argv):
        return compute_flow.main(compute_flow.get_args_parser().parse_args([*map(str, argv), "--workers", "1",
                                                                            "--method", "farneback"]))
    assert flow(tmp_path / "frames", tmp_path / "from_frames") == 0
    assert flow("--from-videos", videos, tmp_path / "from_videos", "--size", "48", "64") == 0
    a = sorted((tmp_path / "from_frames" / "u" / "v_Disc_g01_c01").iterdir())
    b = sorted((tmp_path / "from_videos" / "u" / "v_Disc_g01_c01").iterdir())
    assert [p.name for p in a] == [p.name for p in b] and len(a) == 23
    from PIL import Image
    diff = np.mean([np.abs(np.asarray(Image.open(x), float) - np.asarray(Image.open(y), float)).mean()
                    for x, y in zip(a, b)])
    assert diff < 2.0  # the same motion, up to the frames' JPEG error
    assert flow("--from-videos", videos, tmp_path / "from_videos", "--size", "48", "64", "--check") == 0
    assert sorted(p.name for p in (tmp_path / "from_videos").iterdir() if not p.name.startswith(".")) == ["u", "v"]


def test_a_decoder_that_cannot_load_is_one_message_with_the_fix(shapes, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_torchcodec(name, *args, **kwargs):
        if name.startswith("torchcodec"):
            raise ImportError("No module named 'torchcodec'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", without_torchcodec)
    with pytest.raises(UserError) as err:
        spatial_cnn.main(spatial(shapes, tmp_path / "a", ["--video-root", str(shapes / "videos")], "--decoder",
                                 "torchcodec", "--epochs", "1"))
    assert "--decoder torchcodec cannot load" in str(err.value) and "apt-get install ffmpeg" in str(err.value)
    assert "--decoder pyav" in str(err.value)


def test_predict_py_scores_a_video_trained_checkpoint_as_its_evaluate_does(shapes, tmp_path):
    import predict

    source = ["--video-root", str(shapes / "videos"), "--frame-size", "40", "52"]
    spatial_cnn.main(spatial(shapes, tmp_path / "run", source, "--epochs", "1"))
    checkpoint = tmp_path / "run" / "checkpoint.pth.tar"
    assert torch.load(checkpoint, weights_only=True)["frame_source"] == "video"
    spatial_cnn.main(spatial(shapes, tmp_path / "eval", source, "--evaluate", "--resume", str(checkpoint)))
    evaluated = load_scores(tmp_path / "eval" / "spatial_video_preds.pickle")
    videos = sorted((shapes / "videos").glob("*/*_g01_c01.avi"))
    out = tmp_path / "pred.json"
    assert predict.main(predict.get_args_parser().parse_args(
        [*map(str, videos), "--spatial", str(checkpoint), "--device", "cpu", "--json", str(out)])) == 0
    for video, record in zip(videos, json.loads(out.read_text())):
        expected = evaluated[video.stem[2:]]
        scores = np.array(record["streams"]["spatial"]["scores"])
        assert np.abs(scores - expected).max() <= 1e-4 * np.abs(expected).max(), video.name
