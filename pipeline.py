"""From a folder of videos to a trained, evaluated and fused two-stream model, in one command.

    python pipeline.py VIDEO_DIR OUT_DIR [--split-dir DIR | --train-list F --test-list F]
                       [--split-format ucf101|hmdb51|mmaction] [--split 1] [--recipe reference|tsn]
                       [--size 256 340] [--flow-method tvl1] [--workers N] [--test-fraction 0.3]
                       [--group-pattern REGEX] [--no-frames] [--restart] [any flag of spatial_cnn.py/motion_cnn.py]

Runs the project's own scripts one after the other: split lists (tools/make_splits.py, only
when no split is given: VIDEO_DIR is then read as VIDEO_DIR/<class>/<video>), frames
(tools/extract_frames.py), optical flow (tools/compute_flow.py), spatial and motion training
(spatial_cnn.py, motion_cnn.py), their evaluation with the best checkpoints, and fusion
(average_fusion.py). OUT_DIR receives splits/, frames/, flow/, spatial/, motion/, fusion.json
and confusion.png; with --no-frames no frames/: flow comes straight from the videos and the
spatial stream reads the videos themselves. A stage that finished is skipped on the next run; an interrupted one is
resumed (extraction and flow skip finished videos, training continues from its checkpoint).
Flags the pipeline does not know go to both training scripts (e.g. --epochs 30 --arch resnet18).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dataloader.splits import DEFAULT_SPLIT_DIR, SPLIT_FORMATS, load_split
from dataloader.video import find_videos
from guards import INPUT, LIST_FILES, OUTPUT, VIDEO_FILES, add_path, bound, check_io, frame_size
from utils import HelpFormatter, UserError, atomic_write, hold_lock, run_cli, sha256_of

ROOT = Path(__file__).resolve().parent
STAGES = ("splits", "frames", "flow", "spatial", "motion", "evaluate", "fusion")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_path(p, "video_dir", role=INPUT, folder=True, reads=VIDEO_FILES, type=Path,
             help="folder of videos (VIDEO_DIR/<class>/<video> without a split)")
    add_path(p, "out_dir", role=OUTPUT, folder=True, type=Path, help="where every stage writes")
    split = p.add_argument_group("split (default: lists made by tools/make_splits.py in OUT_DIR/splits)")
    add_path(split, "--split-dir", role=INPUT, folder=True, reads=LIST_FILES, help="UCF101 or HMDB51 split files")
    split.add_argument("--split-format", choices=SPLIT_FORMATS, default=None,
                       help="the format of --split-dir or the lists (default: detected)")
    add_path(split, "--train-list", role=INPUT,
             help="mmaction2 training list (video lists: paths relative to VIDEO_DIR)")
    add_path(split, "--test-list", role=INPUT, help="mmaction2 test list")
    add_path(split, "--class-names", role=INPUT, help="mmaction2 class names file")
    split.add_argument("--allow-absolute-paths", action="store_true",
                       help="mmaction2 lists: entries may be absolute paths outside VIDEO_DIR (with --class-names)")
    split.add_argument("--split", type=bound("split"), default=1, help="split number of the given lists")
    split.add_argument("--test-fraction", type=bound("test_fraction"), default=0.3,
                       help="make_splits: share of each class in test")
    split.add_argument("--group-pattern", help="make_splits: regular expression naming a video's group")
    prep = p.add_argument_group("preprocessing")
    prep.add_argument("--size", type=bound("size"), nargs=2, default=[256, 340], metavar=("H", "W"), help="frame size")
    prep.add_argument("--flow-method", default="tvl1", help="tools/compute_flow.py --method")
    prep.add_argument("--no-frames", action="store_true",
                      help="write no RGB frames: flow is computed from the videos (compute_flow.py --from-videos) "
                           "and the spatial stream reads them (spatial_cnn.py --video-root)")
    prep.add_argument("--workers", type=bound("processes"), default=None,
                      help="processes for extraction and flow, and the training scripts' loader workers")
    p.add_argument("--recipe", default="reference", choices=["reference", "tsn"], help="both streams' --recipe")
    p.add_argument("--restart", action="store_true", help="redo every stage (the frames and flow of finished "
                                                          "videos are kept)")
    return p


# flags that change only speed or placement, never a stage's output: left out of its fingerprint
SPEED_FLAGS = {"--workers": 1, "--device": 1, "--batch": 1, "--test-batch-size": 1, "--logger": 1, "--compile": 0,
               "--no-compile": 0, "--channels-last": 0, "--no-channels-last": 0, "--device-resize": 0,
               "--no-device-resize": 0}  # flag -> values it takes
# flags a finished training stage goes on with, from its checkpoint, when nothing else changed
RESUMABLE_FLAGS = {"--epochs": 1}


def command_parts(command: list[str]) -> dict[str, list[str]]:
    """A command's words as {'shaping': what its output depends on, 'resumable': RESUMABLE_FLAGS
    with their values}; SPEED_FLAGS are left out."""
    parts: dict[str, list[str]] = {"shaping": [], "resumable": []}
    words = list(map(str, command))
    i = 0
    while i < len(words):
        flag = words[i].split("=", 1)[0]
        table = SPEED_FLAGS if flag in SPEED_FLAGS else RESUMABLE_FLAGS if flag in RESUMABLE_FLAGS else {}
        width = 1 if "=" in words[i] else 1 + table.get(flag, 0)
        if table is not SPEED_FLAGS:
            parts["resumable" if table is RESUMABLE_FLAGS else "shaping"] += words[i:i + width]
        i += width
    return parts


class Stage:
    """Runs one stage's commands as child processes and remembers what it was made from.

    A stage that finished leaves ``.stage-NAME.done`` holding its fingerprint: its command's
    words that shape its output (not SPEED_FLAGS) and, for the stages that read the videos,
    every video's size and content hash, chained with the fingerprint of the stage before it.
    The next run skips a stage whose fingerprint is unchanged and otherwise says why it runs
    again: an interrupted stage (``.stage-NAME.started`` holds its fingerprint) goes on; a
    preprocessing stage goes on too (its tools redo only what changed); a training stage goes
    on from its checkpoint when only RESUMABLE_FLAGS changed. Output that would be made afresh
    is moved aside first (``NAME.replaced-K``), never overwritten; only --restart replaces it.
    SIGINT/SIGTERM go to the child (once: it runs in its own process group), whose own handling
    (a checkpoint, finished videos) is what a later run resumes from; a child outlives no killed
    pipeline (PR_SET_PDEATHSIG)."""

    def __init__(self, out_dir: Path, restart: bool):
        self.out_dir, self.restart = out_dir, restart
        self.number = 0
        self.previous = ""  # the fingerprint of the stage before

    def marker(self, name: str, kind: str = "done") -> Path:
        return self.out_dir / f".stage-{name}.{kind}"

    def fingerprint(self, commands: tuple[list[str], ...], videos: dict | None) -> dict:
        split = [command_parts(c) for c in commands]
        parts = {"commands": [c["shaping"] for c in split], "resumable": [c["resumable"] for c in split],
                 "previous": self.previous}
        if videos is not None:
            parts["videos"] = videos
        return {"hash": hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(), "parts": parts}

    def _written(self, name: str) -> dict | None | str:
        """The finished stage's fingerprint; 'legacy' for a marker from before fingerprints (one
        from before speed flags were left out, without 'resumable', is also run again as going on)."""
        try:
            written = json.loads(self.marker(name).read_text() or "null")
        except (OSError, ValueError):
            return None
        return written if isinstance(written, dict) else "legacy"

    @staticmethod
    def differences(old: dict, new: dict) -> list[str]:
        """Why a stage's fingerprint changed, in words."""
        reasons = []
        if "videos" in new and old.get("videos") != new["videos"]:
            before, after = old.get("videos", {}), new["videos"]
            added, removed = set(after) - set(before), set(before) - set(after)
            replaced = [v for v in set(before) & set(after) if before[v] != after[v]]
            reasons.append(f"the videos changed ({len(added)} added, {len(removed)} removed, "
                           f"{len(replaced)} replaced)")
        if old.get("commands") != new["commands"]:
            reasons.append("its flags changed")
        if old.get("resumable", new["resumable"]) != new["resumable"]:
            reasons.append(f"{' '.join(RESUMABLE_FLAGS)} changed")
        if old.get("previous") != new["previous"]:
            reasons.append("an earlier stage was redone")
        return reasons or ["its inputs changed"]

    def plan(self, name: str, now: dict, training: bool) -> tuple[str | None, str]:
        """(why the stage runs, or None; how: 'skip', 'resume' or 'fresh')."""
        if self.restart:
            return "--restart", "fresh"
        written = self._written(name)
        if isinstance(written, dict) and written.get("hash") == now["hash"]:
            return None, "skip"
        if written == "legacy" or (isinstance(written, dict) and "resumable" not in written.get("parts", {})):
            return "made by an older pipeline, checked again", "resume"  # its tools redo only what is missing
        if self._started(name) == now["hash"]:
            return "interrupted, going on", "resume"
        if written is None and self._started(name) is None:
            return "not finished", "fresh"
        old = written if isinstance(written, dict) else {"parts": {}}
        reasons = self.differences(old.get("parts", {}), now["parts"])
        only_resumable = reasons == [f"{' '.join(RESUMABLE_FLAGS)} changed"]
        if not training:  # the tools redo only the videos whose output is stale
            return "; ".join(reasons), "fresh" if "its flags changed" in reasons else "resume"
        return "; ".join(reasons), "resume" if only_resumable else "fresh"

    def run(self, name: str, *commands: list[str], videos: dict | None = None, always: bool = False,
            output: Path | None = None, training: bool = False, fresh: list[str] | None = None,
            resume: list[str] | None = None) -> None:
        """Run the stage's commands one after the other, unless it finished from the same inputs.
        ``output``: the folder it writes (moved aside before it is made afresh). ``fresh``/
        ``resume``: flags appended to each command when it starts anew or goes on (a training
        stage: --overwrite, --resume auto)."""
        self.number += 1
        head = f"== [{self.number}/{len(STAGES)}] {name}"
        now = self.fingerprint(commands, videos)
        self.previous = now["hash"]
        why, how = self.plan(name, now, training)
        if how == "skip" and not always:
            print(f"{head}: done in an earlier run, skipped", flush=True)
            return
        print(head + (f" (again: {why})" if why not in (None, "not finished") else ""), flush=True)
        if how == "fresh" and not self.restart and output is not None:
            self._move_aside(output, why or "")
        self.marker(name).unlink(missing_ok=True)
        with atomic_write(self.marker(name, "started"), "w") as f:
            f.write(now["hash"])
        began = time.time()
        for command in commands:
            self._call(name, [*command, *((resume if how == "resume" else fresh) or [])])
        with atomic_write(self.marker(name), "w") as f:
            json.dump(now, f)
        print(f"({time.time() - began:.0f}s)", flush=True)

    @staticmethod
    def _move_aside(output: Path, why: str) -> None:
        """Keep earlier output that a changed stage would replace: OUTPUT.replaced-K."""
        if not output.exists() or (output.is_dir() and not any(output.iterdir())):
            return
        k = 1
        while output.with_name(f"{output.name}.replaced-{k}").exists():
            k += 1
        aside = output.with_name(f"{output.name}.replaced-{k}")
        output.rename(aside)
        print(f"   the earlier {output.name}/ was made with other inputs or flags ({why}): kept as {aside}; delete "
              f"it when you no longer need it", flush=True)

    def _started(self, name: str) -> str | None:
        try:
            return self.marker(name, "started").read_text() or None
        except OSError:
            return None

    def skip(self, name: str, why: str) -> None:
        self.number += 1
        print(f"== [{self.number}/{len(STAGES)}] {name}: {why}", flush=True)

    @staticmethod
    def _call(name: str, command: list[str]) -> None:
        print(f"$ {' '.join(command)}", flush=True)
        script = [str(ROOT / command[0]), *command[1:]] if command[0].endswith(".py") else command
        # its own process group: a terminal's Ctrl-C reaches the pipeline alone, which passes it on once
        child = subprocess.Popen([sys.executable, *script], env=child_environment(), preexec_fn=_die_with_parent,
                                 process_group=0)
        previous = {sig: signal.signal(sig, lambda signum, frame: child.send_signal(signum))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            status = child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if status != 0:
            if status < 0 or status in (130, 143):  # killed by a signal, or stopped on one
                print(f"pipeline: interrupted in '{name}'; run the same command again to resume", file=sys.stderr)
                sys.exit(128 - status if status < 0 else status)
            raise UserError(f"stage '{name}' failed with exit status {status} (its message is above)\n"
                            f"  fix: correct what it says, then run the same command again: finished stages "
                            f"are skipped")


def child_environment() -> dict[str, str]:
    """The stages' environment: without a Slurm job array's variables, which would make each
    stage do one shard of the videos and be marked done (the pipeline does all of them; shard
    with tools/extract_frames.py and tools/compute_flow.py themselves)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_ARRAY_")}


def _die_with_parent() -> None:
    """In the child: SIGTERM when the pipeline dies, however it dies (Linux), so that a killed
    pipeline leaves no stage running (it stops as on Ctrl-C: a checkpoint, finished videos)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def video_stamps(video_dir: Path, cache_file: Path) -> dict[str, list]:
    """{relative path: [bytes, sha256]} of every video under ``video_dir``: what a video is, so
    that touching one changes nothing. A video is hashed again only when its size or
    modification time differ from ``cache_file``'s record of them."""
    try:
        cache = json.loads(cache_file.read_text())
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    stamps, fresh = {}, {}
    for video in find_videos(video_dir):
        info, name = video.stat(), str(video.relative_to(video_dir))
        known = cache.get(name)
        if isinstance(known, list) and len(known) == 3 and known[:2] == [info.st_size, info.st_mtime_ns]:
            digest = known[2]
        else:
            digest = sha256_of(video)
        fresh[name] = [info.st_size, info.st_mtime_ns, digest]
        stamps[name] = [info.st_size, digest]
    if fresh != cache:
        with atomic_write(cache_file, "w") as f:
            json.dump(fresh, f)
    return stamps


def stack_length(training_flags: list[str]) -> int:
    """The motion stream's --stack-length among the flags passed on to it (default 10)."""
    for i, flag in enumerate(training_flags):
        if flag == "--stack-length" and i + 1 < len(training_flags) and training_flags[i + 1].isdecimal():
            return int(training_flags[i + 1])
        if flag.startswith("--stack-length=") and flag.split("=", 1)[1].isdecimal():
            return int(flag.split("=", 1)[1])
    return 10


def drop_short_videos(split_dir: Path, frames_dir: Path, min_frames: int, extra: int = 0) -> None:
    """Take the videos with fewer than ``min_frames`` frames out of the split lists the pipeline
    made (a stack of L flow frames needs L + 1 frames), with a warning naming them. Frames are
    counted in ``frames_dir``'s folder of each video, plus ``extra`` (1 for flow x folders: n
    frames give n - 1 flow frames)."""
    def frames_of(line: str) -> int:
        folder = frames_dir / Path(line.split()[0]).stem
        return sum(1 for name in os.listdir(folder) if name.endswith(".jpg")) + extra if folder.is_dir() else 0
    dropped = set()
    for lists in sorted(split_dir.glob("t*list*.txt")):
        lines = lists.read_text().splitlines()
        kept = [line for line in lines if not line.strip() or frames_of(line) >= min_frames]
        if len(kept) != len(lines):
            dropped |= {Path(line.split()[0]).stem for line in set(lines) - set(kept)}
            with atomic_write(lists, "w") as out:
                out.write("".join(f"{line}\n" for line in kept))
    if dropped:
        names = sorted(dropped)
        print(f"warning: {len(names)} videos have fewer than {min_frames} frames, too short for a stack of "
              f"{min_frames - 1} flow frames, and leave the split lists: {', '.join(names[:5])}"
              f"{' ...' if len(names) > 5 else ''}", file=sys.stderr, flush=True)


def files_fingerprint(paths: list[str | None]) -> str:
    """A hash of the given split files' (or a split folder's files') names, sizes and times."""
    stamps = []
    for item in filter(None, paths):
        path = Path(item)
        for file in sorted(path.iterdir()) if path.is_dir() else [path]:
            if file.is_file():
                info = file.stat()
                stamps.append([str(file), info.st_size, info.st_mtime_ns])
    return hashlib.sha256(json.dumps(stamps).encode()).hexdigest()


def lock_out_dir(out: Path):
    """Create OUT_DIR and hold its lock for the pipeline's lifetime: a second pipeline on the same
    folder is refused at once (its stages would write the same files)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        return hold_lock(out, ".pipeline.lock", "pipeline", "OUT_DIR")
    except OSError as err:
        raise UserError(f"cannot use {out} as OUT_DIR: {err.strerror}\n  fix: pass a folder you can write "
                        f"(it is created if missing)") from None


def split_flags(args: argparse.Namespace, split_dir: Path | None) -> list[str]:
    """The flags that name the split, for the training scripts and fusion."""
    flags = ["--split", str(args.split)]
    if split_dir is not None:
        flags += ["--split-dir", str(split_dir)]
    for name in ("split_format", "train_list", "test_list", "class_names"):
        value = getattr(args, name)
        if value:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    if args.allow_absolute_paths:
        flags.append("--allow-absolute-paths")
    return flags


PATH_OPTIONS = ("video_dir", "out_dir", "split_dir", "train_list", "test_list", "class_names")


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args, training_flags = parser.parse_known_args(argv)
    for name in PATH_OPTIONS:  # the stages may run from another folder: every path absolute first
        if getattr(args, name):
            setattr(args, name, Path(getattr(args, name)).absolute())
    check_io(parser, args)
    frame_size(args.size)
    if not args.video_dir.is_dir():
        raise UserError(f"video folder not found: {args.video_dir}")
    out = args.out_dir.resolve()
    if args.split_dir or args.train_list:  # a given split is read now: a bad list costs no frames
        load_split(args.split_dir or DEFAULT_SPLIT_DIR, args.split, args.split_format, args.train_list, args.test_list,
                   args.class_names, args.allow_absolute_paths)
    check_passed_flags(training_flags)
    streams = training_commands(args, training_flags, out, split_dir_of(args, out))
    parsed = check_training_flags(streams)  # a misspelled flag fails now, not after hours of frames and flow
    lock = lock_out_dir(out)
    try:
        from models import ensure_pretrained
        for stream_args in parsed:  # offline without the weights: now, not after the frames
            ensure_pretrained(stream_args.arch, stream_args.pretrained)
        return run_stages(args, training_flags, out, streams)
    finally:
        lock.close()


def split_dir_of(args: argparse.Namespace, out: Path) -> Path | None:
    """The split lists' folder: given, none (mmaction2 lists), or the one the pipeline makes."""
    return args.split_dir if args.split_dir else (None if args.train_list else out / "splits")


def training_commands(args: argparse.Namespace, training_flags: list[str], out: Path,
                      split_dir: Path | None) -> dict[str, list[str]]:
    """Each stream's training command (script and flags)."""
    workers = [] if args.workers is None else ["--workers", str(args.workers)]
    common = [*split_flags(args, split_dir), "--recipe", args.recipe, *workers, *training_flags]
    frames = (["--video-root", str(args.video_dir), "--frame-size", *map(str, args.size)] if args.no_frames
              else ["--data-root", str(out / "frames")])
    return {"spatial": ["spatial_cnn.py", *frames, "--output-dir", str(out / "spatial"), *common],
            "motion": ["motion_cnn.py", "--flow-root", str(out / "flow"), "--output-dir", str(out / "motion"),
                       *common]}


# what the pipeline itself gives each training script: passed on by a user, they would make both
# streams write one folder or read the other's data
PIPELINE_SETS = ("--output-dir", "--data-root", "--video-root", "--frame-size", "--flow-root", "--resume", "--evaluate",
                 "--overwrite", "--config")


def check_passed_flags(training_flags: list[str]) -> None:
    """Refuse, among the flags passed on to the training scripts, those the pipeline sets itself."""
    taken = sorted({flag.split("=", 1)[0] for flag in training_flags if flag.split("=", 1)[0] in PIPELINE_SETS})
    if taken:
        raise UserError(f"pipeline.py sets {', '.join(taken)} of each training script itself (OUT_DIR/spatial, "
                        f"OUT_DIR/frames, ...)\n  fix: drop {' '.join(taken)}; run spatial_cnn.py / motion_cnn.py "
                        f"yourself for another layout")


def check_training_flags(streams: dict[str, list[str]]) -> list[argparse.Namespace]:
    """Each training command parsed as its script will parse it (flags, their values, their
    bounds)."""
    import motion_cnn
    import spatial_cnn

    return [module.parse_args(streams[name][1:]) for name, module in (("spatial", spatial_cnn), ("motion", motion_cnn))]


def run_stages(args: argparse.Namespace, training_flags: list[str], out: Path, streams: dict[str, list[str]]) -> int:
    stage = Stage(out, args.restart)
    videos = video_stamps(args.video_dir, out / ".video-hashes.json")
    workers = [] if args.workers is None else ["--workers", str(args.workers)]

    # split lists: given, or made from the class folders
    given = args.split_dir or args.train_list
    split_dir = split_dir_of(args, out)
    if given:
        stage.skip("splits", f"given ({args.split_dir or args.train_list})")
        stage.previous = files_fingerprint([args.split_dir, args.train_list, args.test_list, args.class_names])
    else:
        extra = ["--group-pattern", args.group_pattern] if args.group_pattern else []
        stage.run("splits", ["tools/make_splits.py", str(args.video_dir), str(split_dir), "--test-fraction",
                             str(args.test_fraction), *extra], videos=videos, output=split_dir)
    size = ["--size", *map(str, args.size)]
    if args.no_frames:  # flow from the videos; the spatial stream reads them too
        stage.skip("frames", "--no-frames")
        stage.run("flow", ["tools/compute_flow.py", "--from-videos", str(args.video_dir), str(out / "flow"), *size,
                           "--method", args.flow_method, *workers], videos=videos, output=out / "flow")
        if not given:  # the lists were made from the videos: drop those too short for the motion stream
            drop_short_videos(split_dir, out / "flow" / "u", stack_length(training_flags) + 1, extra=1)
    else:
        stage.run("frames", ["tools/extract_frames.py", str(args.video_dir), str(out / "frames"), *size, *workers],
                  videos=videos, output=out / "frames")
        if not given:
            drop_short_videos(split_dir, out / "frames", stack_length(training_flags) + 1)
        stage.run("flow", ["tools/compute_flow.py", str(out / "frames"), str(out / "flow"), "--method",
                           args.flow_method, *workers], output=out / "flow")
    prepared, trained = stage.previous, []
    for name, command in streams.items():  # afresh when new or changed, else on from the checkpoint
        stage.previous = prepared  # each stream follows the preprocessing, not the other stream
        stage.run(name, command, output=out / name, training=True, fresh=["--overwrite"], resume=["--resume", "auto"])
        trained.append(stage.previous)
    stage.previous = hashlib.sha256("".join(trained).encode()).hexdigest()
    stage.run("evaluate", *[[*command, "--evaluate", "--resume", str(out / name / "model_best.pth.tar")]
                            for name, command in streams.items()])
    stage.run("fusion", ["average_fusion.py", "--spatial", str(out / "spatial" / "spatial_video_preds.pickle"),
                         "--motion", str(out / "motion" / "motion_video_preds.pickle"), *split_flags(args, split_dir),
                         "--json", str(out / "fusion.json"), "--confusion", str(out / "confusion.png")], always=True)
    report = json.loads((out / "fusion.json").read_text())
    print(f"\nresults in {out}: fusion top-1 {report['fusion']['top1']:.2f}% on {report['videos']} test videos")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_cli(main)
