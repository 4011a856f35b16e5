"""Contract tests: every command of the repository and every option of it goes through the
project's guarantees (guards.py, docs/reliability.md). The commands are found on disk, so a
new one that is not in COMMANDS fails here; their parsers are imported, so a new option that
skips a guarantee fails here too.

- every numeric option's type is an entry of guards.BOUNDS, and nan, inf, -inf, -1, 0 and huge
  values are refused with one usage message or accepted within that bound;
- every string option names a path marked as an input or an output, or is listed here as a
  value that names none;
- every output option set equal to each input option (and to each other output) is refused
  before any work, with every input left as it was;
- every list reader refuses entries that leave their root ('..', absolute, stem '..').
"""
from __future__ import annotations

import argparse
import ast
import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

import guards
from dataloader.video import VIDEO_EXTENSIONS
from guards import BOUNDS, INPUT, OUTPUT, Bound, path_options
from utils import UserError

ROOT = Path(__file__).resolve().parent.parent


def _stream_run(module: str) -> Callable[[list[str]], object]:
    def run(argv: list[str]) -> object:
        script = importlib.import_module(module)
        return script.main(script.parse_args(argv))
    return run


def _args_run(module: str) -> Callable[[list[str]], object]:
    def run(argv: list[str]) -> object:
        script = importlib.import_module(module)
        return script.main(script.get_args_parser().parse_args(argv))
    return run


def _argv_run(module: str) -> Callable[[list[str]], object]:
    return lambda argv: importlib.import_module(module).main(argv)


@dataclass
class Command:
    """A command of the repository: how to import its parser and run it on an argv, the flags
    it needs besides its paths, and its string options that name no path."""

    module: str
    run: Callable[[list[str]], object] | None = None  # None: it writes but reads nothing a user names
    needs: list[str] = field(default_factory=list)
    values: set[str] = field(default_factory=set)

    def parser(self) -> argparse.ArgumentParser:
        return importlib.import_module(self.module).get_args_parser()


TEMPLATES = {"--rgb-template", "--flow-x-template", "--flow-y-template"}  # checked by dataloader.index

# script path -> its contract; every file with a __main__ block must be here
COMMANDS: dict[str, Command] = {
    "spatial_cnn.py": Command("spatial_cnn", _stream_run("spatial_cnn"),
                              values=TEMPLATES | {"--logger", "--device"}),
    "motion_cnn.py": Command("motion_cnn", _stream_run("motion_cnn"), values=TEMPLATES | {"--logger", "--device"}),
    "average_fusion.py": Command("average_fusion", _args_run("average_fusion"),
                                values={"--stream"}),  # NAME=PATH: fuse() hands its paths to check_io
    "predict.py": Command("predict", _args_run("predict"), needs=["--window", "1"],
                          values={"--device", "--pace", "--live"}),  # --live: a camera, a URL or a file check_io reads
    "pipeline.py": Command("pipeline", _argv_run("pipeline"), values={"--group-pattern", "--flow-method"}),
    "demo.py": Command("demo", values={"--device", "--flow-method"}),
    "app.py": Command("app", values={"--device", "--host", "--title"}),  # serves; writes only its temp folder
    "dataloader/__main__.py": Command("dataloader.__main__", _argv_run("dataloader.__main__"), values=TEMPLATES),
    "tools/compute_flow.py": Command("tools.compute_flow", _args_run("tools.compute_flow"),
                                     values={"--device", "--shard"}),
    "tools/convert_weights.py": Command("tools.convert_weights", _args_run("tools.convert_weights")),
    "tools/export.py": Command("tools.export", _args_run("tools.export"), needs=["--format", "torchscript"]),
    "tools/extract_frames.py": Command("tools.extract_frames", _args_run("tools.extract_frames"), values={"--shard"}),
    "tools/make_demo_data.py": Command("tools.make_demo_data"),
    "tools/make_splits.py": Command("tools.make_splits", _args_run("tools.make_splits"), values={"--group-pattern"}),
    "tools/publish_model.py": Command("tools.publish_model", _args_run("tools.publish_model"), values={"--name"}),
    "benchmarks/bench_disk.py": Command("benchmarks.bench_disk", values={"--flow-method"}),  # writes a scratch folder
    "benchmarks/bench_export.py": Command("benchmarks.bench_export"),
    "benchmarks/bench_live.py": Command("benchmarks.bench_live"),
    "benchmarks/bench_flow.py": Command("benchmarks.bench_flow"),
    "benchmarks/bench_loader.py": Command("benchmarks.bench_loader"),
    "benchmarks/bench_predict.py": Command("benchmarks.bench_predict", values={"--device", "--arch", "--flow-method"}),
    "benchmarks/bench_train.py": Command("benchmarks.bench_train", values={"--device", "--arch", "--streams"}),
    "benchmarks/gpu_report.py": Command("benchmarks.gpu_report"),
}


def test_every_command_is_in_the_contract_table():
    found = set()
    for pattern in ("*.py", "tools/*.py", "benchmarks/*.py", "dataloader/*.py", "engine/*.py", "inference/*.py",
                    "models/*.py", "flow/*.py"):
        for path in ROOT.glob(pattern):
            if "__main__" in path.read_text() and "__name__ ==" in path.read_text():
                found.add(path.relative_to(ROOT).as_posix())
    found.add("dataloader/__main__.py")
    assert found == set(COMMANDS), f"commands not in the contract table: {sorted(found - set(COMMANDS))}; " \
                                   f"listed but gone: {sorted(set(COMMANDS) - found)}"


def _options(command: Command) -> list[argparse.Action]:
    return [a for a in command.parser()._actions if not isinstance(a, argparse._HelpAction)]


def _numeric_options() -> list[tuple[str, str]]:
    return [(script, a.option_strings[-1] if a.option_strings else a.dest)
            for script, command in COMMANDS.items() for a in _options(command)
            if isinstance(a.type, Bound) or a.type in (int, float)]


def _action(script: str, name: str) -> argparse.Action:
    return next(a for a in _options(COMMANDS[script]) if name in (a.dest, *a.option_strings))


@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_every_numeric_option_is_bounded_by_the_one_table(script):
    for action in _options(COMMANDS[script]):
        if action.type in (int, float):
            pytest.fail(f"{script} {action.option_strings}: type={action.type.__name__} is unbounded; use "
                        f"type=guards.bound(NAME) with an entry of guards.BOUNDS")
        if isinstance(action.type, Bound):
            assert any(action.type is bound for bound in BOUNDS.values()), f"{script} {action.option_strings}"
            assert action.type.high < float("inf")


@pytest.mark.parametrize("script,flag", _numeric_options())
def test_every_number_is_refused_or_within_its_bound(script, flag, capsys):
    action = _action(script, flag)
    count = action.nargs if isinstance(action.nargs, int) else 1
    for text in ("nan", "inf", "-inf", "-1", "0", "1e30", "99999999999999999999", "1.5", "x"):
        parser = COMMANDS[script].parser()
        argv = [flag, *[text] * count] if action.option_strings else [*[text] * count]
        argv += ["placeholder" for a in parser._actions if not a.option_strings and a is not action and a.nargs != 0]
        if not action.option_strings:  # a numeric positional: the placeholders of the others come first
            argv = argv[count:] + argv[:count]
        try:
            args, _ = parser.parse_known_args(argv)
        except SystemExit as stop:
            assert stop.code == 2
            error = capsys.readouterr().err
            assert f"argument {flag}" in error and "Traceback" not in error, error
            continue
        values = getattr(args, action.dest)
        for value in values if isinstance(values, list) else [values]:
            assert action.type.problem(value) is None, (script, flag, text, value)


@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_every_string_option_is_a_marked_path_or_a_known_value(script):
    command = COMMANDS[script]
    for action in _options(command):
        if action.nargs == 0 or action.choices or isinstance(action.type, Bound) or callable(action.type) \
                and action.type not in (str, Path):
            continue
        name = action.option_strings[-1] if action.option_strings else action.dest
        role = getattr(action, "role", None)
        assert role in (INPUT, OUTPUT) or name in command.values, \
            f"{script} {name}: mark it with guards.add_path(role=INPUT/OUTPUT) or list it in COMMANDS' values"
        assert not (role and name in command.values), f"{script} {name} is both"


# --- outputs never inputs ------------------------------------------------------------------------------

def _layout(tmp: Path, parser: argparse.ArgumentParser) -> dict[str, Path]:
    """A distinct existing file or folder for every path option, with some content."""
    paths = {}
    for action in [*path_options(parser, INPUT), *path_options(parser, OUTPUT)]:
        path = tmp / f"{action.role}_{action.dest}"
        if action.folder:
            path.mkdir()
            (path / "inside.txt").write_text("kept")
        else:
            path.write_bytes(b"an input that must stay as it is")
        paths[action.dest] = path
    return paths


def _argv(parser: argparse.ArgumentParser, paths: dict[str, Path], needs: list[str]) -> list[str]:
    argv = []
    for action in [*path_options(parser, INPUT), *path_options(parser, OUTPUT)]:
        value = str(paths[action.dest])
        argv += [value] if not action.option_strings else [action.option_strings[-1], value]
    return [*argv, *needs]


def _snapshot(tmp: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(tmp)): (p.read_bytes() if p.is_file() else None) for p in sorted(tmp.rglob("*"))}


def _pairs() -> list[tuple[str, str, str]]:
    pairs = []
    for script, command in COMMANDS.items():
        parser = command.parser()
        outputs = path_options(parser, OUTPUT)
        for output in outputs:
            for other in [*path_options(parser, INPUT), *outputs]:
                if other is not output and command.run is not None:
                    pairs.append((script, output.dest, other.dest))
    return pairs


@pytest.mark.parametrize("script,output,target", _pairs())
def test_an_output_equal_to_an_input_or_another_output_is_refused_before_any_work(script, output, target, tmp_path,
                                                                                  monkeypatch):
    command = COMMANDS[script]
    parser = command.parser()
    paths = _layout(tmp_path, parser)
    paths[output] = paths[target]
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(UserError, match="would replace it"):
        command.run(_argv(parser, paths, command.needs))
    assert _snapshot(tmp_path) == before


def test_every_command_that_reads_and_writes_is_checked():
    """The pairs above cover every command with both inputs and outputs (a table entry without
    ``run`` would skip it)."""
    for script, command in COMMANDS.items():
        parser = command.parser()
        if path_options(parser, INPUT) and path_options(parser, OUTPUT):
            assert command.run is not None, script


def test_an_output_inside_an_input_folder_among_the_files_it_reads_is_refused(tmp_path, monkeypatch):
    """A JSON summary written over a split list inside --split-dir, a per-class table over
    classInd.txt, a video folder receiving annotated videos it would read next time."""
    import average_fusion
    import dataloader.__main__ as summary
    import predict

    split = tmp_path / "split"
    split.mkdir()
    for name in ("classInd.txt", "trainlist01.txt", "testlist01.txt"):
        (split / name).write_text("1 A\n" if name == "classInd.txt" else "")
    before = _snapshot(tmp_path)
    with pytest.raises(UserError, match="is a file of --split-dir"):
        summary.main(["--data-root", str(tmp_path), "--split-dir", str(split), "--json", str(split / "testlist01.txt")])
    with pytest.raises(UserError, match="is a file of --split-dir"):
        average_fusion.main(average_fusion.get_args_parser().parse_args(
            ["--split-dir", str(split), "--per-class", str(split / "classInd.txt")]))
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.avi", "b.mp4"):
        (videos / name).write_bytes(b"video")
    (tmp_path / "s.pth").write_bytes(b"checkpoint")
    with pytest.raises(UserError, match="is a file of the videos"):
        predict.main(predict.get_args_parser().parse_args(
            [str(videos), "--spatial", str(tmp_path / "s.pth"), "--annotate", str(videos / "annotated")]))
    assert _snapshot(tmp_path) == before | {"videos": None, "videos/a.avi": b"video", "videos/b.mp4": b"video",
                                            "s.pth": b"checkpoint"}


def test_the_video_suffixes_of_the_guard_are_the_readers():
    assert guards.VIDEO_FILES == tuple(f"*{suffix}" for suffix in VIDEO_EXTENSIONS)


def test_a_url_input_is_its_cache_file(tmp_path, monkeypatch):
    """convert_weights.py URL OUT (and predict.py --spatial URL --json X) with OUT the file the
    URL is cached as would replace the cached model."""
    import torch

    from models.zoo import cached_file_of_url
    from tools import convert_weights
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    url = "https://example.org/models/spatial-resnet18-reference-1a2b3c4d.pth"
    cached = cached_file_of_url(url)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"the cached model")
    with pytest.raises(UserError, match="is SRC https://example.org"):
        convert_weights.main(convert_weights.get_args_parser().parse_args([url, str(cached)]))
    assert cached.read_bytes() == b"the cached model"


def test_two_videos_with_one_stem_never_write_one_plot(tmp_path):
    import predict
    for name in ("a.mp4", "a.avi"):
        (tmp_path / name).write_bytes(b"video")
    (tmp_path / "s.pth").write_bytes(b"checkpoint")
    with pytest.raises(UserError, match="a_timeline.png is --plot for a.(avi|mp4)"):
        predict.main(predict.get_args_parser().parse_args(
            [str(tmp_path / "a.mp4"), str(tmp_path / "a.avi"), "--spatial", str(tmp_path / "s.pth"), "--window", "1",
             "--plot", str(tmp_path / "plots")]))
    assert not (tmp_path / "plots").exists()


# --- inside the root -------------------------------------------------------------------------------------

HOSTILE = {"parent": "../../outside/v_x.avi", "absolute": "/etc/v_x.avi", "dots": "RedDown/...",
           "dot stem": "RedDown/..avi", "inner parent": "RedDown/../../v_x.avi",
           "backslash parent": "RedDown\\..\\v.avi"}


def _ucf101(folder: Path, entry: str) -> None:
    folder.mkdir()
    (folder / "classInd.txt").write_text("1 RedDown\n")
    (folder / "trainlist01.txt").write_text("RedDown/v_RedDown_g01_c01.avi 1\n")
    (folder / "testlist01.txt").write_text(f"RedDown/v_RedDown_g02_c01.avi\n{entry}\n")


def _hmdb51(folder: Path, entry: str) -> None:
    folder.mkdir()
    (folder / "RedDown_test_split1.txt").write_text(f"v_a.avi 1\n{entry} 2\n")


@pytest.mark.parametrize("entry", sorted(HOSTILE))
@pytest.mark.parametrize("fmt", ["ucf101", "hmdb51", "mmaction-videos", "mmaction-rawframes"])
def test_every_list_reader_refuses_entries_outside_the_root_naming_the_line(tmp_path, fmt, entry):
    from dataloader.splits import SplitError, load_split
    item = HOSTILE[entry]
    if fmt == "mmaction-rawframes" and entry in ("dots", "dot stem"):
        pytest.skip("a rawframe list names folders: '...' and '..avi' are folder names inside the root")
    if fmt == "ucf101":
        _ucf101(tmp_path / "split", item)
        kwargs = {"split_dir": tmp_path / "split"}
        where = "testlist01.txt:2"
    elif fmt == "hmdb51":
        _hmdb51(tmp_path / "split", item)
        kwargs = {"split_dir": tmp_path / "split"}
        where = "RedDown_test_split1.txt:2"
    else:
        rawframes = fmt.endswith("rawframes")
        line = f"{item} 30 0" if rawframes else f"{item} 0"
        (tmp_path / "train.txt").write_text(("RedDown/v_a 30 0" if rawframes else "RedDown/v_a.avi 0") + "\n")
        (tmp_path / "test.txt").write_text(("RedDown/v_b 30 0" if rawframes else "RedDown/v_b.avi 0") + f"\n{line}\n")
        kwargs = {"train_list": tmp_path / "train.txt", "test_list": tmp_path / "test.txt"}
        where = "test.txt:2"
    with pytest.raises(SplitError, match=f"{where}: "):
        load_split(**kwargs)


@pytest.mark.parametrize("entry", sorted(HOSTILE))
@pytest.mark.parametrize("fmt", ["ucf101", "hmdb51", "mmaction"])
def test_extract_frames_list_refuses_entries_outside_the_video_folder(tmp_path, fmt, entry):
    from tools import extract_frames
    videos, out = tmp_path / "videos", tmp_path / "frames"
    videos.mkdir()
    name = "RedDown_test_split1.txt" if fmt == "hmdb51" else "list.txt"
    line = {"ucf101": HOSTILE[entry], "hmdb51": f"{HOSTILE[entry]} 2", "mmaction": f"{HOSTILE[entry]} 0"}[fmt]
    (tmp_path / name).write_text(line + "\n")
    with pytest.raises(UserError, match=f"{name}:1: "):
        extract_frames.main(extract_frames.get_args_parser().parse_args(
            [str(videos), str(out), "--list", str(tmp_path / name), "--split-format", fmt]))
    assert not out.exists()


@pytest.mark.parametrize("name", ["..", ".", ""])
def test_class_names_that_are_not_plain_are_refused(tmp_path, name):
    from dataloader.splits import SplitError, read_class_index
    (tmp_path / "classInd.txt").write_text(f"1 A\n2 {name or '/'}\n")
    with pytest.raises(SplitError, match="classInd.txt:2: "):
        read_class_index(tmp_path / "classInd.txt")


def test_frame_templates_stay_under_their_root():
    from dataloader.index import resolve_layout
    for template in ("../{video}/frame{idx:06d}.jpg", "/tmp/{video}/frame{idx:06d}.jpg"):
        with pytest.raises(UserError, match="leaves the data root"):
            resolve_layout("ucf101", rgb=template)


# --- writes that cannot collide -------------------------------------------------------------------------

# the only places a file is renamed into place: the atomic write itself, a claimed video's partial
# folder (one writer a video, under its lock), and the pipeline keeping earlier output aside
RENAMES = {("utils.py", "atomic_path"), ("tools/jobs.py", "finish_partial"), ("pipeline.py", "_move_aside")}


def _library_files() -> list[Path]:
    return [p for pattern in ("*.py", "*/*.py") for p in ROOT.glob(pattern)
            if not p.relative_to(ROOT).as_posix().startswith(("tests/", ".venv"))]


def test_files_are_renamed_into_place_only_by_the_atomic_patterns():
    """A fixed scratch name (``.NAME.publishing``) renamed over its target lets two processes
    share it; every rename goes through utils.atomic_path's unique names instead."""
    found = set()
    for path in _library_files():
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in ("replace", "rename", "move") \
                        and isinstance(node.func.value, ast.Name) and node.func.value.id in ("os", "shutil"):
                    found.add((path.relative_to(ROOT).as_posix(), function.name))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "rename":
                    found.add((path.relative_to(ROOT).as_posix(), function.name))
    assert found == RENAMES


def test_concurrent_publishing_under_one_name_keeps_each_file_true_to_its_hash(tmp_path):
    """Two publish_model.py runs with one --name at once: each file is named by its own hash."""
    import subprocess

    import torch

    from models import build_model
    from utils import sha256_of
    ckpts = []
    for stream, channels in (("spatial", 3), ("motion", 20)):
        path = tmp_path / f"{stream}.pth.tar"
        torch.save({"format": "two-stream-checkpoint/1", "stream": stream, "arch": "resnet18", "num_classes": 3,
                    "in_channels": channels, "class_names": ["a", "b", "c"],
                    "args": {"arch": "resnet18", "stack_length": 10},
                    "model": build_model("resnet18", 3, channels, "none").state_dict()}, path)
        ckpts.append(path)
    out = tmp_path / "out"
    runs = [subprocess.Popen([sys.executable, "tools/publish_model.py", str(c), "--out-dir", str(out),
                              "--name", "same"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in ckpts]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    files = sorted(out.glob("same-*.pth"))
    assert len(files) == 2
    for file in files:
        assert sha256_of(file).startswith(file.stem.rsplit("-", 1)[1])
    assert sorted(torch.load(f, weights_only=True)["stream"] for f in files) == ["motion", "spatial"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_library_options_pass_the_flags_bounds(tmp_path):
    """predict.Predictor (and torch.hub's two_stream) take predict.py's flags as keyword
    arguments: the same bounds hold."""
    import predict
    (tmp_path / "s.pth").write_bytes(b"checkpoint")
    for options in ({"bound": float("nan")}, {"topk": 0}, {"window": float("inf")}, {"jpeg_quality": 1000}):
        with pytest.raises(UserError, match=f"{next(iter(options))} .* is not|{next(iter(options))} .* not finite"):
            predict.Predictor(spatial=str(tmp_path / "s.pth"), **options)


@pytest.mark.parametrize("script,argv", [
    ("tools/extract_frames.py", ["V", "O", "--size", "0", "340"]),
    ("predict.py", ["v.mp4", "--spatial", "s.pth", "--size", "4", "4"]),
    ("tools/make_demo_data.py", ["O", "--size", "0", "0"]),
])
def test_a_frame_size_with_one_zero_or_tiny_sides_is_one_message(script, argv):
    from guards import frame_size
    args = COMMANDS[script].parser().parse_args(argv)
    with pytest.raises(UserError, match="--size .*: both sides must be at least 8 pixels"):
        frame_size(args.size, keep=script != "tools/make_demo_data.py")


@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_help_explains_every_option_and_shows_each_default_once(script):
    from utils import HelpFormatter
    parser = COMMANDS[script].parser()
    assert parser.formatter_class is HelpFormatter, script
    formatter = parser._get_formatter()
    for action in _options(COMMANDS[script]):
        name = action.option_strings[-1] if action.option_strings else action.dest
        assert action.help, f"{script} {name} has no help text"
        text = formatter._get_help_string(action)
        assert text.count("default") <= 1, f"{script} {name}: {text}"
    parser.format_help()  # every help string formats


def test_the_streams_help_lists_what_each_recipe_sets():
    import motion_cnn
    import spatial_cnn
    for script in (spatial_cnn, motion_cnn):
        text = " ".join(script.get_args_parser().format_help().split())
        assert "tsn sets --train-crop multiscale" in text and "--lr-groups tsn" in text
    text = " ".join(spatial_cnn.get_args_parser().format_help().split())
    assert "--epochs EPOCHS epochs to train (default: 50)" in text
