"""Checkpoints: written atomically, read from this repo, the reference repo or a bare state
dict; the settings they store (which --evaluate and --resume take), their compatibility with
a run, what publishing keeps, and a run's state restored from one.

Checkpoint ``epoch`` means "epochs finished"; a checkpoint written on SIGINT/SIGTERM in the
middle of an epoch also records how many training samples of that epoch were done, and
``--resume`` continues from exactly there.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from dataloader import TEST_CROPS, TEST_POSITIONS, TEST_SCALES
from models import ARCHS, LR_GROUPS, load_torch_file, normalize_keys, pretrained_name
from guards import check_values, value_problems
from utils import UserError, atomic_write

from .cli import RECIPE_NAMES
from .distributed import World, log
from .loops import Meters
from .schedule import restore_schedule
from .state import Data, Training
from .stream import Stream

CHECKPOINT_FORMAT = "two-stream-checkpoint/1"


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
    """The settings a checkpoint stores pass the same checks as the flags that set them (every
    number its bound in guards.BOUNDS); an edited or damaged one is one message naming the
    checkpoint."""
    if not isinstance(saved, dict):
        raise UserError(f"{path}: its settings ('args') are a {type(saved).__name__}, not a mapping\n  fix: the "
                        f"checkpoint was edited or damaged; use the file its training wrote")
    problems = []
    for name, choices in _SETTING_CHOICES.items():
        if name in saved and not any(saved[name] == c and type(saved[name]) is type(c) for c in choices):
            problems.append(f"{name} {saved[name]!r} (one of {', '.join(map(str, choices))})")
    problems += value_problems(saved)
    if problems:
        raise UserError(f"{path} stores settings no run can have: {'; '.join(problems)}\n  fix: the checkpoint was "
                        f"edited or damaged; use the file its training wrote")


def check_complete(record: dict, path: str | Path, weights: bool = True) -> None:
    """A record of this repo's format holds its stream, architecture, classes and input channels
    (and, ``weights``, its model); else one message naming what it lacks."""
    lacking = [key for key in ("stream", "arch", "num_classes", "in_channels", "model")[:5 if weights else 4]
               if key not in record]
    if lacking:
        raise UserError(f"{path} lacks {', '.join(lacking)}: not a complete checkpoint of this repo\n"
                        f"  fix: use the file spatial_cnn.py / motion_cnn.py wrote")


def check_record_shapes(ckpt: dict, path: str | Path) -> None:
    """A checkpoint's record (input channels, classes) within its bounds and equal to its
    weights' shapes, checked before any model is built from it."""
    check_values({name: ckpt.get(name) for name in ("in_channels", "num_classes", "frame_size")}, str(path))
    if ckpt.get("frame_size") is not None and len(ckpt["frame_size"]) != 2:
        raise UserError(f"{path}: its frame_size {ckpt['frame_size']} is not a height and a width\n  fix: the "
                        f"checkpoint was edited or damaged; use the file its training wrote")
    state = ckpt.get("model")
    if not isinstance(state, dict):
        return
    for key, dims, axis, name in (("conv1.weight", 4, 1, "in_channels"), ("fc.weight", 2, 0, "num_classes")):
        weight = state.get(key)
        if not isinstance(weight, torch.Tensor) or weight.dim() != dims:
            raise UserError(f"{path}: its weights lack a {key} of the right form (a damaged checkpoint)\n"
                            f"  fix: use the file its training wrote")
        if name in ckpt and weight.shape[axis] != ckpt[name]:
            raise UserError(f"{path}: its record says {name} {ckpt[name]}, its weights {key} have "
                            f"{weight.shape[axis]}\n  fix: the checkpoint was edited or damaged; use the file its "
                            f"training wrote")


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


# what a resumed training run does not take from its checkpoint: where and how fast it runs on this
# machine, and what the command line says about this invocation itself
NOT_RESUMED = ("resume", "evaluate", "overwrite", "output_dir", "start_epoch", "device", "workers", "amp",
               "channels_last", "device_resize", "compile", "sync_bn", "test_batch_size",
               "override_checkpoint_settings", "explicit", "auto_resumed", "config")


def apply_run_settings(args: argparse.Namespace, saved: dict) -> list[str]:
    """A resumed training run goes on with every setting its checkpoint stores (lr, batch size,
    schedule, data options, ...) where the command line is silent; returns what was taken."""
    explicit = set(getattr(args, "explicit", ()))
    taken = []
    for name, value in saved.items():
        if name in NOT_RESUMED or name in explicit or not hasattr(args, name) or getattr(args, name) == value:
            continue
        setattr(args, name, value)
        taken.append(f"--{name.replace('_', '-')} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return taken


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
                  "frame_size", "frame_source", "epoch", "best_top1", "model")


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


def model_name(ckpt: dict) -> str:
    """``<stream>-<arch>-<recipe>``: the name a published or exported stream goes by."""
    recipe = ckpt.get("args", {}).get("recipe", "reference")
    return f"{ckpt.get('stream', 'stream')}-{ckpt.get('arch', 'model')}-{recipe}"


def check_compatible(ckpt: dict, path: str | Path, stream: str, arch: str, in_channels: int,
                     num_classes: int, model: nn.Module) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict, after checking that it fits this stream and model; the
    message says what differs and which flag fixes it."""
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        check_record_shapes(ckpt, path)
        check_complete(ckpt, path)
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
        state = ckpt["model"]
    else:
        state = normalize_keys(ckpt["state_dict"])  # the reference repo or a bare state dict
        conv1 = state.get("conv1.weight")
        if conv1 is not None and conv1.shape[1] != in_channels:
            other = "spatial" if conv1.shape[1] == 3 else "motion"
            raise UserError(f"{path} takes {conv1.shape[1]} input channels (a {other} stream checkpoint?); "
                            f"the {stream} stream needs {in_channels}")
        fc = state.get("fc.weight")
        if fc is not None and fc.shape[0] != num_classes:
            raise UserError(f"{path} has {fc.shape[0]} classes, the split has {num_classes}\n"
                            f"  fix: use the --split-dir it was trained with")
    expected = model.state_dict()  # every weight, also of a record that names another depth than its weights
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise UserError(f"{path} does not fit --arch {arch}: {len(missing)} weights missing "
                        f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
                        f"{len(mismatched)} of another shape (e.g. {mismatched[:2]})\n"
                        f"  fix: pass the --arch it was trained with, or use the file its training wrote")
    return state


def check_finite_weights(state: dict, path: str | Path) -> None:
    """Refuse weights holding NaN or inf (a diverged run, a damaged file) before they are published
    or exported, where they would pass every later check unseen."""
    bad = [key for key, value in state.items()
           if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise UserError(f"{path}: {len(bad)} weight tensors hold NaN or inf, e.g. {bad[0]}\n  fix: training "
                        f"diverged or the file is damaged; use an earlier checkpoint")


def checkpoint_state(args: argparse.Namespace, stream: Stream, data: Data, t: Training, epoch: int,
                samples_done: int, meters: Meters) -> dict:
    """Everything --resume needs; ``epoch`` counts finished epochs, ``samples_done`` the
    training samples of the next one already seen (non-zero only after an interrupt)."""
    rng = {"torch": torch.get_rng_state()}
    if t.ctx.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(t.ctx.device)
    saved_args = {k: v for k, v in vars(args).items() if k not in ("explicit", "auto_resumed")}
    return {"format": CHECKPOINT_FORMAT, "stream": stream.name, "arch": args.arch,
            "num_classes": data.split.num_classes, "in_channels": stream.in_channels(args),
            "class_names": list(data.split.classes), "args": saved_args, "frame_size": data.frame_size,
            # what the model saw: decoded video frames (--video-root) or stored JPEGs; predict.py copies it
            "frame_source": "video" if getattr(args, "video_root", None) else "jpeg",
            "pretrained_weights": pretrained_name(args.pretrained),
            "epoch": epoch, "samples_done": samples_done, "meters": vars(meters),
            "model": t.model_without_ddp.state_dict(), "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict(), "scaler": t.scaler.state_dict(), "rng": rng,
            "best_top1": t.best_top1, "best_prec1": t.best_top1}


def restore_training(args: argparse.Namespace, world: World, ckpt: dict, t: Training) -> None:
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        t.start_epoch, t.samples_done = ckpt["epoch"], ckpt.get("samples_done", 0)
        t.best_top1 = ckpt["best_top1"]
        t.meters = Meters(**ckpt.get("meters", {}))
        if not args.evaluate:
            changes = restore_schedule(t.optimizer, t.scheduler, ckpt, args, t.start_epoch)
            if changes:
                log(world, f"resuming with the current arguments: {'; '.join(changes)}")
            t.scaler.load_state_dict(ckpt["scaler"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            if t.ctx.device.type == "cuda" and "cuda" in ckpt["rng"]:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"], t.ctx.device)
    else:  # the reference repo's {'epoch', 'state_dict', 'best_prec1', 'optimizer'}
        t.start_epoch = int(ckpt.get("epoch", 0))
        t.best_top1 = float(ckpt.get("best_prec1", -1.0))
    log(world, f"resumed from {args.resume} (epoch {t.start_epoch}, best top-1 {t.best_top1:.2f})")
