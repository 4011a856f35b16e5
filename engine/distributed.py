"""The processes of a run: one, or torchrun's world (NCCL on GPUs, gloo on the CPU); only
the main process prints and writes."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils import UserError


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
            count = torch.cuda.device_count()
            fix = (f"--nproc_per_node={count} (one process a GPU), or --device cpu" if count
                   else "--device cpu (torchrun's processes then share this machine's cores)")
            raise UserError(f"torchrun started {local_size} processes on this node but only {count} CUDA devices "
                            f"are visible\n  fix: {fix}")
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


def log(world: World, message: str) -> None:
    if world.is_main:
        print(message, flush=True)
