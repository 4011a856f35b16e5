"""Sharded preprocessing: --shard K/N, torchrun and Slurm job arrays, --check."""
from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.jobs import resolve_shard, shard
from tools.make_demo_data import make_demo_data
from utils import UserError

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Job:
    name: str


def test_shards_are_disjoint_and_cover_every_video():
    jobs = [Job(f"v_{i:03d}") for i in range(50)][::-1]  # in any order
    for n in (1, 2, 3, 7):
        shards = [shard(jobs, k, n) for k in range(n)]
        names = [j.name for s in shards for j in s]
        assert sorted(names) == sorted(j.name for j in jobs) and len(names) == len(set(names))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_the_shard_comes_from_the_flag_torchrun_or_a_job_array():
    assert resolve_shard("2/5", {}) == (2, 5)
    assert resolve_shard(None, {"RANK": "1", "WORLD_SIZE": "4"}) == (1, 4)
    assert resolve_shard(None, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3",
                                "SLURM_ARRAY_TASK_MIN": "1"}) == (2, 3)
    assert resolve_shard(None, {}) == (0, 1)
    for bad in ("3/3", "a/2", "1", "²/3"):
        with pytest.raises(UserError, match="--shard wants K/N"):
            resolve_shard(bad, {})


def test_a_stepped_slurm_array_covers_every_shard_once():
    """--array=0-8:2: ids 0, 2, 4, 6, 8, COUNT 5, STEP 2 give shards 0..4, each once."""
    env = {"SLURM_ARRAY_TASK_COUNT": "5", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "8",
           "SLURM_ARRAY_TASK_STEP": "2"}
    got = [resolve_shard(None, {**env, "SLURM_ARRAY_TASK_ID": str(task)}) for task in range(0, 10, 2)]
    assert got == [(k, 5) for k in range(5)]
    stepped = {**env, "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_MAX": "18", "SLURM_ARRAY_TASK_ID": "14"}
    assert resolve_shard(None, stepped) == (2, 5)


@pytest.mark.parametrize("env", [
    # --array=1,3,7: not evenly spaced, 3 ids cannot be named as shards 0..2 from MIN/STEP
    {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1",
     "SLURM_ARRAY_TASK_MAX": "7", "SLURM_ARRAY_TASK_STEP": "1"},
    # step ids without the step variable: task 8 of 5 would be shard 8
    {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "5"},
    {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "5"},
    {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "0"},
    {"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "-1", "WORLD_SIZE": "4"}, {"RANK": "0", "WORLD_SIZE": "0"},
    {"RANK": "a", "WORLD_SIZE": "2"}, {"RANK": "²", "WORLD_SIZE": "4"},
])
def test_environments_that_name_no_shard_are_refused(env):
    with pytest.raises(UserError, match="fix:"):
        resolve_shard(None, env)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    make_demo_data(root, seed=3, frames=12, videos_per_class=2)  # 12 videos
    return root / "videos"


def run(*args, wait=True, env=None):
    command = [sys.executable, *map(str, args)]
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    proc = subprocess.run(command, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=300)
    return proc


def same_tree(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and files_a
    match, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files_a], shallow=False)
    assert not mismatch and not errors


@pytest.mark.slow
def test_two_shards_at_once_write_exactly_the_single_process_output(videos, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert run("tools/extract_frames.py", videos, one / "frames", "--size", 48, 64, "--workers", 1).returncode == 0
    shards = [run("tools/extract_frames.py", videos, two / "frames", "--size", 48, 64, "--workers", 1, "--shard",
                  f"{k}/2", wait=False) for k in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in shards]
    assert all(p.returncode == 0 for p in shards) and "shard 1/2: 6 of 12 videos" in outputs[1]
    same_tree(one / "frames", two / "frames")
    assert run("tools/compute_flow.py", one / "frames", one / "flow", "--method", "farneback",
               "--workers", 1).returncode == 0
    shards = [run("tools/compute_flow.py", two / "frames", two / "flow", "--method", "farneback", "--workers", 1,
                  "--shard", f"{k}/2", wait=False) for k in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in shards)
    same_tree(one / "flow", two / "flow")

    # --check: complete, then a deleted flow frame and a removed frame folder are found
    assert run("tools/compute_flow.py", two / "frames", two / "flow", "--check").returncode == 0
    victim = sorted((two / "flow" / "v").iterdir())[3]
    sorted(victim.iterdir())[4].unlink()
    check = run("tools/compute_flow.py", two / "frames", two / "flow", "--check")
    assert check.returncode == 1 and f"{victim.name}: v/ holds 10 of 11 flow frames (e.g. frame 5 is missing)" \
        in check.stdout
    import shutil
    shutil.rmtree(two / "frames" / victim.name)
    check = run("tools/extract_frames.py", videos, two / "frames", "--check")
    assert check.returncode == 1 and f"{victim.name}: no frame folder" in check.stdout


@pytest.mark.slow
def test_torchrun_shards_compute_flow_like_one_process(videos, tmp_path):
    frames = tmp_path / "frames"
    assert run("tools/extract_frames.py", videos, frames, "--size", 48, 64, "--workers", 1).returncode == 0
    assert run("tools/compute_flow.py", frames, tmp_path / "one", "--method", "farneback",
               "--workers", 1).returncode == 0
    proc = run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "tools/compute_flow.py", frames,
               tmp_path / "two", "--method", "farneback", "--workers", 1)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "shard 0/2" in proc.stdout and "shard 1/2" in proc.stdout
    same_tree(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_a_killed_shard_finishes_when_run_again(videos, tmp_path):
    frames = tmp_path / "frames"
    assert run("tools/extract_frames.py", videos, frames, "--size", 48, 64, "--workers", 1).returncode == 0
    flow = tmp_path / "flow"
    args = ["tools/compute_flow.py", frames, flow, "--method", "tvl1", "--workers", 1, "--shard", "1/2"]
    first = run(*args, wait=False)
    deadline = time.time() + 120
    while not any((flow / "u").glob("v_*")) and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert run(*args).returncode == 0
    mine = [p.name for p in sorted(frames.iterdir()) if not p.name.startswith(".")][1::2]
    assert sorted(p.name for p in (flow / "u").iterdir() if not p.name.startswith(".")) == mine
    assert sorted(p.name for p in (flow / "v").iterdir() if not p.name.startswith(".")) == mine


def test_check_finds_a_gap_in_a_frame_folder(tmp_path):
    from tools.extract_frames import FrameJob, incomplete_frames
    folder = tmp_path / "v_Run_g01_c01"
    folder.mkdir()
    job = FrameJob("v_Run_g01_c01", "Run/v_Run_g01_c01.avi", str(tmp_path), 1, None, 90)
    for number in (1, 2, 3):
        (folder / f"frame{number:06d}.jpg").write_bytes(b"jpeg")
    assert incomplete_frames(job) is None
    (folder / "frame000003.jpg").rename(folder / "frame000004.jpg")  # 1, 2, 4
    assert incomplete_frames(job) == "frame numbers do not run 1..3"
    for name in list(folder.iterdir()):
        name.unlink()
    assert incomplete_frames(job) == "no frames"
