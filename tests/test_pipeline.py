"""pipeline.py: a folder of class folders of videos to a fusion table, and its resume."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.make_demo_data import make_demo_data

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["--arch", "resnet18", "--pretrained", "none", "--input-size", "40", "--batch-size", "4", "--lr", "0.01",
         "--lr-scheduler", "cosine", "--epochs", "4", "--test-frames", "3", "--device", "cpu"]


def pipeline(videos: Path | str, out: Path | str, *extra: str, cwd: Path = ROOT, **popen) -> subprocess.Popen:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, str(ROOT / "pipeline.py"), str(videos), str(out), "--size", "48", "64",
                             "--flow-method", "farneback", "--workers", "1", "--test-fraction", "0.34", *TRAIN, *extra],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)


def readme_own_videos_command() -> list[str]:
    """The README's first 'Your own videos' command, as a user copies it."""
    import shlex
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Your own videos", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return shlex.split(block.strip().splitlines()[0].split("#", 1)[0])


@pytest.mark.slow
def test_pipeline_runs_to_a_fusion_table_and_resumes_after_a_kill(tmp_path):
    """A new user's walk: the README's own-videos command as written (relative paths, from their
    own folder; tiny models and sizes appended) on class folders of generated videos, killed
    during the motion training and run again."""
    command = readme_own_videos_command()
    assert command[:4] == ["python", "pipeline.py", "my_videos/", "runs/mine"]
    make_demo_data(tmp_path / "data", seed=2, frames=16, videos_per_class=3)  # class folders of videos
    shutil.move(tmp_path / "data" / "videos", tmp_path / "my_videos")
    out = tmp_path / "runs" / "mine"

    def pipeline_here():
        return pipeline(command[2], command[3], *command[4:], cwd=tmp_path)
    first = pipeline_here()
    checkpoint = out / "motion" / "checkpoint.pth.tar"
    deadline = time.time() + 240
    while not checkpoint.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()[0][-3000:]  # still in the motion training
    os.killpg(first.pid, signal.SIGKILL)  # the whole process tree, mid-epoch: no graceful checkpoint
    first.wait()
    assert not (out / "fusion.json").exists()

    second = pipeline_here()
    log, _ = second.communicate(timeout=300)
    assert second.returncode == 0, log[-3000:]
    for stage in ("splits", "frames", "flow", "spatial"):
        assert f"{stage}: done in an earlier run, skipped" in log
    assert "resumed from" in log and str(checkpoint) in log  # the motion training went on from its checkpoint
    rows = (out / "motion" / "train.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3", "4"]  # each epoch once
    assert "fusion" in log and (out / "fusion.json").exists() and (out / "splits" / "classInd.txt").exists()

    third = pipeline_here()  # everything done: only the fusion table again
    log, _ = third.communicate(timeout=120)
    assert third.returncode == 0 and "motion: done in an earlier run, skipped" in log and "fusion top-1" in log


def run_to_end(videos: Path, out: Path, *extra: str) -> str:
    proc = pipeline(videos, out, *extra)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log[-3000:]
    return log


@pytest.mark.slow
def test_a_rerun_redoes_what_changed_and_says_why(tmp_path):
    make_demo_data(tmp_path / "data", seed=2, frames=12, videos_per_class=3)
    videos, out = tmp_path / "data" / "videos", tmp_path / "out"
    run_to_end(videos, out, "--epochs", "1")
    # a video added and one removed: splits, frames (only the new one is extracted) and everything after
    make_demo_data(tmp_path / "more", seed=5, frames=12, videos_per_class=1)
    new = next((tmp_path / "more" / "videos" / "RedUp").glob("*.avi"))
    shutil.copy(new, videos / "RedUp" / "v_RedUp_g09_c01.avi")
    gone = sorted((videos / "GreenDown").glob("*.avi"))[0]
    gone.unlink()
    log = run_to_end(videos, out, "--epochs", "1")
    assert "splits (again: the videos changed (1 added, 1 removed, 0 replaced))" in log
    assert "frames (again: the videos changed" in log and "spatial (again: an earlier stage was redone)" in log
    lists = (out / "splits" / "trainlist01.txt").read_text() + (out / "splits" / "testlist01.txt").read_text()
    assert "v_RedUp_g09_c01" in lists and gone.stem not in lists  # the removed one leaves the results
    spatial = log.split("== [4/7] spatial")[1]
    command = next(line for line in spatial.splitlines() if line.startswith("$ "))
    assert "--overwrite" in command  # trained afresh, not resumed ...
    assert "kept as" in spatial and (out / "spatial.replaced-1" / "checkpoint.pth.tar").is_file()  # ... beside the old
    # nothing changed, every stage skipped: test_pipeline_runs_to_a_fusion_table_and_resumes_after_a_kill;
    # more epochs resume both streams: test_more_epochs_resume_both_streams_and_leave_the_preprocessing


def test_a_second_pipeline_on_one_out_dir_is_refused_at_once(tmp_path):
    import pipeline as pipeline_module
    from utils import UserError
    (tmp_path / "videos" / "A").mkdir(parents=True)
    lock = pipeline_module.lock_out_dir(tmp_path / "out")
    try:
        with pytest.raises(UserError, match=f"in use by another pipeline \\(pid {os.getpid()}"):
            pipeline_module.main([str(tmp_path / "videos"), str(tmp_path / "out"), "--pretrained", "none"])
    finally:
        lock.close()
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot use .*file/out as OUT_DIR"):
        pipeline_module.main([str(tmp_path / "videos"), str(tmp_path / "file" / "out")])


def test_stages_inside_a_slurm_array_task_do_every_video(monkeypatch):
    import pipeline as pipeline_module
    from tools.jobs import resolve_shard
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert resolve_shard(None) == (1, 4)  # what a stage would do with the task's environment
    assert resolve_shard(None, pipeline_module.child_environment()) == (0, 1)


@pytest.mark.slow
def test_videos_too_short_for_flow_leave_the_lists_with_a_warning(tmp_path):
    import numpy as np
    from tools.make_demo_data import render_video, write_video
    make_demo_data(tmp_path / "data", seed=2, frames=12, videos_per_class=3)
    videos = tmp_path / "data" / "videos"
    rng = np.random.default_rng(0)
    write_video(videos / "RedUp" / "v_RedUp_g07_c01.avi", render_video((230, 80, 60), -1, 1, (48, 64), rng))
    write_video(videos / "RedUp" / "v_RedUp_g08_c01.avi", render_video((230, 80, 60), -1, 6, (48, 64), rng))
    log = run_to_end(videos, tmp_path / "out", "--epochs", "1")
    assert "1 videos have a single frame, too short for flow, and are skipped: v_RedUp_g07_c01" in log
    assert "2 videos have fewer than 11 frames" in log and "v_RedUp_g07_c01, v_RedUp_g08_c01" in log
    lists = "".join(p.read_text() for p in (tmp_path / "out" / "splits").glob("t*list01.txt"))
    assert "v_RedUp_g07" not in lists and "v_RedUp_g08" not in lists and "v_RedUp_g01" in lists


def test_a_change_at_any_stage_redoes_it_and_every_stage_after_it(tmp_path, capsys, monkeypatch):
    """Stage fingerprints, with commands that only record that they ran: for each stage, a
    changed command (a flag) redoes that stage and the ones after it, and only those; a changed
    video redoes the stages that read the videos and everything after them."""
    import pipeline as pipeline_module
    ran = []
    monkeypatch.setattr(pipeline_module.Stage, "_call", staticmethod(lambda name, command: ran.append(name)))
    names = pipeline_module.STAGES

    def run_all(flags: dict[str, str], videos: dict) -> list[str]:
        ran.clear()
        stage = pipeline_module.Stage(tmp_path, restart=False)
        for name in names:
            reads_videos = name in ("splits", "frames")
            stage.run(name, ["x.py", flags.get(name, "")], videos=videos if reads_videos else None)
        return list(ran)

    videos = {"A/v_a.avi": [10, 1], "B/v_b.avi": [20, 2]}
    assert run_all({}, videos) == list(names)
    assert run_all({}, videos) == []  # nothing changed: every stage skipped
    flags: dict[str, str] = {}
    for i, name in enumerate(names):
        flags[name] = f"--changed-{i}"  # the earlier stages keep their (already changed) flags
        assert run_all(flags, videos) == list(names[i:]), name
        assert f"{name} (again: its flags changed)" in capsys.readouterr().out
    assert run_all(flags, {**videos, "A/v_a.avi": [11, 3]}) == list(names)  # a replaced video
    assert "(0 added, 0 removed, 1 replaced)" in capsys.readouterr().out


def test_a_killed_pipeline_leaves_no_stage_running(tmp_path):
    """SIGKILL of pipeline.py itself (not its process group): its running stage gets SIGTERM
    (PR_SET_PDEATHSIG) and stops as on Ctrl-C, instead of running on beside a rerun."""
    marker = tmp_path / "child"
    child_code = (f"import os, pathlib, signal, sys, time\n"
                  f"p = pathlib.Path({str(marker)!r})\n"
                  f"signal.signal(signal.SIGTERM, lambda *a: (p.write_text('stopped'), sys.exit(143)))\n"
                  f"p.write_text(str(os.getpid()))\n"
                  f"time.sleep(60)\n")
    parent_code = f"from pipeline import Stage\nStage._call('stage', ['-c', {child_code!r}])\n"
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=ROOT)
    deadline = time.time() + 30
    while not (marker.exists() and marker.read_text().isdecimal()) and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the stage never started"
    parent.kill()  # SIGKILL: no handler of the pipeline's runs
    parent.wait()
    deadline = time.time() + 10
    while marker.read_text() != "stopped" and time.time() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "stopped"


# --- what a rerun redoes: output, not speed; earlier output kept, never overwritten ------------------

def _recording_stage(monkeypatch, tmp_path):
    import pipeline as pipeline_module
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(pipeline_module.Stage, "_call",
                        staticmethod(lambda name, command: calls.append((name, command))))
    return pipeline_module, calls


def test_speed_flags_never_redo_a_stage(tmp_path, monkeypatch):
    pipeline_module, calls = _recording_stage(monkeypatch, tmp_path)
    for flags in (["--workers", "2", "--device", "cpu", "--batch", "8"],
                  ["--workers", "7", "--device", "cuda", "--batch=64", "--compile"]):
        stage = pipeline_module.Stage(tmp_path, restart=False)
        stage.run("flow", ["tools/compute_flow.py", "F", "O", "--method", "tvl1", *flags], output=tmp_path / "flow")
    assert [name for name, _ in calls] == ["flow"]  # the second run skipped it
    stage = pipeline_module.Stage(tmp_path, restart=False)
    stage.run("flow", ["tools/compute_flow.py", "F", "O", "--method", "farneback"], output=tmp_path / "flow")
    assert [name for name, _ in calls] == ["flow", "flow"]  # --method shapes the flow


def test_a_training_stage_goes_on_for_more_epochs_and_keeps_what_other_flags_would_replace(tmp_path, monkeypatch,
                                                                                           capsys):
    pipeline_module, calls = _recording_stage(monkeypatch, tmp_path)
    run_dir = tmp_path / "spatial"

    def train(*flags: str) -> list[str]:
        calls.clear()
        stage = pipeline_module.Stage(tmp_path, restart=False)
        stage.run("spatial", ["spatial_cnn.py", "--output-dir", str(run_dir), *flags], output=run_dir, training=True,
                  fresh=["--overwrite"], resume=["--resume", "auto"])
        run_dir.mkdir(exist_ok=True)
        (run_dir / "checkpoint.pth.tar").write_text(" ".join(flags))  # what this 'training' made
        return calls[0][1] if calls else []

    assert train("--epochs", "2", "--lr", "0.1")[-1] == "--overwrite"
    assert train("--epochs", "2", "--lr", "0.1", "--workers", "4") == []  # a speed flag: nothing to redo
    assert train("--epochs", "4", "--lr", "0.1")[-2:] == ["--resume", "auto"]  # more epochs: on from the checkpoint
    assert "(again: --epochs changed)" in capsys.readouterr().out
    assert not (tmp_path / "spatial.replaced-1").exists()
    assert train("--epochs", "4", "--lr", "0.2")[-1] == "--overwrite"  # another lr: a new run ...
    assert (tmp_path / "spatial.replaced-1" / "checkpoint.pth.tar").read_text() == "--epochs 4 --lr 0.1"  # ... beside
    assert "kept as" in capsys.readouterr().out


def test_an_interrupted_stage_goes_on_even_after_a_speed_flag_changed(tmp_path, monkeypatch):
    pipeline_module, calls = _recording_stage(monkeypatch, tmp_path)

    def interrupted(name, command):
        raise KeyboardInterrupt
    stage = pipeline_module.Stage(tmp_path, restart=False)
    monkeypatch.setattr(pipeline_module.Stage, "_call", staticmethod(interrupted))
    with pytest.raises(KeyboardInterrupt):
        stage.run("spatial", ["spatial_cnn.py", "--epochs", "3", "--workers", "8"], output=tmp_path / "spatial",
                  training=True, fresh=["--overwrite"], resume=["--resume", "auto"])
    monkeypatch.setattr(pipeline_module.Stage, "_call", staticmethod(lambda name, command: calls.append(command)))
    stage = pipeline_module.Stage(tmp_path, restart=False)
    stage.run("spatial", ["spatial_cnn.py", "--epochs", "3", "--workers", "2"], output=tmp_path / "spatial",
              training=True, fresh=["--overwrite"], resume=["--resume", "auto"])
    assert calls[0][-2:] == ["--resume", "auto"]


def test_a_marker_from_before_fingerprints_runs_its_stage_again(tmp_path, monkeypatch):
    """An old pipeline's empty marker says nothing of the videos it saw: the stage runs again
    (its tools redo only what is missing), so an added video is not hidden."""
    pipeline_module, calls = _recording_stage(monkeypatch, tmp_path)
    (tmp_path / ".stage-frames.done").write_text("")
    stage = pipeline_module.Stage(tmp_path, restart=False)
    stage.run("frames", ["tools/extract_frames.py", "V", "F"], videos={"A/new.avi": [1, "x"]}, output=tmp_path / "f")
    assert calls and calls[0][1][-1] == "F"
    # the previous version's fingerprints (speed flags in, videos by time): gone on with, nothing moved aside
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "frame").write_text("finished")
    (tmp_path / ".stage-frames.done").write_text('{"hash": "x", "parts": {"commands": [["--workers", "2"]]}}')
    calls.clear()
    stage = pipeline_module.Stage(tmp_path, restart=False)
    stage.run("frames", ["tools/extract_frames.py", "V", "F"], videos={"A/new.avi": [1, "x"]}, output=tmp_path / "f")
    assert calls and (tmp_path / "f" / "frame").exists() and not (tmp_path / "f.replaced-1").exists()


def test_touching_a_video_changes_nothing_but_new_content_does(tmp_path):
    import pipeline as pipeline_module
    videos = tmp_path / "videos" / "A"
    videos.mkdir(parents=True)
    (videos / "v.avi").write_bytes(b"0123456789")
    cache = tmp_path / "hashes.json"
    first = pipeline_module.video_stamps(tmp_path / "videos", cache)
    os.utime(videos / "v.avi", ns=(1, 10**18))
    assert pipeline_module.video_stamps(tmp_path / "videos", cache) == first
    (videos / "v.avi").write_bytes(b"9876543210")  # same size, other content
    assert pipeline_module.video_stamps(tmp_path / "videos", cache) != first


def test_one_ctrl_c_reaches_a_stage_once(tmp_path):
    """The terminal sends SIGINT to the foreground process group; the stage runs in its own
    group, so it gets the signal once, from the pipeline, not twice (a second SIGINT ends a
    training script's graceful stop with a KeyboardInterrupt traceback)."""
    counts = tmp_path / "count"
    child_code = (f"import os, pathlib, signal, time\n"
                  f"n = []\n"
                  f"signal.signal(signal.SIGINT, lambda *a: n.append(1))\n"
                  f"pathlib.Path({str(counts)!r} + '.ready').write_text('')\n"
                  f"end = time.time() + 1.5\n"
                  f"while time.time() < end: time.sleep(0.02)\n"
                  f"pathlib.Path({str(counts)!r}).write_text(f'{{len(n)}} {{os.getpgid(0)}}')\n")
    parent_code = f"from pipeline import Stage\nStage._call('stage', ['-c', {child_code!r}])\n"
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=ROOT, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not Path(str(counts) + ".ready").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(parent.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    parent.wait(timeout=30)
    received, group = counts.read_text().split()
    assert received == "1"  # passed on by the pipeline ...
    assert int(group) != parent.pid  # ... and not also from the terminal (two at once can merge into one)


def test_pipeline_refuses_a_misspelled_training_flag_before_any_stage(tmp_path):
    make_demo_data(tmp_path / "data", seed=2, frames=4, videos_per_class=2)
    proc = subprocess.run([sys.executable, "pipeline.py", str(tmp_path / "data" / "videos"), str(tmp_path / "out"),
                           "--batchsize", "8"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unrecognized arguments: --batchsize 8" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_pipeline_runs_from_another_folder_with_relative_paths(tmp_path):
    """Relative VIDEO_DIR, OUT_DIR and --split-dir are the user's folder's, not the repository's
    (checked up to the refusal of a split folder that is missing, before any stage)."""
    make_demo_data(tmp_path / "data", seed=2, frames=4, videos_per_class=2)
    proc = subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "data/videos", "out", "--split-dir", "missing"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "video folder not found" not in proc.stderr
    assert f"split folder not found: {tmp_path / 'missing'}" in proc.stderr
    assert not (tmp_path / "out" / "frames").exists()


def test_the_out_dir_lock_is_held_while_the_stages_run(tmp_path, monkeypatch):
    import pipeline as pipeline_module
    from utils import UserError
    (tmp_path / "videos" / "A").mkdir(parents=True)
    during = []

    def stages(args, training_flags, out, streams):
        with pytest.raises(UserError, match="in use by another pipeline"):
            pipeline_module.lock_out_dir(out)  # a second pipeline started while the stages run
        during.append(out)
        return 0
    monkeypatch.setattr(pipeline_module, "run_stages", stages)
    assert pipeline_module.main([str(tmp_path / "videos"), str(tmp_path / "out"), "--pretrained", "none"]) == 0
    assert during == [(tmp_path / "out").resolve()]
    pipeline_module.lock_out_dir(tmp_path / "out").close()  # and released after them


def test_pipeline_refuses_pretrained_weights_it_cannot_have_before_any_stage(tmp_path, monkeypatch):
    """Offline without the ImageNet weights in torchvision's cache, or a --pretrained file that is
    not there: one message before any frame is written."""
    import pipeline as pipeline_module
    import torch

    from utils import UserError
    make_demo_data(tmp_path / "data", seed=2, frames=4, videos_per_class=2)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    for pretrained, message in (("imagenet", "could not load the ImageNet weights"),
                                (str(tmp_path / "missing.pth"), "missing.pth: no such file")):
        with pytest.raises(UserError, match=message):
            pipeline_module.main([str(tmp_path / "data" / "videos"), str(tmp_path / "out"), "--arch", "resnet18",
                                  "--pretrained", pretrained])
        assert not (tmp_path / "out" / "frames").exists()


def test_flags_the_pipeline_sets_itself_are_refused_when_passed_on(tmp_path):
    import pipeline as pipeline_module
    from utils import UserError
    (tmp_path / "videos" / "A").mkdir(parents=True)
    for flag in (["--output-dir", str(tmp_path / "one")], ["--data-root=x"], ["--resume"]):
        with pytest.raises(UserError, match=f"pipeline.py sets {flag[0].split('=')[0]} of each training script"):
            pipeline_module.main([str(tmp_path / "videos"), str(tmp_path / "out"), *flag])
    assert not (tmp_path / "out").exists()


def test_more_epochs_resume_both_streams_and_leave_the_preprocessing(tmp_path, monkeypatch):
    """The stages as run_stages chains them: each stream follows the preprocessing, not the
    other stream, so more --epochs resume both (spatial's new fingerprint must not make motion
    start afresh)."""
    import json

    import pipeline as pipeline_module
    calls: list[tuple[str, list[str]]] = []

    def record(name, command):
        calls.append((name, command))
        if command[0] == "average_fusion.py":
            (tmp_path / "out" / "fusion.json").write_text(json.dumps({"fusion": {"top1": 0.0}, "videos": 1}))
    monkeypatch.setattr(pipeline_module.Stage, "_call", staticmethod(record))
    (tmp_path / "videos" / "A").mkdir(parents=True)
    (tmp_path / "videos" / "A" / "v_A_g01_c01.avi").write_bytes(b"video")
    (tmp_path / "split").mkdir()
    out = tmp_path / "out"
    out.mkdir()

    def run(epochs: str) -> list[tuple[str, list[str]]]:
        calls.clear()
        args, flags = pipeline_module.get_args_parser().parse_known_args(
            [str(tmp_path / "videos"), str(out), "--split-dir", str(tmp_path / "split"), "--epochs", epochs])
        streams = pipeline_module.training_commands(args, flags, out, tmp_path / "split")
        pipeline_module.run_stages(args, flags, out, streams)
        return list(calls)
    assert [name for name, _ in run("1")] == ["frames", "flow", "spatial", "motion", "evaluate", "evaluate", "fusion"]
    again = run("2")
    assert [name for name, _ in again] == ["spatial", "motion", "evaluate", "evaluate", "fusion"]
    assert all(command[-2:] == ["--resume", "auto"] for name, command in again if name in ("spatial", "motion"))
    assert not (tmp_path / "out" / "motion.replaced-1").exists()


@pytest.mark.slow
def test_no_frames_pipeline_fuses_the_demo_videos_without_writing_a_frame(tmp_path):
    import json

    make_demo_data(tmp_path / "data", frames=24)
    out = tmp_path / "out"
    log = run_to_end(tmp_path / "data" / "videos", out, "--split-dir", str(tmp_path / "data" / "splits"),
                     "--no-frames", "--batch-size", "8", "--epochs", "6", "--val-interval", "6")
    assert "frames: --no-frames" in log and "--from-videos" in log and "--video-root" in log
    assert not (out / "frames").exists()
    written = {p.relative_to(out).parts[0] for p in out.rglob("*.jpg")}
    assert written == {"flow"}  # flow images only: no RGB frame anywhere
    report = json.loads((out / "fusion.json").read_text())
    assert report["fusion"]["top1"] > max(report["spatial"]["top1"], report["motion"]["top1"])
