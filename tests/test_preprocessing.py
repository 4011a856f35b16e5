"""Preprocessing tools: frame extraction, optical flow, the synthetic data set."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dataloader import LAYOUTS, MotionDataset, index_videos, load_split, stream_sources
from flow.storage import dequantize, quantize
from tools import compute_flow, extract_frames, make_demo_data

H, W = 64, 80
ROOT = Path(__file__).resolve().parent.parent


def textured_video(path: Path, dx: float, dy: float, frames: int = 6, seed: int = 0) -> None:
    """A smooth random texture translating by (dx, dy) pixels per frame (x right, y down)."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.uniform(0, 255, (H * 3, W * 3)).astype(np.float32), (0, 0), 2.0)
    big = cv2.normalize(big, None, 20, 235, cv2.NORM_MINMAX)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
    for t in range(frames):
        shift = np.float32([[1, 0, dx * t - W], [0, 1, dy * t - H]])  # sub-pixel warp: content moves by +t*(dx,dy)
        frame = cv2.warpAffine(big, shift, (W, H), flags=cv2.INTER_CUBIC)
        writer.write(cv2.cvtColor(np.clip(frame, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
    writer.release()


def frames_args(video_dir, out, *extra):
    return extract_frames.get_args_parser().parse_args([str(video_dir), str(out), "--size", "0", "0",
                                                         "--workers", "1", "--quality", "95", *extra])


def flow_args(frames_dir, out, *extra):
    return compute_flow.get_args_parser().parse_args([str(frames_dir), str(out), "--workers", "1", *extra])


@pytest.mark.parametrize("method", ["tvl1", "farneback"])
def test_known_displacement_is_found_in_the_flow_jpegs(tmp_path, method):
    videos = tmp_path / "videos" / "Move"
    videos.mkdir(parents=True)
    dx, dy = 2.0, -1.5  # right and up
    textured_video(videos / "v_Move_g01_c01.avi", dx, dy)
    assert extract_frames.main(frames_args(tmp_path / "videos", tmp_path / "frames")) == 0
    frames = sorted((tmp_path / "frames" / "v_Move_g01_c01").iterdir())
    assert [f.name for f in frames] == [f"frame{i:06d}.jpg" for i in range(1, 7)]
    assert compute_flow.main(flow_args(tmp_path / "frames", tmp_path / "flow", "--method", method)) == 0
    for axis, expected in (("u", dx), ("v", dy)):
        files = sorted((tmp_path / "flow" / axis / "v_Move_g01_c01").iterdir())
        assert len(files) == 5  # n frames give n-1 flow frames
        for f in files:
            image = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            pixels = dequantize(image, 20.0)[12:-12, 12:-12]  # away from the borders
            assert abs(float(np.median(pixels)) - expected) < 0.25, (axis, f.name, np.median(pixels))


def test_quantization_convention():
    flow = np.array([-25.0, -20.0, 0.0, 10.0, 20.0, 30.0])
    q = quantize(flow, 20.0)
    assert q.tolist() == [0, 0, 128, 191, 255, 255]
    assert np.allclose(dequantize(q, 20.0), [-20, -20, 0.078, 9.96, 20, 20], atol=0.01)


def test_flow_output_is_read_by_the_motion_dataset(tmp_path):
    videos = tmp_path / "videos" / "Move"
    videos.mkdir(parents=True)
    textured_video(videos / "v_Move_g01_c01.avi", 1.0, 0.0, frames=13)
    extract_frames.main(frames_args(tmp_path / "videos", tmp_path / "frames"))
    compute_flow.main(flow_args(tmp_path / "frames", tmp_path / "flow", "--method", "farneback"))
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    (split_dir / "classInd.txt").write_text("1 Move\n")
    (split_dir / "trainlist01.txt").write_text("Move/v_Move_g01_c01.avi 1\n")
    (split_dir / "testlist01.txt").write_text("")
    split = load_split(split_dir)
    (video,) = index_videos(split.train, "train", stream_sources("motion", LAYOUTS["ucf101"], flow_root=tmp_path / "flow"))
    assert video.frames == 12
    stack, _, _ = MotionDataset([video], train=False, input_size=32, test_frames=3)[0]
    assert stack.shape == (20, 32, 32)
    x = stack[0::2].float().mean().item()
    assert x > 128 + 3  # rightward motion: x above the zero level 128


def test_extraction_is_resumable(tmp_path):
    videos = tmp_path / "videos" / "Move"
    videos.mkdir(parents=True)
    for i in (1, 2):
        textured_video(videos / f"v_Move_g0{i}_c01.avi", 1.0, 0.0, seed=i)
    out = tmp_path / "frames"
    assert extract_frames.main(frames_args(tmp_path / "videos", out)) == 0
    done = out / "v_Move_g01_c01" / "frame000001.jpg"
    stamp = done.stat().st_mtime_ns
    # a run stopped half-way: video 2 only half written, in its partial folder
    shutil.rmtree(out / "v_Move_g02_c01")
    partial = out / ".partial-v_Move_g02_c01"
    partial.mkdir()
    (partial / "frame000001.jpg").write_bytes(b"half")
    assert extract_frames.main(frames_args(tmp_path / "videos", out)) == 0
    assert done.stat().st_mtime_ns == stamp  # finished video skipped
    assert not partial.exists() and len(os.listdir(out / "v_Move_g02_c01")) == 6

    flow = tmp_path / "flow"
    assert compute_flow.main(flow_args(out, flow, "--method", "farneback")) == 0
    stamp = (flow / "u" / "v_Move_g01_c01" / "frame000001.jpg").stat().st_mtime_ns
    shutil.rmtree(flow / "u" / "v_Move_g02_c01")  # stopped between the y and the x rename
    assert compute_flow.main(flow_args(out, flow, "--method", "farneback")) == 0
    assert (flow / "u" / "v_Move_g01_c01" / "frame000001.jpg").stat().st_mtime_ns == stamp
    assert len(os.listdir(flow / "u" / "v_Move_g02_c01")) == len(os.listdir(flow / "v" / "v_Move_g02_c01")) == 5


def test_a_corrupt_video_is_reported_and_the_others_extracted(tmp_path, capsys):
    videos = tmp_path / "videos" / "Move"
    videos.mkdir(parents=True)
    textured_video(videos / "v_Move_g01_c01.avi", 1.0, 0.0)
    (videos / "v_Move_g02_c01.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI this is not a video" * 10)
    status = extract_frames.main(frames_args(tmp_path / "videos", tmp_path / "frames"))
    assert status == 1
    out = capsys.readouterr().out
    assert "1 of 2 videos failed" in out and "v_Move_g02_c01" in out
    assert len(os.listdir(tmp_path / "frames" / "v_Move_g01_c01")) == 6
    assert not (tmp_path / "frames" / "v_Move_g02_c01").exists()
    # and a frame folder with a broken JPEG fails its flow, not the others
    os.makedirs(tmp_path / "frames" / "v_Bad_g01_c01")
    for i in (1, 2):
        (tmp_path / "frames" / "v_Bad_g01_c01" / f"frame{i:06d}.jpg").write_bytes(b"broken")
    assert compute_flow.main(flow_args(tmp_path / "frames", tmp_path / "flow", "--method", "farneback")) == 1
    assert (tmp_path / "flow" / "u" / "v_Move_g01_c01").is_dir()
    assert not (tmp_path / "flow" / "u" / "v_Bad_g01_c01").exists()


def test_demo_data_is_seeded_and_in_ucf101_format(tmp_path):
    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
        return h.hexdigest()

    a = make_demo_data.make_demo_data(tmp_path / "a", seed=3, frames=8, videos_per_class=5)
    make_demo_data.make_demo_data(tmp_path / "b", seed=3, frames=8, videos_per_class=5)
    make_demo_data.make_demo_data(tmp_path / "c", seed=4, frames=8, videos_per_class=5)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    split = load_split(a)
    assert split.num_classes == 6 and len(split.train) == 6 and len(split.test) == 24
    capture = cv2.VideoCapture(str(tmp_path / "a" / "videos" / "RedUp" / "v_RedUp_g01_c01.avi"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 8


# --- failures and interruptions ----------------------------------------------------------------

def _frame_folders(root: Path, videos: int, frames: int, size=(48, 64)) -> None:
    rng = np.random.default_rng(0)
    for v in range(videos):
        folder = root / f"v_Move_g{v + 1:02d}_c01"
        folder.mkdir(parents=True)
        for i in range(1, frames + 1):
            cv2.imwrite(str(folder / f"frame{i:06d}.jpg"), rng.integers(0, 255, size, dtype=np.uint8))


def test_a_failed_flow_write_leaves_the_video_unfinished(tmp_path, monkeypatch, capsys):
    _frame_folders(tmp_path / "frames", videos=3, frames=4)
    real_imwrite, calls = cv2.imwrite, {"n": 0}

    def full_disk_after_the_first_video(*args, **kwargs):  # 3 flow frames x 2 components
        calls["n"] += 1
        return False if calls["n"] > 6 else real_imwrite(*args, **kwargs)
    monkeypatch.setattr(cv2, "imwrite", full_disk_after_the_first_video)
    status = compute_flow.main(flow_args(tmp_path / "frames", tmp_path / "flow", "--method", "farneback"))
    out = capsys.readouterr().out
    assert status == 1 and "2 of 3 videos failed" in out and "disk full or not writable" in out
    finished = [p.name for p in (tmp_path / "flow" / "u").iterdir() if not p.name.startswith(".")]
    assert finished == ["v_Move_g01_c01"]
    monkeypatch.setattr(cv2, "imwrite", real_imwrite)
    assert compute_flow.main(flow_args(tmp_path / "frames", tmp_path / "flow", "--method", "farneback")) == 0
    for axis in ("u", "v"):
        assert all(len(list((tmp_path / "flow" / axis / f"v_Move_g{v:02d}_c01").iterdir())) == 3 for v in (1, 2, 3))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupting_compute_flow_stops_its_workers(tmp_path, sig):
    _frame_folders(tmp_path / "frames", videos=6, frames=8, size=(64, 80))  # TV-L1 on noise: about a second a video
    command = [sys.executable, "tools/compute_flow.py", str(tmp_path / "frames"), str(tmp_path / "flow"),
               "--method", "tvl1", "--workers", "2"]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    children: set[int] = set()
    deadline = time.time() + 60
    while len(children) < 2 and time.time() < deadline:  # the pool's workers are up
        time.sleep(0.2)
        children = _children(proc.pid)
    time.sleep(1.0)
    # Ctrl-C reaches the whole process group; SIGTERM (a cluster) the main process only
    os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, stderr
    assert "interrupted" in stderr and "run again to resume" in stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
    time.sleep(0.5)
    assert children and not [pid for pid in children if _alive(pid)]
    assert subprocess.run(command, cwd=ROOT, capture_output=True, env=env, timeout=300).returncode == 0
    assert len(list((tmp_path / "flow" / "u").iterdir())) == 6


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with open(task / "children") as f:
            found |= {int(c) for c in f.read().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --- what an output was made from, and one writer a video ------------------------------------------

def _frame_bytes(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_replaced_video_or_new_flags_are_extracted_again_and_its_flow_follows(tmp_path):
    videos = tmp_path / "videos" / "Move"
    videos.mkdir(parents=True)
    textured_video(videos / "v_Move_g01_c01.avi", 2.0, 0.0, frames=6, seed=0)
    textured_video(videos / "v_Move_g02_c01.avi", 0.0, 2.0, frames=6, seed=1)
    frames, flow = tmp_path / "frames", tmp_path / "flow"
    assert extract_frames.main(frames_args(tmp_path / "videos", frames)) == 0
    assert compute_flow.main(flow_args(frames, flow, "--method", "farneback")) == 0
    kept = _frame_bytes(frames / "v_Move_g02_c01"), _frame_bytes(flow / "u" / "v_Move_g02_c01")
    old_flow = _frame_bytes(flow / "u" / "v_Move_g01_c01")
    time.sleep(0.01)
    textured_video(videos / "v_Move_g01_c01.avi", -2.0, 0.0, frames=8, seed=2)  # same name, new content
    assert extract_frames.main(frames_args(tmp_path / "videos", frames)) == 0
    assert len(list((frames / "v_Move_g01_c01").iterdir())) == 8  # the new video's frames
    assert compute_flow.main(flow_args(frames, flow, "--method", "farneback")) == 0
    assert len(list((flow / "u" / "v_Move_g01_c01").iterdir())) == 7 and \
        _frame_bytes(flow / "u" / "v_Move_g01_c01") != old_flow
    assert (_frame_bytes(frames / "v_Move_g02_c01"), _frame_bytes(flow / "u" / "v_Move_g02_c01")) == kept  # untouched
    # another flag that shapes the output: every video again
    assert extract_frames.main(extract_frames.get_args_parser().parse_args(
        [str(tmp_path / "videos"), str(frames), "--size", "32", "40", "--workers", "1"])) == 0
    assert cv2.imread(str(frames / "v_Move_g02_c01" / "frame000001.jpg")).shape == (32, 40, 3)
    assert compute_flow.main(flow_args(frames, flow, "--method", "farneback")) == 0
    assert cv2.imread(str(flow / "u" / "v_Move_g02_c01" / "frame000001.jpg")).shape[:2] == (32, 40)
    assert compute_flow.main(flow_args(frames, flow, "--check")) == 0


def test_a_second_writer_waits_for_the_first_and_never_shares_its_folder(tmp_path):
    """Two processes on one video (two pipelines, or shard runs of different N): the second
    waits for the first's claim, then finds the video finished instead of clearing its partial."""
    from tools.jobs import claim
    videos = tmp_path / "videos" / "Move"
    videos.mkdir(parents=True)
    textured_video(videos / "v_Move_g01_c01.avi", 2.0, 0.0, frames=6)
    frames = tmp_path / "frames"
    frames.mkdir()
    command = [sys.executable, "tools/extract_frames.py", str(tmp_path / "videos"), str(frames), "--workers", "1",
               "--size", "0", "0"]
    with claim(frames, "v_Move_g01_c01"):  # a first writer, mid-video
        partial = frames / ".partial-v_Move_g01_c01"
        partial.mkdir()
        (partial / "frame000001.jpg").write_bytes(b"the first writer's frame")
        second = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(3)
        assert second.poll() is None  # waiting for the claim
        assert (partial / "frame000001.jpg").read_bytes() == b"the first writer's frame"
    assert second.wait(timeout=60) == 0  # then it does the video itself: the first one left it unfinished
    assert len(list((frames / "v_Move_g01_c01").iterdir())) == 6


def test_a_frame_folder_with_a_gap_fails_alone_and_the_others_get_their_flow(tmp_path, capsys):
    videos = tmp_path / "videos" / "Move"
    videos.mkdir(parents=True)
    for g in (1, 2):
        textured_video(videos / f"v_Move_g0{g}_c01.avi", 2.0, 0.0, frames=6, seed=g)
    frames = tmp_path / "frames"
    assert extract_frames.main(frames_args(tmp_path / "videos", frames)) == 0
    (frames / "v_Move_g01_c01" / "frame000003.jpg").unlink()  # frames 1, 2, 4, 5, 6
    assert compute_flow.main(flow_args(frames, tmp_path / "flow", "--method", "farneback")) == 1
    printed = capsys.readouterr().out
    assert "v_Move_g01_c01: UserError" in printed and "frame numbers do not run 1..5" in printed
    assert len(list((tmp_path / "flow" / "u" / "v_Move_g02_c01").iterdir())) == 5


# --- what a rerun redoes: each input alone -----------------------------------------------------------

@pytest.fixture
def extracted(tmp_path):
    videos = tmp_path / "videos" / "Move"
    videos.mkdir(parents=True)
    textured_video(videos / "v_Move_g01_c01.avi", 1.0, 0.0)
    out = tmp_path / "frames"
    assert extract_frames.main(frames_args(tmp_path / "videos", out)) == 0
    return videos / "v_Move_g01_c01.avi", out / "v_Move_g01_c01"


def _mtime(folder: Path) -> int:
    return (folder / "frame000001.jpg").stat().st_mtime_ns


def test_a_touched_video_is_not_extracted_again(extracted, tmp_path):
    video, frames = extracted
    before = _mtime(frames)
    os.utime(video, ns=(1, video.stat().st_mtime_ns + 10**9))  # the same content, a new time
    assert extract_frames.main(frames_args(tmp_path / "videos", tmp_path / "frames")) == 0
    assert _mtime(frames) == before


def test_only_the_size_changed_redoes_the_frames(extracted, tmp_path):
    _, frames = extracted
    assert extract_frames.main(extract_frames.get_args_parser().parse_args(
        [str(tmp_path / "videos"), str(tmp_path / "frames"), "--size", "32", "40", "--workers", "1",
         "--quality", "95"])) == 0  # --quality as before: only --size differs
    assert cv2.imread(str(frames / "frame000001.jpg")).shape[:2] == (32, 40)


def test_frames_from_before_stamps_are_kept_and_a_damaged_stamp_is_redone(extracted, tmp_path):
    video, frames = extracted
    stamp = tmp_path / "frames" / ".jobs" / "v_Move_g01_c01.json"
    stamp.unlink()  # extracted by a version that wrote no stamps
    before = _mtime(frames)
    assert extract_frames.main(frames_args(tmp_path / "videos", tmp_path / "frames")) == 0
    assert _mtime(frames) == before
    stamp.write_text("{not json")  # a stamp that proves nothing: the video may have been replaced
    textured_video(video, -1.0, 0.0, seed=5)
    assert extract_frames.main(frames_args(tmp_path / "videos", tmp_path / "frames")) == 0
    assert _mtime(frames) != before


def test_a_video_claimed_by_a_stopped_process_names_it(extracted, tmp_path, capsys):
    """A stopped (Ctrl-Z) extraction holds its video's claim: the next run says who holds it."""
    import threading

    from tools.jobs import claim
    out = tmp_path / "frames"
    held, release = threading.Event(), threading.Event()

    def holder():
        with claim(out, "v_Move_g01_c01"):
            held.set()
            release.wait(10)
    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    threading.Timer(1.0, release.set).start()
    assert extract_frames.main(frames_args(tmp_path / "videos", out)) == 0
    thread.join()
    assert f"v_Move_g01_c01: waiting for pid {os.getpid()} on" in capsys.readouterr().err


def test_a_stamp_written_before_content_hashes_still_holds_until_the_video_changes():
    from tools.jobs import stamps_match
    old = {"video": {"bytes": 10, "mtime_ns": 5}, "size": [48, 64]}  # an earlier version's stamp
    assert stamps_match(old, {"video": {"bytes": 10, "mtime_ns": 5, "sha256": "ab"}, "size": [48, 64]})
    assert not stamps_match(old, {"video": {"bytes": 10, "mtime_ns": 6, "sha256": "ab"}, "size": [48, 64]})
    assert not stamps_match(old, {"video": {"bytes": 10, "mtime_ns": 5, "sha256": "ab"}, "size": [32, 40]})
    hashed = {"video": {"bytes": 10, "mtime_ns": 5, "sha256": "ab"}}
    assert stamps_match(hashed, {"video": {"bytes": 10, "mtime_ns": 9, "sha256": "ab"}})  # touched only
    assert not stamps_match(hashed, {"video": {"bytes": 10, "mtime_ns": 5, "sha256": "cd"}})
