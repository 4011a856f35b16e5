"""predict.py --live: the live windows equal predict.py's timeline, frames are dropped rather than
queued when scoring falls behind, memory does not grow with the source, and it stops cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import predict
from inference import live
from tests.videos import action_change_video, untrained_checkpoint
from utils import UserError

ROOT = Path(__file__).resolve().parent.parent
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    return {"spatial": untrained_checkpoint(root / "spatial.pth", "spatial", seed=1),
            "motion": untrained_checkpoint(root / "motion.pth", "motion", seed=2),
            "video": action_change_video(root / "change.avi", 6.0), "root": root}


def offline_windows(setup, window: str, stride: str) -> list[dict]:
    out = setup["root"] / f"offline_{window}_{stride}.json"
    args = predict.get_args_parser().parse_args(
        [str(setup["video"]), "--spatial", str(setup["spatial"]), "--motion", str(setup["motion"]), "--window", window,
         "--stride", stride, "--flow-method", "farneback", "--workers", "1", "--device", "cpu", "--json", str(out)])
    assert predict.main(args) == 0
    return json.loads(out.read_text())[0]["windows"]


def live_run(setup, *extra: str, jsonl: Path) -> tuple[int, list[dict]]:
    args = predict.get_args_parser().parse_args(
        ["--live", str(setup["video"]), "--spatial", str(setup["spatial"]), "--motion", str(setup["motion"]),
         "--flow-method", "farneback", "--workers", "1", "--device", "cpu", "--jsonl", str(jsonl), *extra])
    status = predict.main(args)
    return status, [json.loads(line) for line in jsonl.read_text().splitlines()]


def assert_same_windows(offline: list[dict], live_records: list[dict]) -> None:
    assert [(w["start"], w["end"]) for w in live_records] == [(w["start"], w["end"]) for w in offline]
    for a, b in zip(offline, live_records):
        pa = {e["class"]: e["probability"] for e in a["topk"]}
        pb = {e["class"]: e["probability"] for e in b["topk"]}
        assert pa.keys() == pb.keys()
        assert max(abs(pa[c] - pb[c]) for c in pa) <= 1e-4 * max(pa.values())
        for stream in ("spatial", "motion"):
            qa = {e["class"]: e["probability"] for e in a["streams"][stream]["topk"]}
            qb = {e["class"]: e["probability"] for e in b["streams"][stream]["topk"]}
            assert max(abs(qa[c] - qb[c]) for c in qa) <= 1e-4 * max(qa.values())


@pytest.mark.parametrize("window,stride", [("2", "1"), ("1.5", "2"), ("10", "1")])
def test_live_windows_at_fast_pace_equal_the_offline_timeline(setup, window, stride, tmp_path):
    offline = offline_windows(setup, window, stride)
    status, records = live_run(setup, "--window", window, "--stride", stride, "--pace", "fast",
                               jsonl=tmp_path / "live.jsonl")
    windows, summary = records[:-1], records[-1]
    assert status == 0 and summary["summary"] and summary["frames_dropped"] == 0 and summary["frames_read"] == 60
    assert_same_windows(offline, windows)
    assert all({"wall_time", "latency", "dropped"} <= set(w) for w in windows)


def test_a_planted_window_with_one_frame_too_many_fails_the_equality(setup, tmp_path, monkeypatch):
    offline = offline_windows(setup, "2", "1")
    push = live.WindowPlanner.push

    def one_too_many(self, index, seconds):
        return [live.Window(w.first, w.end + 1, w.start, w.stop) for w in push(self, index, seconds)]
    monkeypatch.setattr(live.WindowPlanner, "push", one_too_many)
    status, records = live_run(setup, "--window", "2", "--stride", "1", "--pace", "fast", jsonl=tmp_path / "l.jsonl")
    with pytest.raises(AssertionError):
        assert_same_windows(offline, records[:-1])


def test_the_planner_makes_plan_windows_windows_one_at_a_time():
    from inference.windows import plan_windows

    rng = np.random.default_rng(0)
    for _ in range(50):
        times = list(np.cumsum(rng.uniform(0.01, 0.3, rng.integers(2, 80))))
        window, stride = float(rng.uniform(0.1, 3)), float(rng.uniform(0.1, 3))
        planner = live.WindowPlanner(window, stride)
        made = [w for i, t in enumerate(times) for w in planner.push(i, t)] + planner.finish(times[-1])
        assert made == plan_windows(times, window, stride)


def test_bad_live_sources_and_options_are_one_message(setup, tmp_path):
    def run(*argv):
        return predict.main(predict.get_args_parser().parse_args(
            [*argv, "--spatial", str(setup["spatial"]), "--device", "cpu"]))
    with pytest.raises(UserError, match="no such file"):
        run("--live", str(tmp_path / "missing.mp4"))
    with pytest.raises(UserError, match="cannot open the stream"):
        run("--live", "rtsp://127.0.0.1:9/none", "--stall", "1", "--reconnect", "0")
    with pytest.raises(UserError, match="--pace"):
        run("--live", str(setup["video"]), "--pace", "slow")
    with pytest.raises(UserError, match="--jsonl"):
        run("--live", str(setup["video"]), "--json", str(tmp_path / "x.json"))
    with pytest.raises(UserError, match="writing it would replace it"):
        run("--live", str(setup["video"]), "--jsonl", str(setup["video"]))
    with pytest.raises(UserError, match="or --live"):
        run(str(setup["video"]), "--live", str(setup["video"]))
    with pytest.raises(UserError, match="--show needs OpenCV with window support"):
        run("--live", str(setup["video"]), "--show")


def test_a_stalled_stream_is_reopened_then_ends_with_one_message(monkeypatch):
    opened = []

    class Dead:
        def read(self):
            return False, None

        def release(self):
            pass
    monkeypatch.setattr(live, "open_capture", lambda source, stall: opened.append(source) or Dead())
    monkeypatch.setattr(live.time, "sleep", lambda seconds: None)
    with pytest.raises(UserError, match=r"stalled or ended \(2 reconnects tried\)"):
        list(live.live_frames("rtsp://camera/1", None, reconnect=2, stall_seconds=1.0))
    assert opened == ["rtsp://camera/1"] * 3


def live_process(setup, video: Path, jsonl: Path, *extra: str, flow: str = "tvl1") -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.Popen(
        [sys.executable, "predict.py", "--live", str(video), "--spatial", str(setup["spatial"]), "--motion",
         str(setup["motion"]), "--flow-method", flow, "--workers", "1", "--device", "cpu", "--size", "96", "128",
         "--jsonl", str(jsonl), *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


@pytest.mark.slow
def test_realtime_live_drops_frames_keeps_latency_and_memory_flat(setup, tmp_path):
    """60 s and 30 s files played at 24x their frame rate with inference slower than that on purpose
    (TV-L1 flow at 96x128 for every window): frames are dropped and counted, latency stays
    bounded, and the peak memory of the 60 s run is that of the 30 s run."""
    summaries = {}
    for seconds in (30, 60):
        video = action_change_video(tmp_path / f"v{seconds}.avi", seconds, fps=10, seed=seconds)
        proc = live_process(setup, video, tmp_path / f"{seconds}.jsonl", "--pace", "24x", "--window", "1",
                            "--stride", "0.5")
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, log[-3000:]
        records = [json.loads(line) for line in (tmp_path / f"{seconds}.jsonl").read_text().splitlines()]
        summaries[seconds] = records[-1]
        windows = records[:-1]
        assert windows and max(w["latency"] for w in windows) < 10.0
        assert [w["dropped"] for w in windows] == sorted(w["dropped"] for w in windows)
    for summary in summaries.values():
        assert summary["frames_dropped"] > 0 and summary["frames_read"] > summary["frames_dropped"]
        assert summary["latency_p95"] < 5.0
    assert summaries[60]["frames_read"] == 600
    assert summaries[60]["peak_rss_mb"] < 1.1 * summaries[30]["peak_rss_mb"]


@pytest.mark.slow
@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_stops_with_complete_files_and_a_summary(setup, tmp_path, signum, status):
    jsonl, annotated = tmp_path / "live.jsonl", tmp_path / "live.mp4"
    proc = live_process(setup, setup["video"], jsonl, "--pace", "realtime", "--annotate", str(annotated),
                        "--window", "0.5", "--stride", "0.5", flow="farneback")
    deadline = time.time() + 60
    while time.time() < deadline and "latency" not in (proc.stdout.readline() or "latency"):
        pass
    proc.send_signal(signum)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == status, log[-3000:]
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert records[-1]["summary"] and records[-1]["stopped_by"] == signal.Signals(signum).name
    assert annotated.stat().st_size > 0 and "windows in" in log
    assert not list(tmp_path.glob(".*"))  # no scratch file left behind


def test_a_stream_that_breaks_keeps_what_was_scored(setup, tmp_path, monkeypatch):
    def frames_then_a_stall(source, size, reconnect, stall_seconds):
        for seconds, frame in live.file_frames(setup["video"], size):
            if seconds > 3.0:
                raise UserError(f"the stream {source} stalled or ended ({reconnect} reconnects tried)")
            yield seconds, frame
    monkeypatch.setattr(live, "live_frames", frames_then_a_stall)
    jsonl = tmp_path / "live.jsonl"
    with pytest.raises(UserError, match="stalled"):
        predict.main(predict.get_args_parser().parse_args(
            ["--live", "rtsp://camera/1", "--spatial", str(setup["spatial"]), "--device", "cpu", "--window", "1",
             "--jsonl", str(jsonl)]))
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert records[-1]["stopped_by"] == "error" and records[-1]["windows"] == len(records) - 1 >= 2
