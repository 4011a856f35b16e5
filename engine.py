"""The training and evaluation engine shared by both streams.

``spatial_cnn.py`` and ``motion_cnn.py`` only describe their stream (:class:`Stream`) and
their argument defaults; everything else is here, in the order of torchvision's reference
scripts: distributed init -> data -> model -> optimizer/scaler/scheduler -> DDP -> resume ->
evaluate-only branch -> epoch loop.

Checkpoint ``epoch`` means "epochs finished"; a checkpoint written on SIGINT/SIGTERM in the
middle of an epoch also records how many training samples of that epoch were done, and
``--resume`` continues from exactly there.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from dataloader import (LAYOUTS, DEFAULT_SPLIT_DIR, TEST_FRAMES, IndexedVideo, InputNormalizer, build_loader,
                        holdout_groups, index_videos, load_split, resolve_layout)
from models import ARCHS, build_model, load_torch_file, normalize_keys
from utils import CsvLogger, UserError, atomic_write, save_scores

CHECKPOINT_FORMAT = "two-stream-checkpoint/1"


@dataclass(frozen=True)
class Stream:
    """What differs between the spatial and the motion stream."""

    name: str
    sources: Callable[[argparse.Namespace, object], list]        # (args, layout) -> [(root, template)]
    # (videos, train, args, test_mode) -> dataset; test_mode 'full' leaves the resize to the device
    dataset: Callable[[list[IndexedVideo], bool, argparse.Namespace, str], torch.utils.data.Dataset]
    # (args, channels_last, resize to (h, w) or None) -> normaliser
    normalizer: Callable[[argparse.Namespace, bool, tuple[int, int] | None], InputNormalizer]
    in_channels: Callable[[argparse.Namespace], int]
    min_frames: Callable[[argparse.Namespace], int] = lambda args: 1

    @property
    def score_file(self) -> str:
        return f"{self.name}_video_preds.pickle"


# ---------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------

def get_args_parser(stream: str, description: str, add_help: bool = True) -> argparse.ArgumentParser:
    """Arguments common to both streams; each script adds its own and sets its defaults."""
    p = argparse.ArgumentParser(description=description, add_help=add_help,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--split-dir", default=str(DEFAULT_SPLIT_DIR), help="folder of the split lists")
    data.add_argument("--split", type=int, default=1, help="split number (1-3 for UCF101)")
    data.add_argument("--layout", default="ucf101", choices=sorted(LAYOUTS), help="frame layout preset")
    data.add_argument("--rgb-template", help="free RGB frame template, e.g. '{video}/img_{idx:05d}.jpg'")
    data.add_argument("--flow-x-template", help="free flow x template")
    data.add_argument("--flow-y-template", help="free flow y template")
    data.add_argument("--allow-missing", action="store_true", help="skip listed videos without frames")
    data.add_argument("--input-size", type=int, default=224, help="crop/resize size fed to the network")
    data.add_argument("--test-frames", type=int, default=TEST_FRAMES, help="positions per test video")
    data.add_argument("--test-view", default="resize", choices=["resize", "center"],
                      help="test input: whole frame resized (reference) or center crop")
    data.add_argument("--workers", type=int, default=None, help="loader processes (default: cores - 1, max 16)")
    data.add_argument("--holdout-groups", type=int, default=0,
                      help="hold out this many whole groups (gXX) of the training list as a validation set "
                           "for model selection and the scheduler (default 0: select on the test list, "
                           "as the reference)")

    model = p.add_argument_group("model")
    model.add_argument("--arch", default="resnet101", choices=ARCHS)
    model.add_argument("--pretrained", default="imagenet", help="imagenet | none | PATH to a state dict")
    model.add_argument("--dropout", type=float, default=0.0, help="dropout before the classifier")

    train = p.add_argument_group("training")
    train.add_argument("--output-dir", default=f"record/{stream}", help="checkpoints, logs, score file")
    train.add_argument("--epochs", type=int, default=50)
    train.add_argument("--batch-size", type=int, default=32, help="videos per step and process")
    train.add_argument("--test-batch-size", type=int, default=None, help="frames per evaluation batch")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--lr-scheduler", default="plateau", choices=["plateau", "cosine", "step"],
                       help="plateau: ReduceLROnPlateau on validation loss (reference)")
    train.add_argument("--lr-patience", type=int, default=1, help="plateau: epochs without improvement")
    train.add_argument("--lr-step", type=int, default=30, help="step: epochs between x0.1 decays")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", default="", help="checkpoint to continue from (or to evaluate)")
    train.add_argument("--start-epoch", type=int, default=None, help="override the checkpoint's epoch")
    train.add_argument("--evaluate", action="store_true", help="only run the test pass and write the score file")

    speed = p.add_argument_group("device and speed")
    speed.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    speed.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                       help="mixed precision (bf16 where supported, else fp16); default: on for CUDA")
    speed.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels_last memory format; default: on for CUDA")
    speed.add_argument("--device-resize", action=argparse.BooleanOptionalAction, default=None,
                       help="test view 'resize': resize whole batches on the device instead of each frame in the "
                            "loader workers (frames must share one size); default: on for CUDA")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model")
    speed.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun")
    return p


# ---------------------------------------------------------------------------------------
# Distributed set-up (torchrun)
# ---------------------------------------------------------------------------------------

@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_distributed(device: str) -> World:
    """Join the process group when started by torchrun (RANK/WORLD_SIZE set), else one process."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if device.startswith("cuda"):
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
        if torch.cuda.device_count() < local_size:
            raise UserError(f"torchrun started {local_size} processes on this node but only "
                            f"{torch.cuda.device_count()} CUDA devices are visible\n"
                            f"  fix: --nproc_per_node={max(torch.cuda.device_count(), 1)} or --device cpu")
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return world


def resolve_device(args: argparse.Namespace, world: World) -> torch.device:
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu")
        return torch.device("cuda", world.local_rank if world.distributed else torch.device(args.device).index or 0)
    return torch.device(args.device)


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint atomically: a crash mid-write never corrupts the previous one."""
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint of this repo, of the reference repo, or a bare state dict (as {'state_dict'})."""
    ckpt = load_torch_file(path, "checkpoint", "pass a checkpoint.pth.tar or model_best.pth.tar written by "
                                               "spatial_cnn.py/motion_cnn.py, or one of the reference repo")
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: not a checkpoint (a {type(ckpt).__name__}, expected a dict)")
    if "model" not in ckpt and "state_dict" not in ckpt:
        ckpt = {"state_dict": ckpt}  # a bare state dict
    return ckpt


def check_compatible(ckpt: dict, path: str | Path, stream: str, arch: str, in_channels: int,
                     num_classes: int, model: nn.Module) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict, after checking that it fits this stream and model; the
    message says what differs and which flag fixes it."""
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        if ckpt["stream"] != stream:
            raise UserError(f"{path} is a checkpoint of the {ckpt['stream']} stream; this is the {stream} "
                            f"stream\n  fix: use it with {ckpt['stream']}_cnn.py")
        if ckpt["arch"] != arch:
            raise UserError(f"{path} was trained with --arch {ckpt['arch']}, not {arch}\n"
                            f"  fix: pass --arch {ckpt['arch']}")
        if ckpt["in_channels"] != in_channels:
            raise UserError(f"{path} takes {ckpt['in_channels']} input channels, this run builds "
                            f"{in_channels}\n  fix: use the same --stack-length as in training")
        if ckpt["num_classes"] != num_classes:
            raise UserError(f"{path} has {ckpt['num_classes']} classes, the split has {num_classes}\n"
                            f"  fix: use the --split-dir it was trained with")
        return ckpt["model"]
    state = normalize_keys(ckpt["state_dict"])  # the reference repo or a bare state dict
    expected = model.state_dict()
    conv1 = state.get("conv1.weight")
    if conv1 is not None and conv1.shape[1] != in_channels:
        other = "spatial" if conv1.shape[1] == 3 else "motion"
        raise UserError(f"{path} takes {conv1.shape[1]} input channels (a {other} stream checkpoint?); "
                        f"the {stream} stream needs {in_channels}")
    fc = state.get("fc.weight")
    if fc is not None and fc.shape[0] != num_classes:
        raise UserError(f"{path} has {fc.shape[0]} classes, the split has {num_classes}\n"
                        f"  fix: use the --split-dir it was trained with")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise UserError(f"{path} does not fit --arch {arch}: {len(missing)} weights missing "
                        f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
                        f"{len(mismatched)} of another shape (e.g. {mismatched[:2]})\n"
                        f"  fix: pass the --arch it was trained with")
    return state


# ---------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------

class GracefulStop:
    """SIGINT/SIGTERM set a flag that the training loop checks after each step, so that the
    current step finishes and a checkpoint is written. A second SIGINT stops at once."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def requested(self) -> bool:
        return self.signal is not None


@dataclass
class Meters:
    """Running sums of a training epoch (kept in checkpoints so a resumed epoch logs right)."""

    loss: float = 0.0
    correct1: float = 0.0
    correct5: float = 0.0
    count: int = 0

    def result(self) -> dict[str, float]:
        n = max(self.count, 1)
        return {"loss": self.loss / n, "top1": 100 * self.correct1 / n, "top5": 100 * self.correct5 / n}


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    """Number of rows whose label is among the k highest scores, for each k."""
    maxk = min(max(ks), scores.shape[1])
    top = scores.topk(maxk, dim=1).indices
    hit = top == labels.view(-1, 1)
    return [hit[:, :min(k, maxk)].any(dim=1).sum() for k in ks]


@dataclass
class Context:
    """What the loops need besides model and data."""

    device: torch.device
    normalizer: InputNormalizer
    amp_dtype: torch.dtype | None
    world: World
    stop: GracefulStop = field(default_factory=GracefulStop)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)


def train_one_epoch(model: nn.Module, loader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, ctx: Context, epoch: int, meters: Meters,
                    nan_check_every: int = 10) -> tuple[Meters, int]:
    """Train until the loader ends or a stop is requested; returns (meters, steps done).

    Items are [B, S, C, H, W]: S samples of each video (3 segments, or 1 stack) whose logits
    are averaged before the loss (segment consensus)."""
    model.train()
    steps = 0
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    progress = tqdm(loader, desc=f"epoch {epoch + 1} train", disable=None if ctx.world.is_main else True,
                    leave=False, dynamic_ncols=True)
    for frames, labels in progress:
        batch, segments = frames.shape[:2]
        frames = ctx.normalizer(frames.to(ctx.device, non_blocking=True).flatten(0, 1))
        labels = labels.to(ctx.device, non_blocking=True)
        with ctx.autocast():
            logits = model(frames).view(batch, segments, -1).float().mean(dim=1)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        c1, c5 = topk_correct(logits.detach(), labels)
        sums += torch.stack([loss.detach().double() * batch, c1.double(), c5.double()])
        meters.count += batch
        steps += 1
        if steps % nan_check_every == 0:
            _check_finite(sums[0], epoch, steps)
        if _should_stop(ctx, steps, nan_check_every):
            _check_finite(sums[0], epoch, steps)
            break
    _check_finite(sums[0], epoch, steps)
    if ctx.world.distributed:
        dist.all_reduce(sums)
        count = torch.tensor([meters.count], device=ctx.device)
        dist.all_reduce(count)
        meters.count = int(count.item())
    meters.loss += sums[0].item()
    meters.correct1 += sums[1].item()
    meters.correct5 += sums[2].item()
    return meters, steps


def _should_stop(ctx: Context, steps: int, every: int) -> bool:
    """Whether a SIGINT/SIGTERM asks to stop after this step. Under torchrun the processes
    agree on it every ``every`` steps (a process stopping alone would hang the others in
    their next gradient all-reduce)."""
    if not ctx.world.distributed:
        return ctx.stop.requested
    if steps % every:
        return False
    flag = torch.tensor([1.0 if ctx.stop.requested else 0.0], device=ctx.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() > 0 and not ctx.stop.requested:
        ctx.stop.signal = signal.SIGTERM  # another process was asked to stop
    return flag.item() > 0


def _check_finite(loss_sum: torch.Tensor, epoch: int, steps: int) -> None:
    if not math.isfinite(loss_sum.item()):
        raise UserError(f"the training loss became NaN/inf in epoch {epoch + 1} (by step {steps}); "
                        f"stopped without saving this epoch\n  fix: lower --lr, or turn off --amp; "
                        f"the last good checkpoint is checkpoint.pth.tar in the output folder")


@torch.no_grad()
def evaluate(model: nn.Module, loader, ctx: Context, num_videos: int, num_classes: int,
             labels: torch.Tensor, frames_per_video: int, desc: str = "test") -> dict:
    """Sum the logits of every test position of a video into its score; video-level metrics.

    Each process sees its own share of the frames (exactly once over all processes); the
    partial sums are added up with all_reduce, so the result equals one process's.
    Returns {'scores': [V, K] float64 CPU tensor, 'top1', 'top5', 'loss', 'frame_top1'}."""
    model.eval()
    scores = torch.zeros(num_videos, num_classes, dtype=torch.float64, device=ctx.device)
    counts = torch.zeros(num_videos, dtype=torch.float64, device=ctx.device)
    frame_correct = torch.zeros((), dtype=torch.float64, device=ctx.device)
    progress = tqdm(loader, desc=desc, disable=None if ctx.world.is_main else True, leave=False, dynamic_ncols=True)
    for frames, frame_labels, video_idx in progress:
        frames = ctx.normalizer(frames.to(ctx.device, non_blocking=True))
        video_idx = video_idx.to(ctx.device, non_blocking=True)
        with ctx.autocast():
            logits = model(frames).double()
        scores.index_add_(0, video_idx, logits)
        counts.index_add_(0, video_idx, torch.ones_like(video_idx, dtype=torch.float64))
        frame_correct += (logits.argmax(1) == frame_labels.to(ctx.device)).sum()
    if ctx.world.distributed:
        for t in (scores, counts, frame_correct):
            dist.all_reduce(t)
    wrong = (counts != frames_per_video).nonzero().flatten().tolist()
    if wrong:  # a loader or sharding bug would silently bias the scores: never report those
        raise RuntimeError(f"{len(wrong)} videos got {counts[wrong[0]].item():.0f} test frames instead "
                           f"of {frames_per_video} (video index {wrong[0]})")
    scores = scores.cpu()
    labels = labels.cpu()
    c1, c5 = topk_correct(scores, labels)
    loss = nn.functional.cross_entropy((scores / frames_per_video).float(), labels).item()
    return {"scores": scores, "top1": 100 * c1.item() / num_videos, "top5": 100 * c5.item() / num_videos,
            "loss": loss, "frame_top1": 100 * frame_correct.item() / (num_videos * frames_per_video)}


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------

def plot_curves(output_dir: Path, stream: str, selection: str) -> None:
    """Redraw loss and top-1 curves of train and selection set from the CSV logs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, test = CsvLogger(output_dir / "train.csv").read(), CsvLogger(output_dir / f"{selection}.csv").read()
    fig, (ax_loss, ax_top1) = plt.subplots(1, 2, figsize=(10, 4))
    for rows, name in ((train, "train"), (test, selection)):
        if rows:
            epochs = [int(r["epoch"]) for r in rows]
            ax_loss.plot(epochs, [float(r["loss"]) for r in rows], marker="o", label=name)
            ax_top1.plot(epochs, [float(r["top1"]) for r in rows], marker="o", label=name)
    for ax, title in ((ax_loss, "loss"), (ax_top1, "top-1 (%)")):
        ax.set_xlabel("epoch")
        ax.set_title(f"{stream}: {title}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_write(output_dir / "curves.png") as f:
        fig.savefig(f, format="png", dpi=80)
    plt.close(fig)


def _build_scheduler(args, optimizer):
    if args.lr_scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", patience=args.lr_patience)
    if args.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.epochs, 1))
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step, gamma=0.1)


def _log(world: World, message: str) -> None:
    if world.is_main:
        print(message, flush=True)


def run(args: argparse.Namespace, stream: Stream) -> dict | None:
    """Train and/or evaluate one stream as the arguments say. Returns the last test metrics."""
    world = init_distributed(args.device)
    try:
        return _run(args, stream, world)
    finally:
        if world.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _run(args: argparse.Namespace, stream: Stream, world: World) -> dict | None:
    device = resolve_device(args, world)
    cuda = device.type == "cuda"
    amp = cuda if args.amp is None else args.amp
    amp_dtype = None
    if amp:
        amp_dtype = torch.bfloat16 if (not cuda or torch.cuda.is_bf16_supported()) else torch.float16
    channels_last = cuda if args.channels_last is None else args.channels_last
    device_resize = (cuda if args.device_resize is None else args.device_resize) and args.test_view == "resize"
    test_mode = "full" if device_resize else args.test_view
    if cuda:
        torch.backends.cudnn.benchmark = True
    output_dir = Path(args.output_dir)
    if world.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)

    # data
    split = load_split(args.split_dir, args.split)
    layout = resolve_layout(args.layout, args.rgb_template, args.flow_x_template, args.flow_y_template)
    sources = stream.sources(args, layout)
    min_frames = stream.min_frames(args)
    def index(records, what):
        return index_videos(records, what, sources, output_dir if world.is_main else None, args.allow_missing,
                            min_frames)
    test_videos = index(split.test, "test")
    train_records, val_records = split.train, []
    if args.holdout_groups:
        train_records, val_records = holdout_groups(split.train, args.holdout_groups)
    train_videos = index(train_records, "train") if not args.evaluate else []
    val_videos = index(val_records, "validation") if val_records and not args.evaluate else []
    workers = args.workers
    test_batch = args.test_batch_size or max(64, 4 * args.batch_size)

    def test_loader(videos):
        return build_loader(stream.dataset(videos, False, args, test_mode), test_batch, train=False, workers=workers,
                            pin_memory=cuda, rank=world.rank, world_size=world.size)

    # model
    torch.manual_seed(args.seed)
    in_channels = stream.in_channels(args)
    model = build_model(args.arch, split.num_classes, in_channels,
                        "none" if args.resume else args.pretrained, args.dropout)
    ckpt = load_checkpoint(args.resume) if args.resume else None
    if ckpt is not None:
        model.load_state_dict(check_compatible(ckpt, args.resume, stream.name, args.arch, in_channels,
                                               split.num_classes, model))
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if args.sync_bn and world.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model_without_ddp = model
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    scheduler = _build_scheduler(args, optimizer)
    if world.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    if args.compile:
        model = torch.compile(model)
    resize = (args.input_size, args.input_size) if device_resize else None
    ctx = Context(device, stream.normalizer(args, channels_last, resize).to(device), amp_dtype, world)

    # resume
    start_epoch, samples_done, best_top1, meters = 0, 0, -1.0, Meters()
    if ckpt is not None:
        if ckpt.get("format") == CHECKPOINT_FORMAT:
            start_epoch, samples_done = ckpt["epoch"], ckpt.get("samples_done", 0)
            best_top1 = ckpt["best_top1"]
            meters = Meters(**ckpt.get("meters", {}))
            if not args.evaluate:
                optimizer.load_state_dict(ckpt["optimizer"])
                scheduler.load_state_dict(ckpt["scheduler"])
                scaler.load_state_dict(ckpt["scaler"])
                torch.set_rng_state(ckpt["rng"]["torch"])
                if cuda and "cuda" in ckpt["rng"]:
                    torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        else:  # the reference repo's {'epoch', 'state_dict', 'best_prec1', 'optimizer'}
            start_epoch = int(ckpt.get("epoch", 0))
            best_top1 = float(ckpt.get("best_prec1", -1.0))
        _log(world, f"resumed from {args.resume} (epoch {start_epoch}, best top-1 {best_top1:.2f})")
    if args.start_epoch is not None:
        start_epoch, samples_done = args.start_epoch, 0

    checkpoint_meta = {"format": CHECKPOINT_FORMAT, "stream": stream.name, "arch": args.arch,
                       "num_classes": split.num_classes, "in_channels": in_channels,
                       "class_names": list(split.classes), "args": vars(args)}

    def checkpoint(epoch: int, samples_done: int, meters: Meters) -> dict:
        """Everything --resume needs; ``epoch`` counts finished epochs, ``samples_done`` the
        training samples of the next one already seen (non-zero only after an interrupt)."""
        rng = {"torch": torch.get_rng_state()}
        if cuda:
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {**checkpoint_meta, "epoch": epoch, "samples_done": samples_done, "meters": vars(meters),
                "model": model_without_ddp.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
                "best_top1": best_top1, "best_prec1": best_top1}
    test_labels = torch.tensor([v.record.label for v in test_videos])

    def write_scores(result: dict) -> Path:
        path = output_dir / stream.score_file
        save_scores(path, {v.record.key: result["scores"][i].numpy() for i, v in enumerate(test_videos)})
        return path

    if args.evaluate:
        result = evaluate(model, test_loader(test_videos), ctx, len(test_videos), split.num_classes,
                          test_labels, args.test_frames)
        if world.is_main:
            path = write_scores(result)
            print(f"{stream.name} test: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
                  f"loss {result['loss']:.4f}  frame top-1 {result['frame_top1']:.2f}%  "
                  f"({len(test_videos)} videos)\nscores written to {path}")
        return result

    train_set = stream.dataset(train_videos, True, args, test_mode)
    train_loader = build_loader(train_set, args.batch_size, train=True, workers=workers, pin_memory=cuda,
                                seed=args.seed, rank=world.rank, world_size=world.size)
    if len(train_loader.sampler) < args.batch_size:
        raise UserError(f"--batch-size {args.batch_size} is larger than the {len(train_set)} training videos "
                        f"(per process); lower it")
    select_videos = val_videos or test_videos
    selection = "val" if val_videos else "test"
    select_labels = torch.tensor([v.record.label for v in select_videos])
    select_loader = test_loader(select_videos)
    train_log, select_log = CsvLogger(output_dir / "train.csv"), CsvLogger(output_dir / f"{selection}.csv")
    if world.is_main:
        train_log.truncate_after(start_epoch)
        select_log.truncate_after(start_epoch)
    _log(world, f"{stream.name}: {len(train_videos)} training videos, {len(select_videos)} {selection} videos, "
                f"{args.arch} on {device}{' x' + str(world.size) if world.distributed else ''}, "
                f"amp {amp_dtype}, epochs {start_epoch + 1}..{args.epochs}")

    result = None
    with ctx.stop:
        for epoch in range(start_epoch, args.epochs):
            started = time.time()
            train_loader.sampler.set_epoch(epoch, skip=samples_done // world.size)
            done_before = samples_done
            meters, steps = train_one_epoch(model, train_loader, criterion, optimizer, scaler, ctx, epoch, meters)
            if ctx.stop.requested:
                samples_done = done_before + steps * args.batch_size * world.size
                if world.is_main:
                    save_checkpoint(output_dir / "checkpoint.pth.tar", checkpoint(epoch, samples_done, meters))
                    print(f"\ninterrupted in epoch {epoch + 1} after {samples_done} samples; checkpoint "
                          f"written to {output_dir / 'checkpoint.pth.tar'}\n  continue with --resume "
                          f"{output_dir / 'checkpoint.pth.tar'}", flush=True)
                raise SystemExit(128 + ctx.stop.signal)
            train_metrics = meters.result()
            result = evaluate(model, select_loader, ctx, len(select_videos), split.num_classes, select_labels,
                              args.test_frames, desc=selection)
            if args.lr_scheduler == "plateau":
                scheduler.step(result["loss"])
            else:
                scheduler.step()
            is_best = result["top1"] > best_top1
            best_top1 = max(best_top1, result["top1"])
            samples_done, meters = 0, Meters()
            if world.is_main:
                elapsed = time.time() - started
                lr = optimizer.param_groups[0]["lr"]
                train_log.log({"epoch": epoch + 1, **{k: round(v, 5) for k, v in train_metrics.items()},
                               "lr": lr, "seconds": round(elapsed, 1)})
                select_log.log({"epoch": epoch + 1, "loss": round(result["loss"], 5), "top1": round(result["top1"], 3),
                                "top5": round(result["top5"], 3), "frame_top1": round(result["frame_top1"], 3)})
                state = checkpoint(epoch + 1, 0, meters)
                save_checkpoint(output_dir / "checkpoint.pth.tar", state)
                if is_best:
                    save_checkpoint(output_dir / "model_best.pth.tar", state)
                    if selection == "test":
                        write_scores(result)
                plot_curves(output_dir, stream.name, selection)
                print(f"epoch {epoch + 1}/{args.epochs}: train loss {train_metrics['loss']:.4f} top-1 "
                      f"{train_metrics['top1']:.2f}% | {selection} loss {result['loss']:.4f} top-1 "
                      f"{result['top1']:.2f}% top-5 {result['top5']:.2f}%{' (best)' if is_best else ''} "
                      f"| lr {lr:.2e} | {elapsed:.0f}s", flush=True)

    if val_videos and (output_dir / "model_best.pth.tar").exists():
        # model selection was on held-out groups: the test list is scored once, by the chosen model
        if world.distributed:
            dist.barrier()
        best = load_checkpoint(output_dir / "model_best.pth.tar")
        model_without_ddp.load_state_dict(best["model"])
        result = evaluate(model, test_loader(test_videos), ctx, len(test_videos), split.num_classes,
                          test_labels, args.test_frames)
        if world.is_main:
            write_scores(result)
            print(f"{stream.name} test (model of epoch {best['epoch']}, chosen on validation): top-1 "
                  f"{result['top1']:.2f}% top-5 {result['top5']:.2f}%")
    return result

