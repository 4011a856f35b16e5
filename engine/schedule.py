"""The learning-rate schedule: built from the flags, and restored from a checkpoint with the
current flags applied over the saved ones (a run extended from 2 to 4 epochs follows the
4-epoch cosine)."""
from __future__ import annotations

import argparse
import math
from collections import Counter

import torch


def build_scheduler(args, optimizer):
    if args.lr_scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", patience=args.lr_patience)
    if args.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.epochs, 1))
    if args.lr_scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=args.lr_milestones, gamma=0.1)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step, gamma=0.1)


def scheduled_lr(scheduler, base_lr: float, epoch: int) -> float:
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
                group["lr"] = scheduled_lr(scheduler, base, epoch)
            scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return changes
