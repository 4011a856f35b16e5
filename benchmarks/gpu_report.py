"""The whole GPU picture in one command: every GPU code path run, every figure in one table.

    python benchmarks/gpu_report.py [--output-dir gpu_report]      # on a CUDA machine (make gpu-report)
    python benchmarks/gpu_report.py --cpu-smoke                     # the same steps on the CPU at tiny sizes

Runs, one after the other, each in its own process with a time limit and a progress line: the
CUDA tests, bench_train.py at docs/benchmarks.md's GPU settings (with and without --compile),
bench_flow.py, bench_loader.py, the demo on the device, predict.py on the device against the
CPU, and a 1- against a 2-process torchrun evaluation when 2 GPUs exist. Writes
DIR/gpu_report.md (figure, value, goal, status) and DIR/gpu_report.json with the GPU, the
torch and CUDA versions and the date. Every row says ran, pass, FAIL (missed its goal),
failed (the step broke, with its error) or not applicable, and why: nothing is dropped.
With --cpu-smoke the goals (set for one H100) are shown but not checked.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guards import OUTPUT, add_path  # noqa: E402
from utils import HelpFormatter  # noqa: E402


@dataclass
class Row:
    figure: str
    value: str = ""
    goal: str = ""
    status: str = "ran"  # ran | pass | FAIL | failed | not applicable
    detail: str = ""


@dataclass
class Step:
    """A command whose output ``parse`` turns into rows; ``applicable`` None or why not."""

    name: str
    command: list[str]
    timeout: float
    parse: Callable[[str, "Context"], list[Row]]
    applicable: str | None = None
    env: dict = field(default_factory=dict)


@dataclass
class Context:
    smoke: bool
    out: Path
    gpus: int


def goal_row(figure: str, value: float, goal: float, ctx: Context, at_least: bool = True) -> Row:
    met = value >= goal if at_least else value <= goal
    text = f"{'>=' if at_least else '<='} {goal:g}"
    if ctx.smoke:
        return Row(figure, f"{value:.2f}", text, "ran", "cpu smoke: the goal is for one H100, not checked")
    return Row(figure, f"{value:.2f}", text, "pass" if met else "FAIL")


def parse_pytest(output: str, ctx: Context) -> list[Row]:
    summary = re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", output)
    counts = {kind: int(n) for n, kind in summary}
    status = "failed" if counts.get("failed") or counts.get("error") else "ran"
    return [Row("CUDA tests", ", ".join(f"{n} {k}" for k, n in counts.items()) or "none", "all pass", status)]


def parse_bench_train(label: str) -> Callable[[str, Context], list[Row]]:
    def parse(output: str, ctx: Context) -> list[Row]:
        rows = []
        for line in output.splitlines():
            cells = line.split()
            if len(cells) == 13 and cells[0] in ("spatial", "motion"):
                stream = cells[0]
                ba, bc, dc, ec = (float(cells[i]) for i in (8, 9, 10, 12))
                rows.append(Row(f"{stream} training {label}: end to end (videos/s)", cells[2]))
                rows.append(goal_row(f"{stream} training {label}: end to end / compute only (b/a)", ba, 0.90, ctx))
                if stream == "motion":
                    rows.append(goal_row(f"motion training {label}: end to end / reference (b/c)", bc, 4.0, ctx))
                rows.append(goal_row(f"{stream} evaluation {label}: / min(inference, decode) (d/ceiling)", dc, 0.80, ctx))
                rows.append(Row(f"{stream} evaluation {label}: 10 crops / min(inference/10, decode)", f"{ec:.2f}"))
        if not rows:
            raise ValueError("no table in bench_train.py's output")
        return rows
    return parse


def parse_bench_flow(output: str, ctx: Context) -> list[Row]:
    rows = []
    for line in output.splitlines():
        match = re.match(r"(.{10,62}?)\s+([\d.]+|nan)\s+([\d.]+|nan)\s+([\d.]+|nan)$", line.strip())
        if match:
            label, rate = match.group(1).strip(), float(match.group(2))
            if "CUDA" in label or ("tvl1-torch" in label and "CPU" not in label):
                if rate == rate:
                    rows.append(goal_row(f"TV-L1 pairs/s: {label}", rate, 700, ctx))
                else:
                    rows.append(Row(f"TV-L1 pairs/s: {label}", "", ">= 700", "not applicable", "no CUDA device"))
            else:
                rows.append(Row(f"TV-L1 pairs/s: {label}", f"{rate:.2f}"))
    if not rows:
        raise ValueError("no table in bench_flow.py's output")
    match = re.search(r"agreement (CUDA|CPU): .* = ([\d.]+) /255", output)
    if match is None:
        raise ValueError("no agreement line in bench_flow.py's output")
    figure = f"TV-L1 ({match.group(1)}) against OpenCV: mean |difference| of the stored flow (/255)"
    value = float(match.group(2))
    if match.group(1) == "CUDA":
        rows.append(goal_row(figure, value, 0.5, ctx, at_least=False))
    else:
        rows.append(Row(figure, f"{value:.3f}", "<= 0.5 (on CUDA)", "ran", "no CUDA device: tvl1-torch on the CPU"))
    return rows


def parse_bench_loader(output: str, ctx: Context) -> list[Row]:
    rows = []
    for line in output.splitlines():
        cells = line.split()
        if len(cells) == 5 and cells[0] in ("spatial", "motion") and cells[1].isdigit():
            rows.append(Row(f"loader {cells[0]}, {cells[1]} workers: samples/s (x reference)",
                            f"{cells[2]} ({cells[4]}x)"))
    if not rows:
        raise ValueError("no table in bench_loader.py's output")
    return rows


def parse_demo(output: str, ctx: Context) -> list[Row]:
    report = json.loads((ctx.out / "demo" / "fusion.json").read_text())
    seconds = re.search(r"demo finished in (\d+)s", output)
    return [Row("demo: spatial / motion / fusion top-1 (%)",
                f"{report['spatial']['top1']:.2f} / {report['motion']['top1']:.2f} / {report['fusion']['top1']:.2f}"),
            Row("demo: wall time (s)", seconds.group(1) if seconds else "?")]


def parse_predict(output: str, ctx: Context) -> list[Row]:
    records = {d: json.loads((ctx.out / f"predict_{d}.json").read_text())[0] for d in ("device", "cpu")}
    top = {d: r["topk"][0]["class"] for d, r in records.items()}
    worst = 0.0
    for stream, entry in records["device"]["streams"].items():
        a, b = entry["scores"], records["cpu"]["streams"][stream]["scores"]
        scale = max(abs(x) for x in b) or 1.0
        worst = max(worst, max(abs(x - y) for x, y in zip(a, b)) / scale)
    same = top["device"] == top["cpu"]
    return [Row("predict.py: same top-1 on the device as on the CPU", f"{top['device']} / {top['cpu']}", "equal",
                "pass" if same else "FAIL"),
            Row("predict.py: largest score difference / largest score", f"{worst:.2e}", "<= 2e-2 (bf16)",
                "pass" if worst <= 2e-2 else "FAIL")]


def parse_torchrun(output: str, ctx: Context) -> list[Row]:
    top1 = re.search(r"ONE ([\d.]+)", output)
    rows = [Row("torchrun evaluation, 1 process: motion top-1 (%)", top1.group(1) if top1 else "?")]
    diff = re.search(r"MAXDIFF ([\d.e+-]+)", output)
    if diff:
        value = float(diff.group(1))
        rows.append(Row("torchrun evaluation, 2 processes against 1: largest score difference", f"{value:.2e}",
                        "<= 1e-3", "pass" if value <= 1e-3 else "FAIL"))
    else:
        rows.append(Row("torchrun evaluation, 2 processes against 1", "", "equal", "not applicable",
                        f"{ctx.gpus} GPU(s): the comparison needs 2"))
    return rows


def build_steps(ctx: Context, python: str) -> list[Step]:
    """The steps at GPU settings, or at tiny sizes on the CPU for --cpu-smoke."""
    out, smoke = ctx.out, ctx.smoke
    device = "cpu" if smoke else "cuda"
    cores = str(max(1, (os.cpu_count() or 2) - 1))
    if smoke:
        train = ["--device", "cpu", "--input-size", "48", "--spatial-batch", "2", "--motion-batch", "2",
                 "--test-batch", "8", "--steps", "1", "--workers", "1", "--ref-workers", "1", "--test-frames", "2",
                 "--videos", "6", "--data", str(out / "bench_data")]
        flow = ["--pairs", "1", "--batch", "1", "--size", "48", "64", "--no-compile"]
        loader = ["--workers", "1", "--batch-size", "2", "--batches", "2", "--videos", "6", "--input-size", "48",
                  "--data", str(out / "loader_data")]
        demo = ["--epochs", "1", "--videos-per-class", "6", "--flow-method", "farneback", "--workers", "1"]
    else:
        train = ["--device", "cuda", "--arch", "resnet101", "--input-size", "224", "--workers", cores,
                 "--ref-workers", "8", "--steps", "30", "--data", str(out / "bench_data")]
        flow = ["--gpu-batch", "64"]
        loader = ["--workers", cores, "--data", str(out / "loader_data")]
        demo = []
    cuda_tests = None if not smoke else "no CUDA device (cpu smoke)"
    processes = "2" if ctx.gpus >= 2 else "1"
    return [
        Step("CUDA tests", [python, "-m", "pytest", "-q", "-k", "cuda", "tests"], 900, parse_pytest, cuda_tests),
        Step("bench_train", [python, "benchmarks/bench_train.py", *train], 1800, parse_bench_train("eager")),
        Step("bench_train --compile", [python, "benchmarks/bench_train.py", *train, "--compile"], 2400,
             parse_bench_train("compiled"), "torch.compile on the CPU is too slow for a smoke run" if smoke else None),
        Step("bench_flow", [python, "benchmarks/bench_flow.py", *flow], 1200, parse_bench_flow),
        Step("bench_loader", [python, "benchmarks/bench_loader.py", *loader], 900, parse_bench_loader),
        Step("demo", [python, "demo.py", "--output-dir", str(out / "demo"), "--device", device, *demo], 1800,
             parse_demo),
        Step("predict on the device and on the CPU", [python, "-c", PREDICT_BOTH, str(out), device], 900,
             parse_predict),
        Step("torchrun evaluation", [python, "-c", TORCHRUN_EVAL, str(out), device, processes], 900, parse_torchrun),
    ]


# predict.py on one of the demo's videos with the demo's checkpoints, on the device and on the CPU
PREDICT_BOTH = """
import subprocess, sys
from pathlib import Path
out, device = Path(sys.argv[1]), sys.argv[2]
video = sorted((out / 'demo' / 'data' / 'videos').rglob('*.avi'))[0]
for name, dev in (('device', device), ('cpu', 'cpu')):
    subprocess.run([sys.executable, 'predict.py', str(video), '--spatial', str(out / 'demo' / 'spatial' / 'model_best.pth.tar'),
                    '--motion', str(out / 'demo' / 'motion' / 'model_best.pth.tar'), '--size', '48', '64',
                    '--flow-method', 'farneback', '--device', dev, '--workers', '1', '--json', str(out / f'predict_{name}.json')],
                   check=True)
"""


# the demo's motion checkpoint evaluated by torchrun with 1 (and, given 2, with 2) processes
TORCHRUN_EVAL = """
import json, subprocess, sys
from pathlib import Path
sys.path.insert(0, '.')
from scorefiles import load_scores
out, device, processes = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
demo = out / 'demo'
scores = {}
for n in sorted({1, processes}):
    target = out / f'torchrun_{n}'
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={n}', 'motion_cnn.py',
               '--flow-root', str(demo / 'flow'), '--split-dir', str(demo / 'data' / 'splits'), '--output-dir', str(target),
               '--evaluate', '--resume', str(demo / 'motion' / 'model_best.pth.tar'), '--device', device, '--workers', '1']
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    if n == 1:
        print('ONE', result.stdout.split('top-1 ')[1].split('%')[0])
    scores[n] = load_scores(target / 'motion_video_preds.pickle')
if processes == 2:
    print('MAXDIFF', max(float(abs(scores[1][k] - scores[2][k]).max()) for k in scores[1]))
"""


def run_step(step: Step, ctx: Context, index: int, total: int) -> list[Row]:
    """One step, its rows; a broken step is one 'failed' row with its error, never dropped."""
    head = f"[{index}/{total}] {step.name}"
    if step.applicable is not None:
        print(f"{head}: not applicable ({step.applicable})", flush=True)
        return [Row(step.name, "", "", "not applicable", step.applicable)]
    print(f"{head} ...", flush=True)
    started = time.time()
    env = {**os.environ, "TQDM_DISABLE": "1", **step.env}
    try:
        proc = subprocess.run(step.command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=step.timeout)
    except subprocess.TimeoutExpired:
        print(f"{head}: failed (over its limit of {step.timeout:.0f} s)", flush=True)
        return [Row(step.name, "", "", "failed", f"over its time limit of {step.timeout:.0f} s")]
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 and step.parse is not parse_pytest:
        error = (output.strip().splitlines() or ["no output"])[-1][:300]
        print(f"{head}: failed (exit status {proc.returncode}: {error})", flush=True)
        return [Row(step.name, "", "", "failed", f"exit status {proc.returncode}: {error}")]
    try:
        rows = step.parse(output, ctx)
    except Exception as err:  # a missing table or file is this step's failure, not the report's
        print(f"{head}: failed ({type(err).__name__}: {err})", flush=True)
        return [Row(step.name, "", "", "failed", f"{type(err).__name__}: {err}")]
    print(f"{head}: done in {time.time() - started:.0f} s", flush=True)
    return rows


def environment(ctx: Context) -> dict:
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (cpu smoke)"
    return {"gpu": gpu, "gpus": ctx.gpus, "torch": torch.__version__, "cuda": torch.version.cuda or "none",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu_cores": os.cpu_count(), "mode": "cpu smoke" if ctx.smoke else "gpu"}


def write_report(out: Path, header: dict, rows: list[Row]) -> None:
    from utils import atomic_write

    lines = [f"# GPU report ({header['mode']})", "",
             ", ".join(f"{k}: {v}" for k, v in header.items()), "",
             "| figure | value | goal | status | detail |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.figure} | {r.value} | {r.goal} | {r.status} | {r.detail} |" for r in rows]
    with atomic_write(out / "gpu_report.md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with atomic_write(out / "gpu_report.json", "w") as f:
        json.dump({**header, "rows": [asdict(r) for r in rows]}, f, indent=1)


def run_report(ctx: Context, steps: list[Step]) -> list[Row]:
    rows = []
    for i, step in enumerate(steps, start=1):
        rows += run_step(step, ctx, i, len(steps))
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_path(p, "--output-dir", role=OUTPUT, folder=True, type=Path, default=Path("gpu_report"),
             help="where gpu_report.md and the steps' logs go")
    p.add_argument("--cpu-smoke", action="store_true", help="the same steps on the CPU at tiny sizes (what CI runs)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("error: no CUDA device here\n  fix: run it on a GPU machine, or pass --cpu-smoke to check the script "
              "itself on the CPU", file=sys.stderr)
        return 1
    try:  # before the steps' minutes: an unusable folder is one message, not a lost report
        args.output_dir.mkdir(parents=True, exist_ok=True)
        probe = args.output_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        print(f"error: cannot write the report to {args.output_dir}: {err.strerror}\n  fix: pass a writable "
              f"--output-dir", file=sys.stderr)
        return 1
    ctx = Context(args.cpu_smoke, args.output_dir.resolve(), torch.cuda.device_count())
    rows = run_report(ctx, build_steps(ctx, sys.executable))
    header = environment(ctx)
    write_report(ctx.out, header, rows)
    broken = [r for r in rows if r.status in ("failed", "FAIL")]
    print(f"\n{len(rows)} rows, {len(broken)} failed or missed their goal; report in {ctx.out / 'gpu_report.md'}")
    return 1 if any(r.status == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
