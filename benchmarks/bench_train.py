"""Training and evaluation throughput, end to end from JPEGs on disk, against ceilings and
the reference pipeline, all measured in one run.

For each stream it prints, in samples (videos) per second for training and test samples
(frames or stacks) per second for evaluation:
  (a) compute only: training steps on tensors already on the device (the ceiling);
  (b) end to end: training through the project's loader and engine;
  (c) the reference pipeline: per-image PIL resize/crop/ToTensor in workers, fp32 model;
  (d) evaluation through the project's loader and engine (the 19-position protocol's items),
      beside its two ceilings: pure inference on device tensors, and the machine's bare
      JPEG decode rate for the JPEGs one test sample needs (1 RGB / 20 flow), decoded by
      as many processes as the loader has workers;
  (e) the same evaluation with --test-crops 10 (each frame decoded once, its 10 crops cut on
      the device), in test samples (positions) per second;
and the ratios b/a, b/c, d/min(ceilings), d/e (what 10 crops cost: at most 10, the inference
ratio, when decoding is not the bottleneck) and e/min(inference/10, decode).

    python benchmarks/bench_train.py                      # CPU defaults: small model and input
    python benchmarks/bench_train.py --arch resnet101 --input-size 224 --workers 16 --ref-workers 8 \\
        --steps 30 --device cuda                      # the GPU measurement (bf16 + channels_last)
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import engine  # noqa: E402
from dataloader import (LAYOUTS, MotionDataset, MultiCrop, SpatialDataset, build_loader, index_videos,  # noqa: E402
                        load_split, motion_normalizer, spatial_normalizer, stream_sources)
from models import build_model  # noqa: E402
from benchmarks.bench_loader import ReferenceMotion, ReferenceSpatial, endless  # noqa: E402
from benchmarks.benchdata import make_bench_data, mean_jpeg_kb  # noqa: E402
from guards import OUTPUT, add_path, bound  # noqa: E402
from utils import HelpFormatter  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Repeat:
    """An endless loader of the same device batches (for the compute-only ceilings)."""

    def __init__(self, batch, steps: int):
        self.batch, self.steps = batch, steps

    def __iter__(self):
        return (self.batch for _ in range(self.steps))

    def __len__(self):
        return self.steps


def timed_training(model, loader, ctx, steps: int, warmup: int, batch: int) -> float:
    """Samples per second of engine.train_one_epoch over ``steps`` batches after ``warmup``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=ctx.amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss()
    iterator = endless(loader)
    engine.train_one_epoch(model, _take(iterator, warmup), criterion, optimizer, scaler, ctx, 0, engine.Meters())
    synchronize(ctx.device)
    start = time.perf_counter()
    engine.train_one_epoch(model, _take(iterator, steps), criterion, optimizer, scaler, ctx, 0, engine.Meters())
    synchronize(ctx.device)
    return steps * batch / (time.perf_counter() - start)


def timed_reference(model, loader, device, steps: int, warmup: int, batch: int, segments: int) -> float:
    """The reference's loop: float tensors from the workers, fp32, no channels_last."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    model.train()
    iterator = endless(loader)
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        x, y = next(iterator)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x.flatten(0, 1) if segments > 1 else x)
        if segments > 1:
            logits = logits.view(len(y), segments, -1).mean(1)
        loss = criterion(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def timed_evaluation(model, loader, ctx, num_videos: int, num_classes: int, labels, frames: int) -> float:
    """Test samples per second of engine.evaluate over a whole test pass (after a warm-up pass)."""
    engine.evaluate(model, loader, ctx, num_videos, num_classes, labels, frames)
    synchronize(ctx.device)
    start = time.perf_counter()
    engine.evaluate(model, loader, ctx, num_videos, num_classes, labels, frames)
    synchronize(ctx.device)
    return num_videos * frames / (time.perf_counter() - start)


def _decode(path: str) -> int:
    with Image.open(path) as img:
        img.load()
    return 1


def decode_rate(paths: list[str], processes: int) -> float:
    """Bare JPEG decodes per second with ``processes`` processes (PIL, libjpeg-turbo)."""
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_decode, paths[: processes * 4])  # warm-up
        start = time.perf_counter()
        pool.map(_decode, paths, chunksize=16)
    return len(paths) / (time.perf_counter() - start)


def _take(iterator, n):
    return (next(iterator) for _ in range(n))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--arch", default=None, help="default: resnet101 on CUDA, resnet18 on the CPU")
    p.add_argument("--input-size", type=bound("input_size"), default=None, help="default: 224 on CUDA, 112 on the CPU")
    p.add_argument("--spatial-batch", type=bound("batch_size"), default=None,
                   help="videos (x3 frames); default 25 CUDA, 4 CPU")
    p.add_argument("--motion-batch", type=bound("batch_size"), default=None, help="stacks; default 64 CUDA, 8 CPU")
    p.add_argument("--test-batch", type=bound("test_batch_size"), default=None, help="default 256 CUDA, 32 CPU")
    p.add_argument("--workers", type=bound("workers"), default=None, help="project loader workers (default: cores - 1)")
    p.add_argument("--ref-workers", type=bound("workers"), default=8,
                   help="reference pipeline workers (8, as the reference)")
    p.add_argument("--steps", type=bound("count"), default=None, help="timed steps (default 30 CUDA, 6 CPU)")
    p.add_argument("--videos", type=bound("count"), default=None, help="videos generated (default 256 CUDA, 24 CPU)")
    p.add_argument("--test-frames", type=bound("test_frames"), default=19, help="positions per test video")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on for CUDA)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on for CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the models")
    p.add_argument("--device-resize", action=argparse.BooleanOptionalAction, default=None,
                   help="evaluation resizes whole batches on the device (default: on for CUDA, as the scripts)")
    p.add_argument("--streams", nargs="+", default=["spatial", "motion"], help="which streams to measure")
    add_path(p, "--data", role=OUTPUT, folder=True, help="folder for the generated JPEGs (default: a temporary folder)")
    return p


def main() -> None:
    args = get_args_parser().parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    arch = args.arch or ("resnet101" if cuda else "resnet18")
    size = args.input_size or (224 if cuda else 112)
    steps = args.steps or (30 if cuda else 6)
    warmup = 5 if cuda else 2
    amp = cuda if args.amp is None else args.amp
    amp_dtype = (torch.bfloat16 if (not cuda or torch.cuda.is_bf16_supported()) else torch.float16) if amp else None
    channels_last = cuda if args.channels_last is None else args.channels_last
    device_resize = cuda if args.device_resize is None else args.device_resize
    workers = args.workers if args.workers is not None else max(1, (os.cpu_count() or 2) - 1)
    test_batch = args.test_batch or (256 if cuda else 32)
    if cuda:
        torch.backends.cudnn.benchmark = True

    root = Path(args.data or tempfile.mkdtemp(prefix="bench_train_"))
    split_dir, data_root, flow_root = make_bench_data(root, videos=args.videos or (256 if cuda else 24))
    split = load_split(split_dir, 1)
    layout = LAYOUTS["ucf101"]
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({os.cpu_count()} cores)"
    print(f"device {name}, torch {torch.__version__}, {arch} at {size}x{size}, amp {amp_dtype}, "
          f"channels_last {channels_last}, compile {args.compile}, device resize {device_resize}, "
          f"workers {workers} (reference {args.ref_workers})")
    print(f"data {root}: {len(split.train)} videos, RGB {mean_jpeg_kb(data_root):.1f} KB, "
          f"flow {mean_jpeg_kb(flow_root):.1f} KB a JPEG")

    rows = []
    for stream in args.streams:
        spatial = stream == "spatial"
        channels, segments = (3, 3) if spatial else (20, 1)
        batch = (args.spatial_batch or (25 if cuda else 4)) if spatial else (args.motion_batch or (64 if cuda else 8))
        sources = stream_sources(stream, layout, data_root=data_root, flow_root=flow_root)
        videos = index_videos(split.train, "train", sources)
        if spatial:
            normalizer = spatial_normalizer(channels_last)
        else:
            normalizer = motion_normalizer(20, channels_last=channels_last)
        ctx = engine.Context(device, normalizer.to(device), amp_dtype, engine.World())

        def fresh_model(fast: bool = True):
            torch.manual_seed(0)
            model = build_model(arch, split.num_classes, channels, "none").to(device)
            if fast and channels_last:
                model = model.to(memory_format=torch.channels_last)
            return torch.compile(model) if fast and args.compile else model

        model = fresh_model()
        fake = (torch.randint(0, 256, (batch, segments, channels, size, size), dtype=torch.uint8, device=device),
                torch.randint(0, split.num_classes, (batch,), device=device))
        a = timed_training(model, Repeat(fake, 10**9), ctx, steps, warmup, batch)

        make = SpatialDataset if spatial else MotionDataset
        train_loader = build_loader(make(videos, True, input_size=size), batch, train=True, workers=workers,
                                    pin_memory=cuda)
        b = timed_training(model, train_loader, ctx, steps, warmup, batch)
        del train_loader

        reference = (ReferenceSpatial if spatial else ReferenceMotion)(videos, size)
        ref_loader = DataLoader(reference, batch_size=batch, shuffle=True, num_workers=args.ref_workers,
                                drop_last=True, pin_memory=cuda, persistent_workers=True)
        c = timed_reference(fresh_model(fast=False), ref_loader, device, steps, warmup, batch, segments)
        del ref_loader

        test_set = make(videos, False, input_size=size, test_frames=args.test_frames,
                        test_mode="full" if device_resize else "resize")
        test_loader = build_loader(test_set, test_batch, train=False, workers=workers, pin_memory=cuda)
        if device_resize:
            normalizer.resize = (size, size)
        labels = torch.tensor([v.record.label for v in videos])
        d = timed_evaluation(model, test_loader, ctx, len(videos), split.num_classes, labels, args.test_frames)
        del test_loader
        normalizer.resize = None
        crops_set = make(videos, False, input_size=size, test_frames=args.test_frames, test_mode="crops")
        crops_loader = build_loader(crops_set, max(1, test_batch // 10), train=False, workers=workers, pin_memory=cuda)
        crops_ctx = engine.Context(device, normalizer, amp_dtype, engine.World(),
                                   test_crops=MultiCrop(size, 10, flow=not spatial))
        e = timed_evaluation(model, crops_loader, crops_ctx, len(videos), split.num_classes, labels, args.test_frames)
        del crops_loader
        fake_test = (torch.randint(0, 256, (test_batch, channels, size, size), dtype=torch.uint8, device=device),
                     torch.zeros(test_batch, dtype=torch.long),
                     torch.zeros(test_batch, dtype=torch.long, device=device))
        infer_steps = max(steps, 3)
        inference = timed_evaluation(model, Repeat(fake_test, infer_steps), ctx, 1, split.num_classes,
                                     torch.zeros(1, dtype=torch.long), infer_steps * test_batch)
        paths = [s.path(i) for v in videos for s in v.sources for i in range(1, v.frames + 1)]
        jpegs_per_sample = 1 if spatial else 20
        decode = decode_rate(paths, workers) / jpegs_per_sample
        ceiling = min(inference, decode)
        rows.append((stream, a, b, c, d, e, inference, decode, b / a, b / c, d / ceiling, d / e,
                     e / min(inference / 10, decode)))

    print()
    print(f"{'stream':8} {'(a) compute':>11} {'(b) e2e':>9} {'(c) ref':>9} {'(d) eval':>9} {'(e) 10crop':>10} "
          f"{'infer':>9} {'decode':>9} {'b/a':>6} {'b/c':>6} {'d/ceil':>6} {'d/e':>6} {'e/ceil':>6}")
    for stream, a, b, c, d, e, inference, decode, ba, bc, dc, de, ec in rows:
        print(f"{stream:8} {a:11.1f} {b:9.1f} {c:9.1f} {d:9.1f} {e:10.1f} {inference:9.1f} {decode:9.1f} "
              f"{ba:6.2f} {bc:6.2f} {dc:6.2f} {de:6.2f} {ec:6.2f}")
    print("training: videos/s; evaluation, inference, decode: test samples/s (frames or stacks; a 10-crop sample "
          "is 10 inputs)")


if __name__ == "__main__":
    main()
