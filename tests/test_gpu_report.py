"""benchmarks/gpu_report.py: the CPU smoke run writes the whole report; a broken step is a row."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_report

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_cpu_smoke_writes_every_row(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_report.py", "--cpu-smoke", "--output-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    markdown = (tmp_path / "gpu_report.md").read_text()
    steps = ["CUDA tests", "bench_train", "bench_train --compile", "TV-L1", "loader", "demo", "predict.py",
             "torchrun evaluation"]
    for step in steps:  # every step has its rows, each with a status
        assert any(r["figure"].startswith(step) for r in report["rows"]), step
        assert step in markdown
    assert {r["status"] for r in report["rows"]} <= {"ran", "pass", "not applicable"}
    assert all(r["detail"] for r in report["rows"] if r["status"] == "not applicable")
    assert {"gpu", "torch", "cuda", "date"} <= set(report) and report["mode"] == "cpu smoke"


def test_a_failing_step_is_reported_not_dropped(tmp_path):
    ctx = gpu_report.Context(smoke=True, out=tmp_path, gpus=0)
    steps = [gpu_report.Step("exits badly", [sys.executable, "-c", "raise SystemExit('boom: no device')"], 60,
                             gpu_report.parse_demo),
             gpu_report.Step("prints no table", [sys.executable, "-c", "print('hello')"], 60,
                             gpu_report.parse_bench_flow),
             gpu_report.Step("too slow", [sys.executable, "-c", "import time; time.sleep(30)"], 1,
                             gpu_report.parse_bench_flow),
             gpu_report.Step("fine", [sys.executable, "-c", "print('ok')"], 60, lambda out, ctx: [gpu_report.Row("x")])]
    rows = gpu_report.run_report(ctx, steps)
    assert [(r.figure, r.status) for r in rows] == [("exits badly", "failed"), ("prints no table", "failed"),
                                                    ("too slow", "failed"), ("x", "ran")]
    assert "boom: no device" in rows[0].detail and "no table" in rows[1].detail and "time limit" in rows[2].detail
    gpu_report.write_report(tmp_path, {"mode": "test"}, rows)
    assert (tmp_path / "gpu_report.md").read_text().count("| failed |") == 3


def test_a_missed_goal_is_fail_on_a_gpu_run_and_unchecked_in_the_smoke_run(tmp_path):
    gpu = gpu_report.Context(smoke=False, out=tmp_path, gpus=1)
    smoke = gpu_report.Context(smoke=True, out=tmp_path, gpus=0)
    assert gpu_report.goal_row("b/a", 0.85, 0.90, gpu).status == "FAIL"
    assert gpu_report.goal_row("b/a", 0.95, 0.90, gpu).status == "pass"
    assert gpu_report.goal_row("b/a", 0.85, 0.90, smoke).status == "ran"


def test_an_unusable_output_dir_is_one_message_before_any_step(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert gpu_report.main(["--cpu-smoke", "--output-dir", str(tmp_path / "file" / "report")]) == 1
    assert "cannot write the report to" in capsys.readouterr().err
