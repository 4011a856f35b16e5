"""The benchmark scripts still run and print their tables (tiny sizes; no timing asserted)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # each runs a benchmark script end to end


def run(*args: str) -> str:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_bench_loader_and_bench_train(tmp_path):
    out = run("benchmarks/bench_loader.py", "--data", str(tmp_path), "--workers", "1", "--batch-size", "2",
              "--batches", "2", "--videos", "6", "--input-size", "64")
    lines = [line.split() for line in out.splitlines() if line.startswith(("spatial", "motion"))]
    assert [line[0] for line in lines] == ["spatial", "motion"] and all(float(line[4]) > 0 for line in lines)
    out = run("benchmarks/bench_loader.py", "--data", str(tmp_path), "--source", "videos", "--workers", "1",
              "--batch-size", "2", "--batches", "2", "--videos", "4", "--video-frames", "30", "--input-size", "64",
              "--decoders", "pyav")
    rows = [line.split() for line in out.splitlines() if line.startswith(("train ", "test "))]
    assert [row[0] for row in rows] == ["train", "test"] and all(len(row) == 5 and float(row[4]) > 0 for row in rows)
    assert "disk: videos" in out
    out = run("benchmarks/bench_train.py", "--data", str(tmp_path), "--device", "cpu", "--input-size", "64",
              "--spatial-batch", "2", "--motion-batch", "2", "--test-batch", "8", "--steps", "1", "--workers", "1",
              "--ref-workers", "1", "--test-frames", "2")
    rows = [line.split() for line in out.splitlines() if line.startswith(("spatial ", "motion "))]
    assert [row[0] for row in rows] == ["spatial", "motion"] and all(len(row) == 13 for row in rows)


def test_bench_disk():
    out = run("benchmarks/bench_disk.py", "--generate", "--seconds", "1", "--size", "48", "64", "--workers", "1")
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith(("videos ", "frames ", "flow "))}
    assert set(rows) == {"videos", "frames", "flow"} and int(rows["frames"][2]) == 30 and int(rows["flow"][5]) == 58


def test_bench_flow():
    out = run("benchmarks/bench_flow.py", "--pairs", "1", "--batch", "1", "--size", "48", "64", "--no-compile")
    assert "OpenCV DualTVL1, 1 CPU core" in out and "tvl1-torch CPU" in out


def test_bench_predict(tmp_path):
    out = run("benchmarks/bench_predict.py", "--seconds", "2", "--size", "48", "64", "--input-size", "40",
              "--flow-method", "farneback", "--workers", "1", "--data", str(tmp_path))
    rows = [line.split() for line in out.splitlines() if line.startswith(("whole ", "timeline "))]
    assert [(r[0], r[1]) for r in rows] == [("whole", "spatial"), ("whole", "both"), ("timeline", "spatial"),
                                            ("timeline", "both")]
    assert all(float(r[3]) > 0 and float(r[5]) > 0 for r in rows) and int(rows[3][7]) > 0


def test_bench_export():
    pytest.importorskip("onnxruntime")
    out = run("benchmarks/bench_export.py", "--arch", "resnet18", "--input-size", "32", "--batch", "2", "--repeat", "1")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    assert set(rows) >= {"torch", "onnxruntime", "torchscript"}
    assert float(rows["onnxruntime"][2].rstrip("x")) > 0 and float(rows["onnxruntime"][4]) <= 1e-4
