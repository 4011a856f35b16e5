"""Loader benchmark: samples (videos) per second of the training loaders.

Measures, in one run on generated JPEGs of realistic size, the project's spatial and motion
training loaders (uint8 decode + crop in workers, normalisation as one batch op) and a plain
re-implementation of the reference repo's per-image PIL/torchvision pipeline, for a few
worker counts, and prints the ratio.

    python benchmarks/bench_loader.py [--workers 1 2] [--batch-size 8] [--batches 30] [--data DIR]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision import transforms  # noqa: E402

from dataloader import (LAYOUTS, MotionDataset, SpatialDataset, build_loader, index_videos, load_split,  # noqa: E402
                        motion_normalizer, spatial_normalizer, stream_sources)
from dataloader.sampling import random_start  # noqa: E402
from benchmarks.benchdata import make_bench_data, mean_jpeg_kb  # noqa: E402
from guards import OUTPUT, add_path, bound  # noqa: E402
from utils import HelpFormatter  # noqa: E402


class ReferenceSpatial(Dataset):
    """The reference repo's spatial training sample: 3 frames (one per third), each opened
    with PIL and put through RandomCrop/Flip/ToTensor/Normalize on its own."""

    def __init__(self, videos, size: int):
        self.videos = videos
        self.transform = transforms.Compose([
            transforms.RandomCrop(size), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        video = self.videos[i]
        n = video.frames
        clips = [random.randint(1, max(1, n // 3)), random.randint(n // 3, 2 * n // 3), random.randint(2 * n // 3, n)]
        out = []
        for c in clips:
            img = Image.open(video.sources[0].path(max(1, c)))
            out.append(self.transform(img.convert("RGB")))
            img.close()
        return torch.stack(out), video.record.label


class ReferenceMotion(Dataset):
    """The reference repo's motion training sample: 20 flow JPEGs, each opened with PIL,
    resized to 224 and converted with ToTensor into a float stack."""

    def __init__(self, videos, size: int):
        self.videos, self.size = videos, size
        self.transform = transforms.Compose([transforms.Resize([size, size]), transforms.ToTensor()])

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        video = self.videos[i]
        start = random_start(video.frames, random)
        flow = torch.empty(20, self.size, self.size)
        for j in range(10):
            for k, source in enumerate(video.sources):
                img = Image.open(source.path(start + j))
                flow[2 * j + k] = self.transform(img)
                img.close()
        return flow, video.record.label


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--workers", type=bound("workers"), nargs="+", default=[1, 2], help="loader workers to measure")
    p.add_argument("--batch-size", type=bound("batch_size"), default=8, help="videos a batch")
    p.add_argument("--batches", type=bound("count"), default=30, help="timed batches (after 3 warm-up batches)")
    p.add_argument("--videos", type=bound("count"), default=32, help="videos of the generated data set")
    p.add_argument("--input-size", type=bound("input_size"), default=224, help="network input size")
    add_path(p, "--data", role=OUTPUT, folder=True, help="folder for the generated data (default: a temporary folder)")
    return p


def main() -> None:
    args = get_args_parser().parse_args()

    root = Path(args.data or tempfile.mkdtemp(prefix="bench_loader_"))
    split_dir, data_root, flow_root = make_bench_data(root, videos=args.videos)
    print(f"data: {root}  RGB {mean_jpeg_kb(data_root):.1f} KB/frame, flow {mean_jpeg_kb(flow_root):.1f} KB/frame")
    split = load_split(split_dir, 1)
    layout = LAYOUTS["ucf101"]
    spatial_videos = index_videos(split.train, "train", stream_sources("spatial", layout, data_root=data_root))
    motion_videos = index_videos(split.train, "train", stream_sources("motion", layout, flow_root=flow_root))
    size, bs = args.input_size, args.batch_size
    cases = {
        "spatial": (SpatialDataset(spatial_videos, True, input_size=size), ReferenceSpatial(spatial_videos, size),
                    spatial_normalizer()),
        "motion": (MotionDataset(motion_videos, True, input_size=size), ReferenceMotion(motion_videos, size),
                   motion_normalizer(20)),
    }
    torch.set_num_threads(1)
    print(f"{'stream':8} {'workers':>7} {'project':>10} {'reference':>10} {'ratio':>6}   (samples/s)")
    for stream, (ours, ref, normalize) in cases.items():
        for workers in args.workers:
            loader = build_loader(ours, bs, train=True, workers=workers)
            ref_loader = DataLoader(ref, batch_size=bs, shuffle=True, num_workers=workers, drop_last=True,
                                    persistent_workers=True)
            ours_rate = samples_per_s(loader, args.batches, normalize)
            ref_rate = samples_per_s(ref_loader, args.batches)
            print(f"{stream:8} {workers:7d} {ours_rate:10.1f} {ref_rate:10.1f} {ours_rate / ref_rate:6.2f}")
            del loader


def endless(loader):
    """The batches of ``loader`` epoch after epoch (telling a project sampler the epoch)."""
    epoch = 0
    while True:
        if hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def samples_per_s(loader, batches: int, normalize=None, warmup: int = 3) -> float:
    """Videos per second over ``batches`` batches after ``warmup`` batches, running through
    as many epochs as needed; ``normalize`` is the project's batch normalisation, counted in
    its time."""
    it = endless(loader)
    for _ in range(warmup):
        next(it)
    videos, start = 0, time.perf_counter()
    for _ in range(batches):
        x, y = next(it)
        if normalize is not None:
            normalize(x.flatten(0, 1))
        videos += len(y)
    return videos / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
