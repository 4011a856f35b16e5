"""pipeline.py: a folder of class folders of videos to a fusion table, and its resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.make_demo_data import make_demo_data

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["--arch", "resnet18", "--pretrained", "none", "--input-size", "40", "--batch-size", "4", "--lr", "0.01",
         "--lr-scheduler", "cosine", "--epochs", "4", "--test-frames", "3", "--device", "cpu"]


def pipeline(videos: Path, out: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "pipeline.py", str(videos), str(out), "--size", "48", "64",
                             "--flow-method", "farneback", "--workers", "1", "--test-fraction", "0.34", *TRAIN],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)


@pytest.mark.slow
def test_pipeline_runs_to_a_fusion_table_and_resumes_after_a_kill(tmp_path):
    make_demo_data(tmp_path / "data", seed=2, frames=16, videos_per_class=3)  # class folders of videos
    videos, out = tmp_path / "data" / "videos", tmp_path / "out"

    first = pipeline(videos, out)
    checkpoint = out / "motion" / "checkpoint.pth.tar"
    deadline = time.time() + 240
    while not checkpoint.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()[0][-3000:]  # still in the motion training
    os.killpg(first.pid, signal.SIGKILL)  # the whole process tree, mid-epoch: no graceful checkpoint
    first.wait()
    assert not (out / "fusion.json").exists()

    second = pipeline(videos, out)
    log, _ = second.communicate(timeout=300)
    assert second.returncode == 0, log[-3000:]
    for stage in ("splits", "frames", "flow", "spatial"):
        assert f"{stage}: done in an earlier run, skipped" in log
    assert "resumed from" in log and str(checkpoint) in log  # the motion training went on from its checkpoint
    rows = (out / "motion" / "train.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3", "4"]  # each epoch once
    assert "fusion" in log and (out / "fusion.json").exists() and (out / "splits" / "classInd.txt").exists()

    third = pipeline(videos, out)  # everything done: only the fusion table again
    log, _ = third.communicate(timeout=120)
    assert third.returncode == 0 and "motion: done in an earlier run, skipped" in log and "fusion top-1" in log
