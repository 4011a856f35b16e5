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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from dataloader import (LAYOUTS, TEST_CROPS, TEST_FRAMES, TEST_POSITIONS, TEST_SCALES, TRAIN_CROPS, IndexedVideo,
                        InputNormalizer, MultiCrop, build_loader, holdout_groups, index_videos, multicrop_scale_side,
                        resolve_layout)
from dataloader.splits import add_split_arguments, groups_are_videos, split_from_args
from models import (ARCHS, LR_GROUPS, base_lr, build_model, freeze_partial_bn, load_torch_file, normalize_keys,
                    parameter_groups, pretrained_name)
from scorefiles import check_finite_scores, save_score_info, save_scores
from utils import CsvLogger, UserError, atomic_write, check_writable_dir, hold_lock, remove_stale_temporaries

CHECKPOINT_FORMAT = "two-stream-checkpoint/1"
RECIPE_NAMES = ("reference", "tsn")  # --recipe; each stream script says what a recipe sets


@dataclass(frozen=True)
class Stream:
    """What differs between the spatial and the motion stream."""

    name: str
    sources: Callable[[argparse.Namespace, object], list]        # (args, layout) -> [(root, template)]
    # (videos, train, args, test_mode) -> dataset; test_mode 'full' leaves the resize to the device,
    # 'crops' the test crops
    dataset: Callable[[list[IndexedVideo], bool, argparse.Namespace, str], torch.utils.data.Dataset]
    # (args, channels_last, resize to (h, w) or None) -> normaliser
    normalizer: Callable[[argparse.Namespace, bool, tuple[int, int] | None], InputNormalizer]
    in_channels: Callable[[argparse.Namespace], int]
    min_frames: Callable[[argparse.Namespace], int] = lambda args: 1
    flow: bool = False  # a flipped input negates its x channels
    recipes: dict = field(default_factory=dict)  # --recipe name -> {argument: value}

    @property
    def score_file(self) -> str:
        return f"{self.name}_video_preds.pickle"


# ---------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------

def dataset_options(args: argparse.Namespace) -> dict:
    """The keyword arguments both streams' datasets take from the command line."""
    return dict(input_size=args.input_size, test_frames=args.test_frames, test_positions=args.test_positions,
                test_scale_side=multicrop_scale_side(args.test_scale, args.input_size),
                stack_length=args.stack_length, segments=args.segments, train_crop=args.train_crop,
                crop_scales=args.crop_scales, crop_positions=args.crop_positions, flip=args.flip)


def get_args_parser(stream: str, description: str, add_help: bool = True) -> argparse.ArgumentParser:
    """Arguments common to both streams; each script adds its own and sets its defaults."""
    p = argparse.ArgumentParser(description=description, add_help=add_help,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe", default="reference", choices=RECIPE_NAMES,
                   help="reference: the two-stream reference's protocol; tsn: TSN's training and test choices "
                        "(see the README's table); flags given explicitly win over the recipe")
    data = p.add_argument_group("data")
    add_split_arguments(data)
    data.add_argument("--layout", default="ucf101", choices=sorted(LAYOUTS), help="frame layout preset")
    data.add_argument("--rgb-template", help="free RGB frame template, e.g. '{video}/img_{idx:05d}.jpg'")
    data.add_argument("--flow-x-template", help="free flow x template")
    data.add_argument("--flow-y-template", help="free flow y template")
    data.add_argument("--allow-missing", action="store_true", help="skip listed videos without frames")
    data.add_argument("--input-size", type=int, default=224, help="crop/resize size fed to the network")
    data.add_argument("--segments", type=int, default=1,
                      help="training samples per video, one in each of this many equal parts, logits averaged "
                           "(TSN's segment consensus)")
    data.add_argument("--test-frames", type=int, default=TEST_FRAMES, help="positions per test video")
    data.add_argument("--test-view", default="resize", choices=["resize", "center"],
                      help="test input with --test-crops 1: whole frame resized (reference) or center crop")
    data.add_argument("--test-crops", type=int, default=1, choices=TEST_CROPS,
                      help="crops per test position, cut on the device from the frame as stored: 1 = --test-view; "
                           "3 = start, centre and end of the long side; 5 = 4 corners + centre; 10 = those and "
                           "their flips (TSN); a position's score is the mean over its crops")
    data.add_argument("--test-positions", default="starts", choices=TEST_POSITIONS,
                      help="where each test video's --test-frames positions lie in its equal segments: starts "
                           "(the reference's 1 + k*floor(m/n)) or centres (TSN's int(tick/2 + k*tick) + 1)")
    data.add_argument("--test-scale", default="stored", choices=TEST_SCALES,
                      help="--test-crops > 1: cut the crops from frames as stored, or first scale their short side "
                           "to input size x 256/224 (tsn: tsn-pytorch's GroupScale before its crops)")
    data.add_argument("--train-crop", default="random", choices=TRAIN_CROPS,
                      help="training crop: random = an --input-size crop anywhere (reference); multiscale = TSN's "
                           "corner crops of --crop-scales of the short side with aspect jitter, resized to "
                           "--input-size")
    data.add_argument("--crop-scales", type=float, nargs="+", metavar="S",
                      help="multiscale: crop sides as fractions of the short side (default: TSN's 1 .875 .75 .66; "
                           "the motion stream the first three)")
    data.add_argument("--crop-positions", type=int, default=5, choices=[5, 13],
                      help="multiscale: 4 corners + centre, or TSN's 13 positions")
    data.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                      help="random horizontal flips in training (and the flipped test crops); --no-flip for data "
                           "where left and right matter")
    data.add_argument("--workers", type=int, default=None, help="loader processes (default: cores - 1, max 16)")
    data.add_argument("--holdout-groups", type=int, default=0,
                      help="hold out this many whole groups (UCF101's gXX, HMDB51's films) of the training list "
                           "as a validation set for model selection and the scheduler (default 0: select on the "
                           "test list, as the reference)")

    model = p.add_argument_group("model")
    model.add_argument("--arch", default="resnet101", choices=ARCHS)
    model.add_argument("--pretrained", default="imagenet",
                       help="imagenet (= imagenet-v1, torchvision's IMAGENET1K_V1, the reference's) | imagenet-v2 | "
                            "none | mmaction2-tsn-r50-k400-rgb | mmaction2-tsn-r50-k400-flow (Kinetics-400, "
                            "--arch resnet50) | PATH or https URL of a state dict or checkpoint (torchvision, "
                            "this repo, mmaction2, tsn-pytorch/TSM)")
    model.add_argument("--dropout", type=float, default=0.0,
                       help="dropout before the classifier (TSN: 0.8 RGB, 0.7 flow)")
    model.add_argument("--partial-bn", action=argparse.BooleanOptionalAction, default=False,
                       help="TSN's partial BN: every BatchNorm but the first keeps its statistics and affine "
                            "parameters (frozen) in training")

    train = p.add_argument_group("training")
    train.add_argument("--output-dir", default=f"record/{stream}", help="checkpoints, logs, score file")
    train.add_argument("--epochs", type=int, default=50)
    train.add_argument("--batch-size", type=int, default=32, help="videos per step and process")
    train.add_argument("--test-batch-size", type=int, default=None,
                       help="model inputs per evaluation batch (frames x test crops); default max(64, 4 x batch size)")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--lr-scheduler", default="plateau", choices=["plateau", "cosine", "step", "multistep"],
                       help="plateau: ReduceLROnPlateau on validation loss (reference)")
    train.add_argument("--lr-patience", type=int, default=1, help="plateau: epochs without improvement")
    train.add_argument("--lr-step", type=int, default=30, help="step: epochs between x0.1 decays")
    train.add_argument("--lr-milestones", type=int, nargs="+", default=[30, 60], metavar="EPOCH",
                       help="multistep: the epochs after which the rate is multiplied by 0.1")
    train.add_argument("--lr-groups", default="single", choices=LR_GROUPS,
                       help="single: one rate and decay for every parameter; tsn: tsn-pytorch's groups (first conv "
                            "weight lr x5 for flow, x1 RGB; first conv bias lr x10 flow, x2 RGB, no decay; other "
                            "biases lr x2, no decay; BatchNorm no decay; frozen BatchNorms left out)")
    train.add_argument("--clip-grad-norm", type=float, default=None,
                       help="clip the gradients' total norm to this (TSN: 20); default no clipping")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", default="", help="checkpoint to continue from (or to evaluate); 'auto': the "
                                                     "run in --output-dir if it has a checkpoint, else a fresh one")
    train.add_argument("--start-epoch", type=int, default=None, help="override the checkpoint's epoch")
    train.add_argument("--evaluate", action="store_true", help="only run the test pass and write the score file")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run in --output-dir (without it a folder holding a run is refused "
                            "unless --resume is given)")
    train.add_argument("--override-checkpoint-settings", action="store_true",
                       help="let the command line change the settings stored in the --resume checkpoint "
                            "(recipe, input size, test view, frames and crops, stack length and order, flow mean)")

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


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()

MAX_TEST_FRAMES = 1000  # positions a test video: the reference reads 19, TSN 25
# flag -> (check, what it must be); checked after parsing, all problems in one message
_NUMERIC_CHECKS = {
    "epochs": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "test_batch_size": (lambda v: v is None or v >= 1, "at least 1"),
    "test_frames": (lambda v: 1 <= v <= MAX_TEST_FRAMES, f"1 to {MAX_TEST_FRAMES}"),
    "input_size": (lambda v: 8 <= v <= 4096, "8 to 4096 pixels"),
    "lr": (lambda v: v > 0 and math.isfinite(v), "a positive number"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: 0 <= v < math.inf, "0 or more"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "lr_patience": (lambda v: v >= 0, "0 or more"),
    "lr_step": (lambda v: v >= 1, "at least 1"),
    "workers": (lambda v: v is None or v >= 0, "0 or more"),
    "holdout_groups": (lambda v: v >= 0, "0 or more"),
    "start_epoch": (lambda v: v is None or v >= 0, "0 or more"),
    "segments": (lambda v: v >= 1, "at least 1"),
    "stack_length": (lambda v: v >= 1, "at least 1"),
    "flow_mean": (lambda v: math.isfinite(v), "a finite number"),
    "flow_std": (lambda v: 0 < v < math.inf, "a positive number"),
    "clip_grad_norm": (lambda v: v is None or 0 < v < math.inf, "a positive number"),
    "crop_scales": (lambda v: v is None or (len(v) > 0 and all(0 < s <= 1 for s in v)), "fractions in (0, 1]"),
    "lr_milestones": (lambda v: all(m >= 1 for m in v) and list(v) == sorted(set(v)), "increasing epochs, at least 1"),
}


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None,
               recipes: dict[str, dict] | None = None) -> argparse.Namespace:
    """Parse and validate; ``args.explicit`` holds the flags given on the command line (they
    win over the --recipe and over a checkpoint's stored settings). Invalid numbers are one
    usage error (exit 2)."""
    args = parser.parse_args(argv)
    probe = argparse.Namespace(**{a.dest: _UNSET for a in parser._actions if a.dest != "help"})
    probe, _ = parser.parse_known_args(argv, namespace=probe)
    args.explicit = sorted(k for k, v in vars(probe).items() if v is not _UNSET)
    apply_recipe(args, (recipes or {}).get(args.recipe, {}))
    problems = [f"--{name.replace('_', '-')} must be {what}, got {getattr(args, name)}"
                for name, (ok, what) in _NUMERIC_CHECKS.items() if hasattr(args, name) and not ok(getattr(args, name))]
    if getattr(args, "test_crops", 1) == 10 and not getattr(args, "flip", True):
        if "test_crops" in args.explicit:
            problems.append("--test-crops 10 includes flipped crops, which --no-flip rules out: use --test-crops 5")
        else:
            args.test_crops = 5  # the recipe's 10 crops without their flips
    if problems:
        parser.error("; ".join(problems))
    return args


def apply_recipe(args: argparse.Namespace, values: dict) -> list[str]:
    """Set a recipe's values on every argument not given explicitly; returns what was set."""
    explicit = set(getattr(args, "explicit", ()))
    changed = []
    for name, value in values.items():
        if name not in explicit and getattr(args, name) != value:
            setattr(args, name, value)
            changed.append(name)
    return changed


# The settings that define what a checkpoint's model sees: a resumed or evaluated checkpoint
# of this project brings its own, so that --evaluate scores it as it was trained (and a
# resumed run goes on with the checkpoint's recipe).
CHECKPOINT_SETTINGS = ("arch", "recipe", "input_size", "test_view", "test_frames", "test_crops", "test_positions",
                       "test_scale", "stack_length", "reference_stack_order", "flow_mean", "flow_std",
                       "lr_groups")
# settings the command line can never change on a checkpoint: its weights or its optimizer state depend on them
FIXED_SETTINGS = ("arch", "lr_groups")
# what a checkpoint written before a setting existed was trained and tested with
LEGACY_SETTINGS = {"test_positions": "starts", "test_scale": "stored", "lr_groups": "single", "flow_std": 1.0}


_SETTING_CHOICES = {"arch": ARCHS, "recipe": RECIPE_NAMES, "test_view": ("resize", "center"),
                    "test_crops": TEST_CROPS, "test_positions": TEST_POSITIONS, "test_scale": TEST_SCALES,
                    "lr_groups": LR_GROUPS, "reference_stack_order": (True, False)}


def check_stored_settings(saved: dict, path: str | Path) -> None:
    """The settings a checkpoint stores pass the same checks as the flags that set them; an
    edited or damaged one is one message naming the checkpoint."""
    problems = []
    for name in CHECKPOINT_SETTINGS:
        if name not in saved:
            continue
        value = saved[name]
        if name in _SETTING_CHOICES:
            if not any(value == c and type(value) is type(c) for c in _SETTING_CHOICES[name]):
                problems.append(f"{name} {value!r} (one of {', '.join(map(str, _SETTING_CHOICES[name]))})")
        elif name in _NUMERIC_CHECKS:
            ok, what = _NUMERIC_CHECKS[name]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok(value):
                problems.append(f"{name} {value!r} (must be {what})")
    if problems:
        raise UserError(f"{path} stores settings no run can have: {'; '.join(problems)}\n  fix: the checkpoint was "
                        f"edited or damaged; use the file its training wrote")


def apply_checkpoint_settings(args: argparse.Namespace, saved: dict, path: str) -> list[str]:
    """Take the checkpoint's input settings where the command line is silent; refuse a flag
    that contradicts one unless --override-checkpoint-settings. Returns what was taken."""
    check_stored_settings(saved, path)
    explicit = set(getattr(args, "explicit", ()))
    saved = {**LEGACY_SETTINGS, **saved}
    taken = []
    for name in CHECKPOINT_SETTINGS:
        if name not in saved or not hasattr(args, name) or saved[name] == getattr(args, name):
            continue
        flag = "--" + name.replace("_", "-")
        if name in explicit:
            if not args.override_checkpoint_settings or name in FIXED_SETTINGS:
                raise UserError(f"{path} was trained with {flag} {saved[name]}, the command line says {flag} "
                                f"{getattr(args, name)}\n  fix: drop {flag} to use the checkpoint's value"
                                + ("" if name in FIXED_SETTINGS else ", or pass --override-checkpoint-settings"))
            continue
        setattr(args, name, saved[name])
        taken.append(f"{flag} {saved[name]}")
    return taken


# ---------------------------------------------------------------------------------------
# The output folder
# ---------------------------------------------------------------------------------------

RUN_FILES = ("checkpoint.pth.tar", "model_best.pth.tar", "train.csv", "test.csv", "val.csv")


class OutputFolder:
    """The run's output folder, checked before any data is read: writable, not holding
    another run (unless resumed or overwritten), and locked against a second concurrent run.
    Stale temporary files of killed writes are removed."""

    def __init__(self, path: Path, score_file: str, resume: bool, overwrite: bool):
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the output folder {path}: {err.strerror}\n  fix: pass a writable "
                            f"--output-dir") from None
        check_writable_dir(path, "--output-dir")
        self._lock = hold_lock(path, ".lock", "run", "--output-dir")
        remove_stale_temporaries(path)
        held = [name for name in (*RUN_FILES, score_file) if (path / name).exists()]
        if held and not resume and not overwrite:
            self.close()
            raise UserError(f"{path} holds a previous run ({', '.join(held)})\n  fix: continue it with --resume "
                            f"{path / 'checkpoint.pth.tar'}, write to another --output-dir, or replace it with "
                            f"--overwrite")
        if overwrite and not resume:  # fresh logs; checkpoints are replaced as they are written
            for name in RUN_FILES:
                if name.endswith(".csv"):
                    (path / name).unlink(missing_ok=True)

    def close(self) -> None:
        if not self._lock.closed:
            self._lock.close()  # releases the flock


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
    """Write a checkpoint atomically: a crash or a full disk mid-write never corrupts the
    previous one, and a failed write is one message naming the last good checkpoint."""
    try:
        with atomic_write(path) as f:
            torch.save(state, f)
    except OSError as err:
        good = f"the last good one is {path}" if path.exists() else "no earlier checkpoint exists there"
        raise UserError(f"could not write the checkpoint {path} ({err.strerror or err}); {good}\n"
                        f"  fix: free disk space (or fix the folder), then continue with --resume") from None


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint of this repo, of the reference repo, or a bare state dict (as {'state_dict'})."""
    ckpt = load_torch_file(path, "checkpoint", "pass a checkpoint.pth.tar or model_best.pth.tar written by "
                                               "spatial_cnn.py/motion_cnn.py, or one of the reference repo")
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: not a checkpoint (a {type(ckpt).__name__}, expected a dict)")
    if "model" not in ckpt and "state_dict" not in ckpt:
        ckpt = {"state_dict": ckpt}  # a bare state dict
    return ckpt


# what a published checkpoint keeps besides the model: enough to evaluate it and to predict with it
PUBLISHED_KEYS = ("format", "stream", "arch", "num_classes", "in_channels", "class_names", "pretrained_weights",
                  "epoch", "best_top1", "model")


def publishable(ckpt: dict, path: str | Path) -> dict:
    """A checkpoint of this repo without what only training needs (optimizer, scheduler, scaler,
    RNG state, meters) and with only the settings that define what its model sees."""
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a checkpoint of this repo's format (a reference-repo or bare state dict)\n"
                        f"  fix: publish a checkpoint.pth.tar or model_best.pth.tar of spatial_cnn.py/motion_cnn.py")
    saved = ckpt.get("args", {})
    check_stored_settings(saved, path)
    out = {key: ckpt[key] for key in PUBLISHED_KEYS if key in ckpt}
    out["args"] = {name: saved[name] for name in CHECKPOINT_SETTINGS if name in saved}
    return out


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
    test_crops: nn.Module | None = None  # [B, C, H, W] frames -> [B * crops, C, h, w] (--test-crops)
    clip_grad_norm: float | None = None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)


def train_one_epoch(model: nn.Module, loader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, ctx: Context, epoch: int, meters: Meters,
                    nan_check_every: int = 10) -> tuple[Meters, int]:
    """Train until the loader ends or a stop is requested; returns (meters, steps done).

    Items are [B, S, C, H, W]: S samples of each video (--segments frames or stacks) whose logits
    are averaged before the loss (segment consensus)."""
    model.train()
    steps, new_samples = 0, 0
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
        if ctx.clip_grad_norm:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), ctx.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        c1, c5 = topk_correct(logits.detach(), labels)
        sums += torch.stack([loss.detach().double() * batch, c1.double(), c5.double()])
        new_samples += batch
        steps += 1
        if steps % nan_check_every == 0:
            _check_finite(sums[0], epoch, steps)
        if _should_stop(ctx, steps, nan_check_every):
            _check_finite(sums[0], epoch, steps)
            break
    _check_finite(sums[0], epoch, steps)
    if ctx.world.distributed:  # only this call's samples: restored meters are already global
        totals = torch.cat([sums, torch.tensor([new_samples], dtype=torch.float64, device=ctx.device)])
        dist.all_reduce(totals)
        sums, new_samples = totals[:3], int(totals[3].item())
    meters.count += new_samples
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
             labels: torch.Tensor, frames_per_video: int, desc: str = "test") -> dict | None:
    """Sum the logits of every test position of a video into its score; video-level metrics.
    With ``ctx.test_crops`` a position's logits are the mean over its crops.

    Each process sees its own share of the frames (exactly once over all processes); the
    partial sums are added up with all_reduce, so the result equals one process's.
    Returns {'scores': [V, K] float64 CPU tensor, 'top1', 'top5', 'loss', 'frame_top1'}, or None
    when SIGINT/SIGTERM asked to stop (a cluster's grace period is short: the pass is dropped)."""
    model.eval()
    scores = torch.zeros(num_videos, num_classes, dtype=torch.float64, device=ctx.device)
    counts = torch.zeros(num_videos, dtype=torch.float64, device=ctx.device)
    frame_correct = torch.zeros((), dtype=torch.float64, device=ctx.device)
    progress = tqdm(loader, desc=desc, disable=None if ctx.world.is_main else True, leave=False, dynamic_ncols=True)
    for frames, frame_labels, video_idx in progress:
        if ctx.stop.requested:  # ranks may hold different batch counts: agree once, after the loop
            break
        frames = frames.to(ctx.device, non_blocking=True)
        if ctx.test_crops is not None:
            frames = ctx.test_crops(frames)
        frames = ctx.normalizer(frames)
        video_idx = video_idx.to(ctx.device, non_blocking=True)
        with ctx.autocast():
            logits = model(frames).double()
        if ctx.test_crops is not None:
            logits = logits.view(len(video_idx), ctx.test_crops.count, -1).mean(dim=1)
        scores.index_add_(0, video_idx, logits)
        counts.index_add_(0, video_idx, torch.ones_like(video_idx, dtype=torch.float64))
        frame_correct += (logits.argmax(1) == frame_labels.to(ctx.device)).sum()
    if ctx.world.distributed:
        if _should_stop(ctx, 0, 1):  # one matched collective on every rank
            return None
        for t in (scores, counts, frame_correct):
            dist.all_reduce(t)
    elif ctx.stop.requested:
        return None
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
    if args.lr_scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=args.lr_milestones, gamma=0.1)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step, gamma=0.1)


def _scheduled_lr(scheduler, base_lr: float, epoch: int) -> float:
    """The closed-form rate of a cosine, step or multistep schedule after ``epoch`` finished epochs."""
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        t = min(epoch, scheduler.T_max)
        return scheduler.eta_min + (base_lr - scheduler.eta_min) * (1 + math.cos(math.pi * t / scheduler.T_max)) / 2
    if isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR):
        return base_lr * scheduler.gamma ** sum(n for m, n in scheduler.milestones.items() if m <= epoch)
    return base_lr * scheduler.gamma ** (epoch // scheduler.step_size)


def restore_schedule(optimizer, scheduler, ckpt: dict, args: argparse.Namespace, epoch: int) -> list[str]:
    """Load the optimizer and scheduler states, then apply the current arguments over the
    saved hyper-parameters (a run extended from 2 to 4 epochs follows the 4-epoch cosine).
    Returns what changed, for the log."""
    saved = ckpt.get("args", {})
    optimizer.load_state_dict(ckpt["optimizer"])
    changes = []
    for name in ("momentum", "weight_decay"):
        if saved.get(name, getattr(args, name)) != getattr(args, name):
            changes.append(f"{name} {saved[name]} -> {getattr(args, name)}")
    for group in optimizer.param_groups:  # a group's multipliers (--lr-groups tsn) scale the flags
        group["momentum"] = args.momentum
        group["weight_decay"] = args.weight_decay * group.get("decay_mult", 1.0)
    new_lr = saved.get("lr", args.lr) != args.lr
    if new_lr:
        changes.append(f"base lr {saved['lr']} -> {args.lr}")
        for group in optimizer.param_groups:
            group["initial_lr"] = args.lr * group.get("lr_mult", 1.0)
    if saved.get("lr_scheduler", args.lr_scheduler) != args.lr_scheduler:
        changes.append(f"lr scheduler {saved['lr_scheduler']} -> {args.lr_scheduler} (starts at epoch {epoch})")
        reshape = True
    else:
        scheduler.load_state_dict(ckpt["scheduler"])
        horizon = {"cosine": ("T_max", "epochs", max(args.epochs, 1)), "step": ("step_size", "lr_step", args.lr_step),
                   "multistep": ("milestones", "lr_milestones", Counter(args.lr_milestones)),
                   "plateau": ("patience", "lr_patience", args.lr_patience)}[args.lr_scheduler]
        attribute, flag, value = horizon
        reshape = new_lr
        if getattr(scheduler, attribute) != value:
            def shown(v):
                return sorted(v.elements()) if isinstance(v, Counter) else v
            changes.append(f"{args.lr_scheduler} {attribute} {shown(getattr(scheduler, attribute))} -> {shown(value)} "
                           f"(--{flag.replace('_', '-')})")
            setattr(scheduler, attribute, value)
            reshape = True
    if reshape:
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if new_lr:
                for group in optimizer.param_groups:
                    group["lr"] = args.lr * group.get("lr_mult", 1.0)
        else:
            scheduler.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
            scheduler.last_epoch = epoch
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = _scheduled_lr(scheduler, base, epoch)
            scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return changes


def _log(world: World, message: str) -> None:
    if world.is_main:
        print(message, flush=True)


@dataclass
class Data:
    """The indexed videos of a run and how to load them."""

    split: object
    test_videos: list[IndexedVideo]
    train_videos: list[IndexedVideo]
    val_videos: list[IndexedVideo]
    test_loader: Callable[[list[IndexedVideo]], object]
    test_mode: str  # 'full' when the device resizes whole test batches, 'crops' when it cuts test crops,
    #                  else the --test-view

    def labels(self, videos: list[IndexedVideo]) -> torch.Tensor:
        return torch.tensor([v.record.label for v in videos])


@dataclass
class Training:
    """Model, optimisation state and where the run stands."""

    model: nn.Module
    model_without_ddp: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: object
    ctx: Context
    start_epoch: int = 0
    samples_done: int = 0
    best_top1: float = -1.0
    meters: Meters = field(default_factory=Meters)


def run(args: argparse.Namespace, stream: Stream) -> dict | None:
    """Train and/or evaluate one stream as the arguments say. Returns the last test metrics."""
    world = init_distributed(args.device)
    folder = None
    try:
        device = resolve_device(args, world)
        output_dir = Path(args.output_dir)
        args.auto_resumed = args.resume == "auto"
        if args.auto_resumed:  # continue the run in --output-dir if it has a checkpoint, else start afresh
            latest = output_dir / "checkpoint.pth.tar"
            args.resume = str(latest) if latest.is_file() else ""
            args.overwrite = args.overwrite or not args.resume
        if world.is_main:  # before any data is read: a bad folder must not cost an epoch
            folder = OutputFolder(output_dir, stream.score_file, bool(args.resume), args.overwrite)
        ckpt = _load_resume_checkpoint(args, world, stream)
        data = _build_data(args, stream, world, output_dir, device.type == "cuda")
        training = _build_training(args, stream, world, device, data, ckpt)
        with training.ctx.stop:
            if args.evaluate:
                return _evaluate_only(args, stream, world, output_dir, data, training)
            return _train(args, stream, world, output_dir, data, training)
    finally:
        if folder is not None:
            folder.close()
        if world.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _load_resume_checkpoint(args: argparse.Namespace, world: World, stream: Stream) -> dict | None:
    """The --resume checkpoint, whose recipe and stored input settings become this run's
    defaults (flags given explicitly still win)."""
    if not args.resume:
        return None
    ckpt = load_checkpoint(args.resume)
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        saved = ckpt.get("args", {})
        recipe, taken = saved.get("recipe", "reference"), []
        if "recipe" not in args.explicit and recipe != args.recipe and recipe in stream.recipes:
            args.recipe = recipe
            apply_recipe(args, stream.recipes[recipe])
            taken.append(f"--recipe {recipe}")
        taken += apply_checkpoint_settings(args, saved, args.resume)
        if taken:
            _log(world, f"settings from {args.resume}: {', '.join(taken)}")
    return ckpt


def _build_data(args: argparse.Namespace, stream: Stream, world: World, output_dir: Path, cuda: bool) -> Data:
    split = split_from_args(args)
    if world.is_main:  # the label order of this run's scores and checkpoints, for any split format
        with atomic_write(output_dir / "classInd.txt", "w") as f:
            f.write("".join(f"{i + 1} {name}\n" for i, name in enumerate(split.classes)))
    layout = resolve_layout(args.layout, args.rgb_template, args.flow_x_template, args.flow_y_template)
    sources = stream.sources(args, layout)

    def index(records, what):
        return index_videos(records, what, sources, output_dir if world.is_main else None, args.allow_missing,
                            stream.min_frames(args), warn=world.is_main)
    test_videos = index(split.test, "test")
    train_records, val_records = split.train, []
    if args.holdout_groups:
        train_records, val_records = holdout_groups(split.train, args.holdout_groups)
        if groups_are_videos(split.train):
            _log(world, "--holdout-groups: the video names give no groups (UCF101's gXX, HMDB51's films), "
                        "so each video is its own group")
    train_videos = index(train_records, "train") if not args.evaluate else []
    val_videos = index(val_records, "validation") if val_records and not args.evaluate else []
    device_resize = (cuda if args.device_resize is None else args.device_resize) and args.test_view == "resize"
    test_mode = "crops" if args.test_crops > 1 else "full" if device_resize else args.test_view
    # --test-batch-size counts model inputs: a batch of frames gives test_crops inputs each
    test_batch = -(-(args.test_batch_size or max(64, 4 * args.batch_size)) // args.test_crops)

    def test_loader(videos):
        return build_loader(stream.dataset(videos, False, args, test_mode), test_batch, train=False,
                            workers=args.workers, pin_memory=cuda, rank=world.rank, world_size=world.size)
    return Data(split, test_videos, train_videos, val_videos, test_loader, test_mode)


def _build_training(args: argparse.Namespace, stream: Stream, world: World, device: torch.device, data: Data,
                    ckpt: dict | None) -> Training:
    """Model, optimizer, scaler, scheduler, DDP and the resumed state, in torchvision's order."""
    cuda = device.type == "cuda"
    amp = cuda if args.amp is None else args.amp
    amp_dtype = None
    if amp:
        amp_dtype = torch.bfloat16 if (not cuda or torch.cuda.is_bf16_supported()) else torch.float16
    channels_last = cuda if args.channels_last is None else args.channels_last
    if cuda:
        torch.backends.cudnn.benchmark = True

    torch.manual_seed(args.seed)
    in_channels = stream.in_channels(args)
    num_classes = data.split.num_classes
    model = build_model(args.arch, num_classes, in_channels, "none" if args.resume else args.pretrained, args.dropout)
    if ckpt is not None:
        model.load_state_dict(check_compatible(ckpt, args.resume, stream.name, args.arch, in_channels,
                                               num_classes, model))
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if args.sync_bn and world.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if args.partial_bn:
        freeze_partial_bn(model)
    model_without_ddp = model
    optimizer = torch.optim.SGD(parameter_groups(model, args.lr_groups, args.lr, args.weight_decay, stream.flow),
                                lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    scheduler = _build_scheduler(args, optimizer)
    if world.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    if args.compile:
        model = torch.compile(model)
    resize = (args.input_size, args.input_size) if data.test_mode == "full" else None
    crops = MultiCrop(args.input_size, args.test_crops, stream.flow) if args.test_crops > 1 else None
    ctx = Context(device, stream.normalizer(args, channels_last, resize).to(device), amp_dtype, world,
                  test_crops=crops, clip_grad_norm=args.clip_grad_norm)
    training = Training(model, model_without_ddp, nn.CrossEntropyLoss(), optimizer, scaler, scheduler, ctx)
    if ckpt is not None:
        _resume(args, world, ckpt, training)
    if args.start_epoch is not None:
        training.start_epoch, training.samples_done = args.start_epoch, 0
    return training


def _resume(args: argparse.Namespace, world: World, ckpt: dict, t: Training) -> None:
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        t.start_epoch, t.samples_done = ckpt["epoch"], ckpt.get("samples_done", 0)
        t.best_top1 = ckpt["best_top1"]
        t.meters = Meters(**ckpt.get("meters", {}))
        if not args.evaluate:
            changes = restore_schedule(t.optimizer, t.scheduler, ckpt, args, t.start_epoch)
            if changes:
                _log(world, f"resuming with the current arguments: {'; '.join(changes)}")
            t.scaler.load_state_dict(ckpt["scaler"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            if t.ctx.device.type == "cuda" and "cuda" in ckpt["rng"]:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"], t.ctx.device)
    else:  # the reference repo's {'epoch', 'state_dict', 'best_prec1', 'optimizer'}
        t.start_epoch = int(ckpt.get("epoch", 0))
        t.best_top1 = float(ckpt.get("best_prec1", -1.0))
    _log(world, f"resumed from {args.resume} (epoch {t.start_epoch}, best top-1 {t.best_top1:.2f})")


def _checkpoint(args: argparse.Namespace, stream: Stream, data: Data, t: Training, epoch: int,
                samples_done: int, meters: Meters) -> dict:
    """Everything --resume needs; ``epoch`` counts finished epochs, ``samples_done`` the
    training samples of the next one already seen (non-zero only after an interrupt)."""
    rng = {"torch": torch.get_rng_state()}
    if t.ctx.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(t.ctx.device)
    saved_args = {k: v for k, v in vars(args).items() if k not in ("explicit", "auto_resumed")}
    return {"format": CHECKPOINT_FORMAT, "stream": stream.name, "arch": args.arch,
            "num_classes": data.split.num_classes, "in_channels": stream.in_channels(args),
            "class_names": list(data.split.classes), "args": saved_args,
            "pretrained_weights": pretrained_name(args.pretrained),
            "epoch": epoch, "samples_done": samples_done, "meters": vars(meters),
            "model": t.model_without_ddp.state_dict(), "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict(), "scaler": t.scaler.state_dict(), "rng": rng,
            "best_top1": t.best_top1, "best_prec1": t.best_top1}


def _test_pass(args, world: World, data: Data, t: Training, videos: list[IndexedVideo], loader,
               desc: str = "test") -> dict | None:
    """One evaluation; non-finite scores stop the run with the count and an example video."""
    result = evaluate(t.model, loader, t.ctx, len(videos), data.split.num_classes, data.labels(videos),
                      args.test_frames, desc=desc)
    if result is not None:
        finite = torch.isfinite(result["scores"]).all(dim=1)
        if not finite.all():
            bad = (~finite).nonzero().flatten().tolist()
            raise UserError(f"the model gives non-finite scores (NaN or inf) for {len(bad)} of {len(videos)} "
                            f"{desc} videos, e.g. {videos[bad[0]].record.key}; no score file is written\n"
                            f"  fix: its weights are damaged or training diverged: use an earlier checkpoint, "
                            f"or a lower --lr")
    return result


def _write_scores(args, output_dir: Path, stream: Stream, videos: list[IndexedVideo], result: dict) -> Path:
    """The score file, and beside it its protocol (which average_fusion.py reads for its weights)."""
    path = output_dir / stream.score_file
    scores = {v.record.key: result["scores"][i].numpy() for i, v in enumerate(videos)}
    check_finite_scores(scores, f"{stream.name} evaluation")
    try:
        save_scores(path, scores)
        save_score_info(path, {"stream": stream.name, "recipe": args.recipe, "arch": args.arch,
                               "test_frames": args.test_frames, "test_crops": args.test_crops,
                               "test_positions": args.test_positions, "test_scale": args.test_scale,
                               "test_view": args.test_view, "split": args.split})
    except OSError as err:
        raise UserError(f"could not write the score file {path} ({err.strerror or err})\n"
                        f"  fix: free disk space, then run --evaluate --resume with the best checkpoint") from None
    return path


def _interrupted(world: World, stop: GracefulStop, message: str) -> SystemExit:
    _log(world, message)
    return SystemExit(128 + stop.signal)


def _evaluate_only(args, stream: Stream, world: World, output_dir: Path, data: Data, t: Training) -> dict:
    result = _test_pass(args, world, data, t, data.test_videos, data.test_loader(data.test_videos))
    if result is None:
        raise _interrupted(world, t.ctx.stop, "\ninterrupted during the test pass; nothing was written")
    if world.is_main:
        path = _write_scores(args, output_dir, stream, data.test_videos, result)
        print(f"{stream.name} test: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
              f"loss {result['loss']:.4f}  frame top-1 {result['frame_top1']:.2f}%  "
              f"({len(data.test_videos)} videos)\nscores written to {path}")
    return result


def _train(args, stream: Stream, world: World, output_dir: Path, data: Data, t: Training) -> dict | None:
    """The epoch loop: train, evaluate on the selection set, step the schedule, log, save."""
    if t.start_epoch >= args.epochs:
        if args.auto_resumed:
            _log(world, f"{args.resume} has finished its {t.start_epoch} epochs: nothing to train")
            return None
        raise UserError(f"{args.resume} has finished {t.start_epoch} epochs and --epochs is {args.epochs}: "
                        f"nothing to train\n  fix: pass --epochs larger than {t.start_epoch} to train more, or "
                        f"--evaluate")
    train_set = stream.dataset(data.train_videos, True, args, data.test_mode)
    train_loader = build_loader(train_set, args.batch_size, train=True, workers=args.workers,
                                pin_memory=t.ctx.device.type == "cuda", seed=args.seed, rank=world.rank,
                                world_size=world.size)
    if len(train_loader.sampler) < args.batch_size:
        raise UserError(f"--batch-size {args.batch_size} is larger than the {len(train_set)} training videos "
                        f"(per process); lower it")
    select_videos = data.val_videos or data.test_videos
    selection = "val" if data.val_videos else "test"
    select_loader = data.test_loader(select_videos)
    train_log, select_log = CsvLogger(output_dir / "train.csv"), CsvLogger(output_dir / f"{selection}.csv")
    if world.is_main:
        train_log.truncate_after(t.start_epoch)
        select_log.truncate_after(t.start_epoch)
    _log(world, f"{stream.name}: {len(data.train_videos)} training videos, {len(select_videos)} {selection} "
                f"videos, {args.arch} on {t.ctx.device}{' x' + str(world.size) if world.distributed else ''}, "
                f"amp {t.ctx.amp_dtype}, epochs {t.start_epoch + 1}..{args.epochs}")
    checkpoint_path = output_dir / "checkpoint.pth.tar"

    def stop_now(epoch: int, samples_done: int, meters: Meters, where: str) -> SystemExit:
        if world.is_main:
            save_checkpoint(checkpoint_path, _checkpoint(args, stream, data, t, epoch, samples_done, meters))
        return _interrupted(world, t.ctx.stop, f"\ninterrupted in epoch {epoch + 1} ({where}); checkpoint written "
                                               f"to {checkpoint_path}\n  continue with --resume {checkpoint_path}")

    result = None
    for epoch in range(t.start_epoch, args.epochs):
        started = time.time()
        train_loader.sampler.set_epoch(epoch, samples_done=t.samples_done)
        done_before = t.samples_done
        meters, steps = train_one_epoch(t.model, train_loader, t.criterion, t.optimizer, t.scaler, t.ctx, epoch,
                                        t.meters)
        epoch_samples = done_before + steps * args.batch_size * world.size
        if t.ctx.stop.requested:
            raise stop_now(epoch, epoch_samples, meters, f"after {epoch_samples} training samples")
        lr = base_lr(t.optimizer)  # the rate this epoch trained with
        result = _test_pass(args, world, data, t, select_videos, select_loader, desc=selection)
        if result is None:  # the training part is kept: the resumed run only redoes this evaluation
            raise stop_now(epoch, train_loader.sampler.epoch_samples, meters, "during its evaluation")
        train_metrics = meters.result()
        if args.lr_scheduler == "plateau":
            t.scheduler.step(result["loss"])
        else:
            t.scheduler.step()
        is_best = result["top1"] > t.best_top1
        t.best_top1 = max(t.best_top1, result["top1"])
        t.samples_done, t.meters = 0, Meters()
        if world.is_main:
            logs = (train_log, select_log, selection)
            _end_of_epoch(args, stream, output_dir, data, t, epoch, train_metrics, result, lr, is_best,
                          time.time() - started, logs)

    if data.val_videos and (output_dir / "model_best.pth.tar").exists():
        result = _final_test(args, stream, world, output_dir, data, t)
    return result


def _end_of_epoch(args, stream: Stream, output_dir: Path, data: Data, t: Training, epoch: int, train_metrics: dict,
                  result: dict, lr: float, is_best: bool, elapsed: float, logs: tuple) -> None:
    """Rank 0 after an epoch: CSV rows, checkpoints, the score file of a new best, curves, a line."""
    train_log, select_log, selection = logs
    train_log.log({"epoch": epoch + 1, **{k: round(v, 5) for k, v in train_metrics.items()},
                   "lr": lr, "seconds": round(elapsed, 1)})
    select_log.log({"epoch": epoch + 1, "loss": round(result["loss"], 5), "top1": round(result["top1"], 3),
                    "top5": round(result["top5"], 3), "frame_top1": round(result["frame_top1"], 3)})
    state = _checkpoint(args, stream, data, t, epoch + 1, 0, t.meters)
    save_checkpoint(output_dir / "checkpoint.pth.tar", state)
    if is_best:
        save_checkpoint(output_dir / "model_best.pth.tar", state)
        if selection == "test":
            _write_scores(args, output_dir, stream, data.test_videos, result)
    plot_curves(output_dir, stream.name, selection)
    print(f"epoch {epoch + 1}/{args.epochs}: train loss {train_metrics['loss']:.4f} top-1 "
          f"{train_metrics['top1']:.2f}% | {selection} loss {result['loss']:.4f} top-1 "
          f"{result['top1']:.2f}% top-5 {result['top5']:.2f}%{' (best)' if is_best else ''} "
          f"| lr {lr:.2e} | {elapsed:.0f}s", flush=True)


def _final_test(args, stream: Stream, world: World, output_dir: Path, data: Data, t: Training) -> dict:
    """Model selection was on held-out groups: the test list is scored once, by the chosen model."""
    if world.distributed:
        dist.barrier()
    best = load_checkpoint(output_dir / "model_best.pth.tar")
    t.model_without_ddp.load_state_dict(best["model"])
    result = _test_pass(args, world, data, t, data.test_videos, data.test_loader(data.test_videos))
    if result is None:
        raise _interrupted(world, t.ctx.stop, f"\ninterrupted during the final test pass\n  score the test list "
                                              f"with --evaluate --resume {output_dir / 'model_best.pth.tar'}")
    if world.is_main:
        _write_scores(args, output_dir, stream, data.test_videos, result)
        print(f"{stream.name} test (model of epoch {best['epoch']}, chosen on validation): top-1 "
              f"{result['top1']:.2f}% top-5 {result['top5']:.2f}%")
    return result
