"""A run of one stream, as the arguments say: set up, then evaluate only, or the epoch loop
(train, evaluate on the selection set, step the schedule, log, save) and, with held-out
groups, the final test of the chosen model."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from dataloader import IndexedVideo, build_loader
from models import base_lr
from utils import UserError

from .build import build_data, build_training
from .checkpoints import (CHECKPOINT_FORMAT, NOT_RESUMED, apply_checkpoint_settings, apply_run_settings,
                          checkpoint_state, load_checkpoint, save_checkpoint)
from .cli import apply_recipe
from .distributed import World, init_distributed, log, resolve_device
from .loggers import EpochRecord, Loggers, hyperparameters, open_loggers
from .loops import EpochTiming, GracefulStop, Meters, evaluate, train_one_epoch
from .run_dir import OutputFolder, plot_curves, write_run_record, write_scores
from .state import Data, Training
from .stream import Stream

SELECTION_METRICS = ("loss", "top1", "top5", "frame_top1", "mean_class")  # what the loggers get of a test pass


def run(args: argparse.Namespace, stream: Stream) -> dict | None:
    """Train and/or evaluate one stream as the arguments say. Returns the last test metrics."""
    world = init_distributed(args.device)
    folder = None
    try:
        device = resolve_device(args, world)
        _resolve_resume(args)
        ckpt = _load_resume_checkpoint(args, world, stream)
        output_dir = Path(args.output_dir)
        if world.is_main:  # before any data is read: a bad folder must not cost an epoch
            folder = OutputFolder(output_dir, stream.score_file, bool(args.resume), args.overwrite)
            write_run_record(output_dir, args, str(device), args.evaluate)
        data = build_data(args, stream, world, output_dir, device.type == "cuda")
        training = build_training(args, stream, world, device, data, ckpt)
        with training.ctx.stop:
            if args.evaluate:
                return _evaluate_only(args, stream, world, output_dir, data, training)
            return _train(args, stream, world, output_dir, data, training)
    finally:
        if folder is not None:
            folder.close()
        if world.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _resolve_resume(args: argparse.Namespace) -> None:
    """The checkpoint --resume names: 'auto' (also ``--resume`` alone) is the run in --output-dir
    if it has a checkpoint, else a fresh one; ``--evaluate`` alone scores that run's best (a
    folder without a run: the model as --pretrained makes it)."""
    output_dir = Path(args.output_dir)
    args.auto_resumed = args.resume == "auto"
    if args.auto_resumed:
        latest = output_dir / "checkpoint.pth.tar"
        args.resume = str(latest) if latest.is_file() else ""
        args.overwrite = args.overwrite or not args.resume
    elif args.evaluate and not args.resume:  # without a run there, the model as --pretrained makes it
        found = [output_dir / name for name in ("model_best.pth.tar", "checkpoint.pth.tar")
                 if (output_dir / name).is_file()]
        args.resume = str(found[0]) if found else ""


def _load_resume_checkpoint(args: argparse.Namespace, world: World, stream: Stream) -> dict | None:
    """The --resume checkpoint. A training checkpoint of this repo continues its run: its folder
    (unless --output-dir is given) and every setting it stores, its recipe first; flags given
    explicitly win, and the log says what came from where."""
    if not args.resume:
        return None
    ckpt = load_checkpoint(args.resume)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        return ckpt
    if not args.evaluate and "optimizer" not in ckpt:
        raise UserError(f"{args.resume} is a published model (tools/publish_model.py): it keeps the weights but "
                        f"no training state to resume\n  fix: fine-tune from it with --pretrained "
                        f"{args.resume}, or score it with --evaluate --resume {args.resume}")
    saved = ckpt.get("args", {})
    recipe, taken = saved.get("recipe", "reference"), []
    if "recipe" not in args.explicit and recipe != args.recipe and recipe in stream.recipes:
        args.recipe = recipe
        apply_recipe(args, stream.recipes[recipe])
        taken.append(f"--recipe {recipe}")
    taken += apply_checkpoint_settings(args, saved, args.resume)
    if "optimizer" in ckpt:  # a training run's checkpoint: that run goes on, in its folder
        if "output_dir" not in args.explicit and Path(args.output_dir).resolve() != Path(args.resume).resolve().parent:
            args.output_dir = str(Path(args.resume).parent)
            taken.append(f"--output-dir {args.output_dir}")
        taken += apply_run_settings(args, saved)
    if getattr(args, "video_root", None) and args.video_frame_size is None and ckpt.get("frame_size"):
        args.video_frame_size = list(ckpt["frame_size"])  # videos read at the size the model was trained on
        taken.append(f"--frame-size {' '.join(map(str, args.video_frame_size))}")
    if taken:
        log(world, f"settings from {args.resume}: {', '.join(taken)}")
    given = [f"--{name.replace('_', '-')}" for name in args.explicit if name in saved and name not in NOT_RESUMED
             and saved[name] != getattr(args, name)]
    if given:
        log(world, f"given on the command line instead of {args.resume}'s: {' '.join(sorted(given))}")
    return ckpt


def _test_pass(args, world: World, data: Data, t: Training, videos: list[IndexedVideo], loader,
               loggers: Loggers, epoch: int, desc: str = "test") -> dict | None:
    """One evaluation; non-finite scores stop the run with the count and an example video. The
    loggers receive its confusion matrix (at ``epoch``)."""
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
        loggers.test_pass(epoch, desc, result["scores"].numpy(), data.labels(videos).numpy(), list(data.split.classes))
    return result


def _interrupted(world: World, stop: GracefulStop, message: str) -> SystemExit:
    log(world, message)
    return SystemExit(128 + stop.signal)


def _evaluate_only(args, stream: Stream, world: World, output_dir: Path, data: Data, t: Training) -> dict:
    loggers = open_loggers(args, output_dir, stream.name, "test", t.start_epoch, world.is_main, training=False)
    try:
        result = _test_pass(args, world, data, t, data.test_videos, data.test_loader(data.test_videos), loggers,
                            t.start_epoch)
    finally:
        loggers.close()
    if result is None:
        raise _interrupted(world, t.ctx.stop, "\ninterrupted during the test pass; nothing was written")
    if world.is_main:
        path = write_scores(args, output_dir, stream, data.test_videos, result)
        print(f"{stream.name} test: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
              f"mean class {result['mean_class']:.2f}%  loss {result['loss']:.4f}  "
              f"frame top-1 {result['frame_top1']:.2f}%  "
              f"({len(data.test_videos)} videos)\nscores written to {path}")
    return result


def _train(args, stream: Stream, world: World, output_dir: Path, data: Data, t: Training) -> dict | None:
    """The epoch loop with its loggers, then (with held-out groups) the chosen model's test."""
    if t.start_epoch >= args.epochs:
        if args.auto_resumed:
            log(world, f"{args.resume} has finished its {t.start_epoch} epochs: nothing to train")
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
    log(world, f"{stream.name}: {len(data.train_videos)} training videos, {len(select_videos)} {selection} "
               f"videos, {args.arch} on {t.ctx.device}{' x' + str(world.size) if world.distributed else ''}, "
               f"amp {t.ctx.amp_dtype}, epochs {t.start_epoch + 1}..{args.epochs}")
    loggers = open_loggers(args, output_dir, stream.name, selection, t.start_epoch, world.is_main)
    try:
        result = _epochs(args, stream, world, output_dir, data, t, train_loader, select_videos, selection, loggers)
        if data.val_videos and (output_dir / "model_best.pth.tar").exists():
            result = _final_test(args, stream, world, output_dir, data, t, loggers)
        loggers.finish(hyperparameters(args), {"best_top1": t.best_top1, "top1": result["top1"],
                                               "top5": result["top5"]})
    finally:
        loggers.close()
    return result


def _epochs(args, stream: Stream, world: World, output_dir: Path, data: Data, t: Training, train_loader,
            select_videos: list[IndexedVideo], selection: str, loggers: Loggers) -> dict:
    """Train, evaluate on the selection set, step the schedule, log and save, each epoch; a stop
    asked for by SIGINT/SIGTERM writes a checkpoint to resume from exactly there."""
    checkpoint_path = output_dir / "checkpoint.pth.tar"
    select_loader = data.test_loader(select_videos)

    def stop_now(epoch: int, samples_done: int, meters: Meters, where: str) -> SystemExit:
        if world.is_main:
            save_checkpoint(checkpoint_path, checkpoint_state(args, stream, data, t, epoch, samples_done, meters))
        return _interrupted(world, t.ctx.stop, f"\ninterrupted in epoch {epoch + 1} ({where}); checkpoint written "
                                               f"to {checkpoint_path}\n  continue with --resume {checkpoint_path}")

    result = None
    for epoch in range(t.start_epoch, args.epochs):
        started = time.time()
        train_loader.sampler.set_epoch(epoch, samples_done=t.samples_done)
        done_before = t.samples_done
        timing = EpochTiming()
        meters, steps = train_one_epoch(t.model, train_loader, t.criterion, t.optimizer, t.scaler, t.ctx, epoch,
                                        t.meters, timing=timing, report=_step_reporter(args, world, epoch, loggers),
                                        report_every=args.print_freq)
        epoch_samples = done_before + steps * args.batch_size * world.size
        if t.ctx.stop.requested:
            raise stop_now(epoch, epoch_samples, meters, f"after {epoch_samples} training samples")
        lr = base_lr(t.optimizer)  # the rate this epoch trained with
        passed = None  # this epoch's test pass: every --val-interval epochs and after the last
        if (epoch + 1) % args.val_interval == 0 or epoch + 1 == args.epochs:
            passed = _test_pass(args, world, data, t, select_videos, select_loader, loggers, epoch + 1, desc=selection)
            if passed is None:  # the training part is kept: the resumed run only redoes this evaluation
                raise stop_now(epoch, train_loader.sampler.epoch_samples, meters, "during its evaluation")
            result = passed
        train_metrics = meters.result()
        if args.lr_scheduler != "plateau":
            t.scheduler.step()
        elif passed is not None:
            t.scheduler.step(passed["loss"])
        is_best = passed is not None and passed["top1"] > t.best_top1
        t.best_top1 = max(t.best_top1, passed["top1"]) if passed is not None else t.best_top1
        t.samples_done, t.meters = 0, Meters()
        if world.is_main:
            tested = {k: passed[k] for k in SELECTION_METRICS} if passed is not None else {}
            record = EpochRecord(epoch + 1, train_metrics, selection, tested, lr, time.time() - started,
                                 timing.samples_per_second, timing.data_wait)
            _end_of_epoch(args, stream, output_dir, data, t, record, passed, is_best, loggers)
    return result


def _step_reporter(args, world: World, epoch: int, loggers: Loggers):
    """--print-freq: a line every N steps (torchvision's references' MetricLogger), and the
    loggers' per-step scalars; None when off or on a process that does not log."""
    if not args.print_freq or not world.is_main:
        return None

    def report(step: int, steps: int, values: dict) -> None:
        eta = int(values["eta_seconds"])
        tqdm.write(f"epoch {epoch + 1} [{step}/{steps}] loss {values['loss']:.4f} lr {values['lr']:.2e} "
                   f"{values['samples_per_s']:.1f} samples/s eta {eta // 60}:{eta % 60:02d}")
        loggers.step(epoch * steps + step, values)
    return report


def _end_of_epoch(args, stream: Stream, output_dir: Path, data: Data, t: Training, record: EpochRecord,
                  result: dict | None, is_best: bool, loggers: Loggers) -> None:
    """Rank 0 after an epoch: the loggers, checkpoints, the score file of a new best, curves, a line."""
    loggers.epoch(record)
    state = checkpoint_state(args, stream, data, t, record.epoch, 0, t.meters)
    save_checkpoint(output_dir / "checkpoint.pth.tar", state)
    if is_best:
        save_checkpoint(output_dir / "model_best.pth.tar", state)
        if record.selection == "test":
            write_scores(args, output_dir, stream, data.test_videos, result)
    plot_curves(output_dir, stream.name, record.selection)
    tested = (f" | {record.selection} loss {result['loss']:.4f} top-1 {result['top1']:.2f}% top-5 "
              f"{result['top5']:.2f}% mean class {result['mean_class']:.2f}%{' (best)' if is_best else ''}"
              if result is not None else "")
    print(f"epoch {record.epoch}/{args.epochs}: train loss {record.train['loss']:.4f} top-1 "
          f"{record.train['top1']:.2f}%{tested} | lr {record.lr:.2e} | {record.seconds:.0f}s, "
          f"{record.samples_per_second:.1f} samples/s, {100 * record.data_wait:.0f}% waiting for data", flush=True)


def _final_test(args, stream: Stream, world: World, output_dir: Path, data: Data, t: Training,
                loggers: Loggers) -> dict:
    """Model selection was on held-out groups: the test list is scored once, by the chosen model."""
    if world.distributed:
        dist.barrier()
    best = load_checkpoint(output_dir / "model_best.pth.tar")
    t.model_without_ddp.load_state_dict(best["model"])
    result = _test_pass(args, world, data, t, data.test_videos, data.test_loader(data.test_videos), loggers,
                        best["epoch"])
    if result is None:
        raise _interrupted(world, t.ctx.stop, f"\ninterrupted during the final test pass\n  score the test list "
                                              f"with --evaluate --resume {output_dir / 'model_best.pth.tar'}")
    if world.is_main:
        write_scores(args, output_dir, stream, data.test_videos, result)
        print(f"{stream.name} test (model of epoch {best['epoch']}, chosen on validation): top-1 "
              f"{result['top1']:.2f}% top-5 {result['top5']:.2f}% mean class {result['mean_class']:.2f}%")
    return result
