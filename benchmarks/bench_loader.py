"""Loader benchmark: samples (videos) per second of the loaders.

``--source frames`` (the default) measures, in one run on generated JPEGs of realistic size, the
project's spatial and motion training loaders (uint8 decode + crop in workers, normalisation as
one batch op) and a plain re-implementation of the reference repo's per-image PIL/torchvision
pipeline, for a few worker counts, and prints the ratio. ``--source videos`` measures the
spatial stream's training and test loaders reading UCF101-like video files (--video-root)
against the same loaders reading the frames tools/extract_frames.py made from those files, and
prints the ratio videos / frames, with each decoder; also the disk each takes.

    python benchmarks/bench_loader.py [--source frames videos] [--workers 1 2] [--batch-size 8] [--batches 30]
                                      [--data DIR]
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
from dataloader.video_index import video_sources  # noqa: E402
from benchmarks.benchdata import disk_usage, make_bench_data, make_bench_videos, mean_jpeg_kb  # noqa: E402
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
    p.add_argument("--source", nargs="+", choices=["frames", "videos"], default=["frames"],
                   help="frames: the project's loaders against the reference's; videos: the spatial loaders from video "
                        "files against the frames extracted from them")
    p.add_argument("--gop", type=bound("count"), nargs="+", default=[12],
                   help="--source videos: frames between key frames of the generated videos (one data set each)")
    p.add_argument("--video-frames", type=bound("video_frames"), default=186,
                   help="--source videos: frames of each generated video (UCF101's mean: 186)")
    p.add_argument("--decoders", nargs="+", choices=["pyav", "opencv", "torchcodec"], default=["pyav", "opencv"],
                   help="--source videos: the decoders to measure")
    return p


def main() -> None:
    args = get_args_parser().parse_args()
    root = Path(args.data or tempfile.mkdtemp(prefix="bench_loader_"))
    torch.set_num_threads(1)
    if "frames" in args.source:
        against_reference(args, root)
    if "videos" in args.source:
        for gop in args.gop:
            videos_against_frames(args, root / f"videos_gop{gop}", gop)


def videos_against_frames(args: argparse.Namespace, root: Path, gop: int) -> None:
    """The spatial training and test loaders on video files against the same loaders on the
    frames extracted from those files (256x340, quality 90: tools/extract_frames.py's defaults)."""
    from tools import extract_frames

    split_dir, video_root = make_bench_videos(root, videos=args.videos, frames=args.video_frames, gop=gop)
    frames_root = root / "frames"
    if not (frames_root / ".complete").exists():
        extract_frames.main(extract_frames.get_args_parser().parse_args([str(video_root), str(frames_root)]))
        (frames_root / ".complete").touch()
    (video_bytes, video_files), (frame_bytes, frame_files) = disk_usage(video_root), disk_usage(frames_root)
    print(f"\ndata: {root}, {args.videos} videos of {args.video_frames} frames, 320x240 MPEG-4 AVI, a key frame "
          f"every {gop} frames")
    print(f"disk: videos {video_bytes / 2**20:.1f} MiB in {video_files} files; frames (256x340, q90) "
          f"{frame_bytes / 2**20:.1f} MiB in {frame_files} files ({frame_bytes / video_bytes:.1f}x)")
    split = load_split(split_dir, 1)
    frames = index_videos(split.train, "train", stream_sources("spatial", LAYOUTS["ucf101"], data_root=frames_root))
    by_decoder = {d: index_videos(split.train, "train", video_sources(video_root, d)) for d in args.decoders}
    size, bs = args.input_size, args.batch_size
    normalize = spatial_normalizer()
    print(f"{'loader':8} {'workers':>7} {'frames':>8} " + " ".join(f"{d:>8}" for d in args.decoders)
          + "  " + " ".join(f"{d + '/frames':>14}" for d in args.decoders) + "   (videos/s)")
    for train in (True, False):
        for workers in args.workers:
            rates = []
            for videos in [frames, *by_decoder.values()]:
                dataset = SpatialDataset(videos, train, input_size=size, test_mode="full")
                batch = bs if train else 19 * 2  # test: 2 videos of 19 positions a batch
                loader = build_loader(dataset, batch, train=train, workers=workers)
                rates.append(videos_per_s(loader, args.batches, train, normalize))
                del loader
            print(f"{'train' if train else 'test':8} {workers:7d} {rates[0]:8.1f} "
                  + " ".join(f"{r:8.1f}" for r in rates[1:]) + "  "
                  + " ".join(f"{r / rates[0]:14.2f}" for r in rates[1:]))


def videos_per_s(loader, batches: int, train: bool, normalize) -> float:
    """Training: samples (videos) a second; test: test videos (19 positions each) a second."""
    rate = samples_per_s(loader, batches, normalize if train else None)
    return rate if train else rate / 19


def against_reference(args: argparse.Namespace, root: Path) -> None:
    """The project's frame loaders against the reference repo's per-image pipeline."""
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
        x, y = next(it)[:2]
        if normalize is not None:
            normalize(x.flatten(0, 1) if x.dim() == 5 else x)
        videos += len(y)
    return videos / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
