"""torchrun with 2 CPU processes (gloo): sharded evaluation equals one process, checkpoints
move between world sizes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.synth import make_dataset
from scorefiles import load_scores

ROOT = Path(__file__).resolve().parent.parent


def common(data, out):
    return ["--flow-root", str(data.flow_root), "--split-dir", str(data.split_dir), "--output-dir", str(out),
            "--arch", "resnet18", "--pretrained", "none", "--input-size", "32", "--batch-size", "2",
            "--workers", "0", "--test-frames", "3", "--lr", "1e-3", "--device", "cpu"]


def launch(args, processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    if processes == 1:
        command = [sys.executable, "motion_cnn.py", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "motion_cnn.py", *args]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 3 test videos x 3 positions = 9 test items: not divisible by 2 processes
    return make_dataset(tmp_path_factory.mktemp("dist"), clips=1, frames=13, size=(36, 44))


@pytest.mark.slow
@pytest.mark.parametrize("crops", ["1", "10"])
def test_sharded_evaluation_equals_one_process(data, tmp_path, crops):
    init = tmp_path / "init.pth"
    from models import build_model
    torch.manual_seed(1)
    torch.save(build_model("resnet18", 3, 20, "none").state_dict(), init)
    one, two = tmp_path / "one", tmp_path / "two"
    launch([*common(data, one), "--evaluate", "--test-crops", crops, "--resume", str(init)], 1)
    proc = launch([*common(data, two), "--evaluate", "--test-crops", crops, "--resume", str(init)], 2)
    a = load_scores(one / "motion_video_preds.pickle")
    b = load_scores(two / "motion_video_preds.pickle")
    assert len(a) == 3 and a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-4)
    assert proc.stdout.count("motion test:") == 1  # only rank 0 reports and writes
    assert not list(two.glob(".*.tmp"))


@pytest.mark.slow
def test_checkpoints_move_between_world_sizes(data, tmp_path):
    out = tmp_path / "run"
    proc = launch([*common(data, out), "--epochs", "1"], 2)
    assert "x2" in proc.stdout and proc.stdout.count("epoch 1/1") == 1
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["epoch"] == 1 and not any(k.startswith("module.") for k in ckpt["model"])
    assert len((out / "train.csv").read_text().splitlines()) == 2
    launch([*common(data, out), "--epochs", "2", "--resume", str(out / "checkpoint.pth.tar")], 1)
    assert torch.load(out / "checkpoint.pth.tar", weights_only=True)["epoch"] == 2
    launch([*common(data, out), "--epochs", "3", "--resume", str(out / "checkpoint.pth.tar")], 2)
    assert torch.load(out / "checkpoint.pth.tar", weights_only=True)["epoch"] == 3
    assert len((out / "train.csv").read_text().splitlines()) == 4


def test_cuda_with_too_few_gpus_is_a_clear_error(data, tmp_path):
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has 2 GPUs")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [a if a != "cpu" else "cuda" for a in common(data, tmp_path)]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "motion_cnn.py", *args, "--evaluate"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    # each process says what is wrong and how to fix it (torchrun then adds its own summary)
    assert "error: torchrun started 2 processes on this node but only" in proc.stderr
    # the fix that works here: fewer processes on a GPU machine, the CPU on one without
    assert ("fix: --nproc_per_node=" if torch.cuda.device_count() else "fix: --device cpu") in proc.stderr


def _meters_worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    import engine
    from dataloader import spatial_normalizer
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    loader = [(torch.full((4, 1, 3, 2, 2), 7 * (rank + 1), dtype=torch.uint8), torch.zeros(4, dtype=torch.long))] * 2
    ctx = engine.Context(torch.device("cpu"), spatial_normalizer(), None, engine.World(rank, world_size))
    restored = engine.Meters(loss=50.0, correct1=40.0, correct5=100.0, count=100)  # from a mid-epoch checkpoint
    meters, steps = engine.train_one_epoch(model, loader, torch.nn.CrossEntropyLoss(),
                                           torch.optim.SGD(model.parameters(), lr=0.1),
                                           torch.amp.GradScaler("cpu", enabled=False), ctx, 0, restored)
    if rank == 0:
        Path(out_file).write_text(f"{meters.count} {steps}")
    dist.destroy_process_group()


def test_resumed_epoch_meters_count_restored_samples_once(tmp_path):
    """2 processes x 2 steps x 4 samples = 16 new samples on top of the 100 restored ones."""
    import torch.multiprocessing as mp
    mp.spawn(_meters_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2, join=True)
    assert (tmp_path / "out").read_text() == "116 2"


def test_torchrun_on_cuda_without_enough_gpus_gives_a_fix_that_works_here(monkeypatch):
    import engine
    from utils import UserError
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(UserError, match="only 0 CUDA devices are visible\n  fix: --device cpu"):
        engine.init_distributed("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="fix: --nproc_per_node=1"):
        engine.init_distributed("cuda")
