"""Optical-flow throughput at 256x340: OpenCV's DualTVL1 on one CPU core and on all of them
against the batched TV-L1 on tensors (flow/tvl1.py) on the CPU and, when present, on CUDA, in
one run; and how closely tvl1-torch's stored flow agrees with OpenCV's (mean |difference| of
the 0..255 values).

    python benchmarks/bench_flow.py [--pairs 8] [--batch 8] [--gpu-batch 64] [--size 256 340]

Prints pairs per second and the ratios to OpenCV per core. UCF101 has about 2.47 million
pairs: at 700 pairs/s that is under an hour.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from flow import TVL1  # noqa: E402
from flow.synthetic import warped_pair  # noqa: E402
from guards import bound  # noqa: E402
from utils import HelpFormatter  # noqa: E402

UCF101_PAIRS = 2_467_000


def opencv_rate(pairs) -> float:
    import cv2

    cv2.setNumThreads(1)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    tvl1.calc(pairs[0][0], pairs[0][1], None)
    start = time.perf_counter()
    for first, second, _ in pairs:
        tvl1.calc(first, second, None)
    return len(pairs) / (time.perf_counter() - start)


def opencv_all_cores_rate(pairs, processes: int) -> float:
    """OpenCV's DualTVL1 over ``processes`` worker processes (predict.py's FlowFunction)."""
    from inference.scorer import FlowFunction

    work = [(a, b) for a, b, _ in pairs] * max(1, 2 * processes // len(pairs) + 1)
    flow_of = FlowFunction("tvl1", torch.device("cpu"), processes)
    try:
        flow_of(work[:processes])  # warm-up: the workers start
        start = time.perf_counter()
        flow_of(work)
        return len(work) / (time.perf_counter() - start)
    finally:
        flow_of.close()


def agreement(pairs, device: torch.device, compile: bool, bound: float = 20.0) -> float:
    """Mean absolute difference of the stored (quantised, 0..255) flow of tvl1-torch and OpenCV."""
    import cv2

    from flow.storage import quantize

    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    estimator = TVL1(compile=compile)
    first = torch.from_numpy(np.stack([p[0] for p in pairs])).to(device)
    second = torch.from_numpy(np.stack([p[1] for p in pairs])).to(device)
    ours = estimator(first, second).permute(0, 2, 3, 1).cpu().numpy()
    diffs = [np.abs(quantize(o, bound).astype(np.int16) - quantize(tvl1.calc(a, b, None), bound)).mean()
             for o, (a, b, _) in zip(ours, pairs)]
    return float(np.mean(diffs))


def torch_rate(pairs, batch: int, device: torch.device, compile: bool, repeats: int) -> float:
    estimator = TVL1(compile=compile)
    first = torch.from_numpy(np.stack([pairs[i % len(pairs)][0] for i in range(batch)])).to(device)
    second = torch.from_numpy(np.stack([pairs[i % len(pairs)][1] for i in range(batch)])).to(device)
    estimator(first, second)  # warm-up (and compilation)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        estimator(first, second)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return repeats * batch / (time.perf_counter() - start)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--pairs", type=bound("count"), default=8, help="distinct pairs (OpenCV times all of them)")
    p.add_argument("--batch", type=bound("flow_batch"), default=8, help="pairs per launch on the CPU")
    p.add_argument("--gpu-batch", type=bound("flow_batch"), default=64, help="pairs per launch on CUDA")
    p.add_argument("--repeats", type=bound("count"), default=3, help="timed launches on CUDA (1 on the CPU)")
    p.add_argument("--size", type=bound("size"), nargs=2, default=[256, 340], metavar=("H", "W"),
                   help="frame size of the pairs")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (CPU) / use plain ops (CUDA)")
    return p


def main() -> None:
    args = get_args_parser().parse_args()

    h, w = args.size
    # flow of 1 to 10 px, as in real videos: pairs of one batch converge after different
    # numbers of iterations
    magnitudes = [1.0, 3.0, 5.0, 8.0, 10.0, 2.0, 6.0, 4.0]
    pairs = [warped_pair(h, w, magnitudes[seed % len(magnitudes)], seed) for seed in range(args.pairs)]
    cores = os.cpu_count() or 1
    rows = [("OpenCV DualTVL1, 1 CPU core", opencv_rate(pairs)),
            (f"OpenCV DualTVL1, all {cores} CPU cores", opencv_all_cores_rate(pairs, cores))]
    threads = torch.get_num_threads()
    rows.append((f"tvl1-torch CPU ({threads} threads, batch {args.batch})",
                 torch_rate(pairs, args.batch, torch.device("cpu"), False, 1)))
    if not args.no_compile:
        rows.append((f"tvl1-torch CPU compiled ({threads} threads, batch {args.batch})",
                     torch_rate(pairs, args.batch, torch.device("cpu"), True, 1)))
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        rows.append((f"tvl1-torch {name} (batch {args.gpu_batch}, compile {not args.no_compile})",
                     torch_rate(pairs, args.gpu_batch, torch.device("cuda"), not args.no_compile, args.repeats)))
    else:
        rows.append(("tvl1-torch CUDA", float("nan")))
    base = rows[0][1]
    print(f"{'':62} {'pairs/s':>9} {'x OpenCV core':>14} {'UCF101 hours':>13}")
    for label, rate in rows:
        hours = UCF101_PAIRS / rate / 3600 if rate == rate else float("nan")
        print(f"{label:62} {rate:9.2f} {rate / base:14.2f} {hours:13.1f}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = "CUDA" if device.type == "cuda" else "CPU"
    print(f"agreement {where}: mean |tvl1-torch - OpenCV| of the stored flow = "
          f"{agreement(pairs, device, not args.no_compile and device.type == 'cuda'):.3f} /255 "
          f"(bound 20, {len(pairs)} synthetic textured pairs)")
    if not torch.cuda.is_available():
        print("(no CUDA device here: the GPU row is measured where one is present)")


if __name__ == "__main__":
    main()
