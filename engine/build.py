"""What a run is built from, in torchvision's order: its data (split, video index, loaders),
then its model, optimizer, scaler, scheduler, DDP and resumed state."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from dataloader import MultiCrop, build_loader, holdout_groups, index_videos, resolve_layout
from dataloader.splits import DEFAULT_SPLIT_DIR, groups_are_videos, split_from_args
from models import build_model, freeze_partial_bn, parameter_groups
from utils import atomic_write

from .checkpoints import check_compatible, restore_training
from .distributed import World, log
from .loops import Context
from .schedule import build_scheduler
from .state import Data, Training
from .stream import Stream


def build_data(args: argparse.Namespace, stream: Stream, world: World, output_dir: Path, cuda: bool) -> Data:
    split = split_from_args(args)
    if world.is_main:  # the label order of this run's scores and checkpoints, for any split format
        with atomic_write(output_dir / "classInd.txt", "w") as f:
            f.write("".join(f"{i + 1} {name}\n" for i, name in enumerate(split.classes)))
    layout = resolve_layout(args.layout, args.rgb_template, args.flow_x_template, args.flow_y_template)
    sources = stream.sources(args, layout)

    ucf101_lists = Path(args.split_dir).resolve() == DEFAULT_SPLIT_DIR and not args.train_list
    hint = ("fix: no --split-dir was given, so UCF101's split lists were used; for your own videos pass "
            "--split-dir with their lists (tools/make_splits.py writes them)") if ucf101_lists else ""

    def index(records, what):
        # every rank reads rank 0's cache of an earlier run (a video index decodes every video); rank 0 writes it
        return index_videos(records, what, sources, output_dir, args.allow_missing, stream.min_frames(args),
                            warn=world.is_main, hint=hint, save_cache=world.is_main)
    test_videos = index(split.test, "test")
    train_records, val_records = split.train, []
    if args.holdout_groups:
        train_records, val_records = holdout_groups(split.train, args.holdout_groups)
        if groups_are_videos(split.train):
            log(world, "--holdout-groups: the video names give no groups (UCF101's gXX, HMDB51's films), "
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
    return Data(split, test_videos, train_videos, val_videos, test_loader, test_mode,
                stored_frame_size(train_videos or test_videos))


def stored_frame_size(videos) -> list[int] | None:
    """[height, width] of the first video's frames as stored (or as read from a video file):
    what predict.py must resize videos to, to see what this model was trained on."""
    from dataloader import FrameReadError

    if not videos:
        return None
    try:
        return videos[0].sources[0].frame_shape()
    except (OSError, FrameReadError):
        return None


def build_training(args: argparse.Namespace, stream: Stream, world: World, device: torch.device, data: Data,
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
    scheduler = build_scheduler(args, optimizer)
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
        restore_training(args, world, ckpt, training)
    if args.start_epoch is not None:
        training.start_epoch, training.samples_done = args.start_epoch, 0
    return training
