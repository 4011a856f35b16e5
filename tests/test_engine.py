"""Models, the shared engine, the stream scripts and their bad inputs (tiny data, CPU)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import engine
import motion_cnn
import spatial_cnn
from models import build_model, cross_modality_conv1, pretrained_name
from scorefiles import load_scores
from tests.synth import make_dataset
from utils import UserError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), frames=13, size=(36, 44))


def spatial_args(data, out, *extra):
    return spatial_cnn.parse_args([
        "--data-root", str(data.data_root), "--split-dir", str(data.split_dir), "--output-dir", str(out),
        "--arch", "resnet18", "--pretrained", "none", "--input-size", "32", "--batch-size", "4",
        "--workers", "0", "--test-frames", "3", "--epochs", "2", *extra])


def motion_args(data, out, *extra):
    return motion_cnn.parse_args([
        "--flow-root", str(data.flow_root), "--split-dir", str(data.split_dir), "--output-dir", str(out),
        "--arch", "resnet18", "--pretrained", "none", "--input-size", "32", "--batch-size", "4",
        "--workers", "0", "--test-frames", "3", "--epochs", "2", "--lr", "1e-3", *extra])


# --- models --------------------------------------------------------------------------------

def test_cross_modality_init_is_the_rgb_mean_replicated(tmp_path):
    rgb = build_model("resnet18", 10, 3, "none")
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)
    flow = build_model("resnet18", 7, 20, str(path))
    expected = rgb.conv1.weight.mean(dim=1, keepdim=True).expand(-1, 20, -1, -1)
    assert flow.conv1.weight.shape == (64, 20, 7, 7)
    assert torch.allclose(flow.conv1.weight, expected)
    assert torch.equal(flow.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)  # the rest is copied
    assert flow.fc.out_features == 7
    assert torch.allclose(cross_modality_conv1(torch.ones(2, 3, 1, 1), 4), torch.ones(2, 4, 1, 1))


def test_dropout_keeps_torchvision_key_names():
    model = build_model("resnet18", 5, 3, "none", dropout=0.5)
    assert {"fc.weight", "fc.bias", "conv1.weight"} <= set(model.state_dict())


def test_missing_imagenet_weights_say_how_to_supply_them(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(UserError) as err:
        build_model("resnet101", 101, 3, "imagenet")
    message = str(err.value)
    assert "resnet101-" in message and "--pretrained PATH" in message and "--pretrained none" in message
    with pytest.raises(UserError, match="not found"):
        build_model("resnet18", 3, 3, str(tmp_path / "missing.pth"))


# --- training, checkpoints, resume ---------------------------------------------------------

def test_train_writes_logs_checkpoints_scores(data, tmp_path):
    out = tmp_path / "spatial"
    result = spatial_cnn.main(spatial_args(data, out))
    assert {"checkpoint.pth.tar", "model_best.pth.tar", "spatial_video_preds.pickle", "train.csv",
            "test.csv", "curves.png"} <= {p.name for p in out.iterdir()}
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["stream"] == "spatial" and ckpt["class_names"] == list(data.classes)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "args", "best_top1"} <= set(ckpt)
    assert len((out / "train.csv").read_text().splitlines()) == 3
    scores = load_scores(out / "spatial_video_preds.pickle")
    assert set(scores) == {n[2:] for n in data.test} and all(s.shape == (3,) for s in scores.values())
    assert 0 <= result["top1"] <= 100


def _interrupt_at_step(monkeypatch, step):
    """Send SIGINT to ourselves during the given optimizer step (the user's Ctrl-C)."""
    calls = {"n": 0}
    original = torch.optim.SGD.step

    def step_and_maybe_interrupt(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == step:
            signal.raise_signal(signal.SIGINT)
        return out
    monkeypatch.setattr(torch.optim.SGD, "step", step_and_maybe_interrupt)


@pytest.mark.parametrize("interrupt_step", [2, 3])  # 3 steps an epoch: mid-epoch and on the boundary
def test_interrupt_and_resume_equals_uninterrupted(data, tmp_path, monkeypatch, interrupt_step):
    extra = ("--epochs", "2", "--dropout", "0.3")
    straight = tmp_path / "straight"
    spatial_cnn.main(spatial_args(data, straight, *extra))

    broken = tmp_path / "broken"
    with monkeypatch.context() as m:
        _interrupt_at_step(m, interrupt_step)
        with pytest.raises(SystemExit) as stopped:
            spatial_cnn.main(spatial_args(data, broken, *extra))
    assert stopped.value.code == 128 + signal.SIGINT
    partial = torch.load(broken / "checkpoint.pth.tar", weights_only=True)
    assert partial["epoch"] == 0 and partial["samples_done"] == interrupt_step * 4
    spatial_cnn.main(spatial_args(data, broken, *extra, "--resume", str(broken / "checkpoint.pth.tar")))

    a = torch.load(straight / "checkpoint.pth.tar", weights_only=True)
    b = torch.load(broken / "checkpoint.pth.tar", weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["optimizer"]["state"][0]["momentum_buffer"].equal(b["optimizer"]["state"][0]["momentum_buffer"])
    assert (straight / "train.csv").read_text().splitlines()[1].split(",")[:4] == \
        (broken / "train.csv").read_text().splitlines()[1].split(",")[:4]
    assert len((broken / "train.csv").read_text().splitlines()) == 3


def test_evaluate_then_fuse(data, tmp_path):
    sp, mo = tmp_path / "spatial", tmp_path / "motion"
    spatial_cnn.main(spatial_args(data, sp, "--epochs", "1"))
    motion_cnn.main(motion_args(data, mo, "--epochs", "1"))
    (sp / "spatial_video_preds.pickle").unlink()
    result = spatial_cnn.main(spatial_args(data, sp, "--evaluate", "--resume", str(sp / "model_best.pth.tar")))
    motion_cnn.main(motion_args(data, mo, "--evaluate", "--resume", str(mo / "model_best.pth.tar")))
    scores = load_scores(sp / "spatial_video_preds.pickle")
    labels = [data.classes.index(n.split("_")[0]) for n in sorted(scores)]
    top1 = 100 * np.mean([scores[k].argmax() == y for k, y in zip(sorted(scores), labels)])
    assert top1 == pytest.approx(result["top1"])
    out = tmp_path / "fusion.json"
    proc = subprocess.run([sys.executable, "average_fusion.py", "--spatial", str(sp / "spatial_video_preds.pickle"),
                           "--motion", str(mo / "motion_video_preds.pickle"), "--split-dir", str(data.split_dir),
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "fusion" in proc.stdout and out.exists()


def test_evaluate_on_a_fresh_model(data, tmp_path):
    result = motion_cnn.main(motion_args(data, tmp_path, "--evaluate"))
    assert (tmp_path / "motion_video_preds.pickle").exists() and result["top5"] == 100.0  # 3 classes


def test_device_resize_matches_the_per_frame_resize(data, tmp_path):
    ckpt = tmp_path / "init.pth"
    torch.manual_seed(0)
    torch.save(build_model("resnet18", 3, 20, "none").state_dict(), ckpt)
    a, b = tmp_path / "a", tmp_path / "b"
    motion_cnn.main(motion_args(data, a, "--evaluate", "--resume", str(ckpt), "--no-device-resize"))
    motion_cnn.main(motion_args(data, b, "--evaluate", "--resume", str(ckpt), "--device-resize"))
    sa, sb = load_scores(a / "motion_video_preds.pickle"), load_scores(b / "motion_video_preds.pickle")
    for key in sa:  # PIL's and torch's antialiased bilinear differ by rounding only
        np.testing.assert_allclose(sa[key], sb[key], rtol=0.02, atol=0.02 * np.abs(sa[key]).max())
        assert sa[key].argmax() == sb[key].argmax()


def test_reference_checkpoint_loads_and_gives_the_same_scores(data, tmp_path):
    ours = tmp_path / "ours"
    motion_cnn.main(motion_args(data, ours, "--epochs", "1"))
    ckpt = torch.load(ours / "model_best.pth.tar", weights_only=True)
    reference_state = {k.replace("conv1.", "conv1_custom.", 1) if k.startswith("conv1.") else
                       k.replace("fc.", "fc_custom.", 1) if k.startswith("fc.") else k: v
                       for k, v in ckpt["model"].items()}
    assert "conv1_custom.weight" in reference_state and "fc_custom.bias" in reference_state
    ref_path = tmp_path / "ref_motion_best.pth.tar"
    torch.save({"epoch": 7, "state_dict": reference_state, "best_prec1": 12.5, "optimizer": {}}, ref_path)
    a, b = tmp_path / "a", tmp_path / "b"
    motion_cnn.main(motion_args(data, a, "--evaluate", "--resume", str(ours / "model_best.pth.tar")))
    motion_cnn.main(motion_args(data, b, "--evaluate", "--resume", str(ref_path)))
    sa, sb = load_scores(a / "motion_video_preds.pickle"), load_scores(b / "motion_video_preds.pickle")
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_of_the_wrong_stream_or_arch(data, tmp_path):
    sp = tmp_path / "sp"
    spatial_cnn.main(spatial_args(data, sp, "--epochs", "1"))
    best = str(sp / "model_best.pth.tar")
    with pytest.raises(UserError, match="checkpoint of the spatial stream; this is the motion stream"):
        motion_cnn.main(motion_args(data, tmp_path / "m", "--evaluate", "--resume", best))
    with pytest.raises(UserError, match="trained with --arch resnet18, the command line says --arch resnet34"):
        spatial_cnn.main(spatial_args(data, tmp_path / "s", "--evaluate", "--resume", best, "--arch", "resnet34"))
    bare = tmp_path / "bare.pth"
    torch.save(build_model("resnet18", 3, 3, "none").state_dict(), bare)  # a state dict without metadata
    with pytest.raises(UserError, match="takes 3 input channels .*spatial stream checkpoint"):
        motion_cnn.main(motion_args(data, tmp_path / "m", "--evaluate", "--resume", str(bare)))
    with pytest.raises(UserError, match="does not fit --arch resnet34"):
        spatial_cnn.main(spatial_args(data, tmp_path / "s", "--evaluate", "--resume", str(bare), "--arch", "resnet34"))
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read this checkpoint"):
        spatial_cnn.main(spatial_args(data, tmp_path / "s", "--evaluate", "--resume", str(garbage)))
    with pytest.raises(UserError, match="checkpoint not found"):
        spatial_cnn.main(spatial_args(data, tmp_path / "s", "--resume", str(tmp_path / "nope.pth.tar")))


def test_nan_loss_stops_the_run(data, tmp_path):
    args = motion_args(data, tmp_path, "--epochs", "1")
    args.lr = 1e30  # a run that diverges (--lr itself is bounded to 100)
    with pytest.raises(UserError, match="NaN/inf in epoch 1"):
        motion_cnn.main(args)
    assert not (tmp_path / "checkpoint.pth.tar").exists()


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth.tar"
    engine.save_checkpoint(path, {"epoch": 1})

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(UserError, match=f"could not write the checkpoint .*disk full.*last good one is {path}"):
        engine.save_checkpoint(path, {"epoch": 2})
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth.tar"]


def test_holdout_validation_selects_and_scores_test_once(data, tmp_path):
    out = tmp_path / "val"
    spatial_cnn.main(spatial_args(data, out, "--holdout-groups", "1"))
    assert (out / "val.csv").exists() and not (out / "test.csv").exists()
    assert (out / "spatial_video_preds.pickle").exists()


def test_script_errors_are_one_message(data, tmp_path):
    proc = subprocess.run([sys.executable, "spatial_cnn.py", "--data-root", str(tmp_path / "nope"),
                           "--split-dir", str(data.split_dir), "--pretrained", "none"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "--data-root folder not found" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fast_path_trains_and_matches_cpu_evaluation(data, tmp_path):
    """bf16 autocast, channels_last and the device resize on CUDA: training runs, and the
    evaluation of one checkpoint agrees with the CPU's fp32 evaluation."""
    out = tmp_path / "cuda"
    spatial_cnn.main(spatial_args(data, out, "--device", "cuda", "--epochs", "1"))
    ckpt = str(out / "checkpoint.pth.tar")
    gpu = spatial_cnn.main(spatial_args(data, tmp_path / "g", "--device", "cuda", "--evaluate", "--resume", ckpt))
    cpu = spatial_cnn.main(spatial_args(data, tmp_path / "c", "--device", "cpu", "--evaluate", "--resume", ckpt))
    # bf16 keeps about 3 significant digits: 10% of the largest score is a generous bound
    assert torch.allclose(gpu["scores"], cpu["scores"], rtol=0.1, atol=0.1 * cpu["scores"].abs().max().item())


# --- trust: checkpoint settings, resume semantics, output folders, bad input ---------------------

def lr_column(out: Path) -> list[float]:
    return [float(row.split(",")[4]) for row in (out / "train.csv").read_text().splitlines()[1:]]


def test_evaluate_takes_the_input_settings_of_the_checkpoint(data, tmp_path, capsys):
    trained = tmp_path / "trained"
    motion_cnn.main(motion_args(data, trained, "--epochs", "1", "--flow-mean", "0"))
    best = str(trained / "model_best.pth.tar")
    assert torch.load(best, weights_only=True)["args"]["flow_mean"] == 0.0
    silent = motion_cnn.main(motion_args(data, tmp_path / "a", "--evaluate", "--resume", best))
    assert "settings from" in capsys.readouterr().out
    same = motion_cnn.main(motion_args(data, tmp_path / "b", "--evaluate", "--resume", best, "--flow-mean", "0"))
    assert torch.equal(silent["scores"], same["scores"])
    with pytest.raises(UserError, match="trained with --flow-mean 0.0, the command line says --flow-mean 0.5"):
        motion_cnn.main(motion_args(data, tmp_path / "c", "--evaluate", "--resume", best, "--flow-mean", "0.5"))
    forced = motion_cnn.main(motion_args(data, tmp_path / "d", "--evaluate", "--resume", best, "--flow-mean", "0.5",
                                         "--override-checkpoint-settings"))
    assert not torch.allclose(forced["scores"], silent["scores"])


def test_extending_a_cosine_run_follows_the_longer_schedule(data, tmp_path):
    straight, extended = tmp_path / "straight", tmp_path / "extended"
    spatial_cnn.main(spatial_args(data, straight, "--lr-scheduler", "cosine", "--epochs", "4"))
    spatial_cnn.main(spatial_args(data, extended, "--lr-scheduler", "cosine", "--epochs", "2"))
    spatial_cnn.main(spatial_args(data, extended, "--lr-scheduler", "cosine", "--epochs", "4",
                                  "--resume", str(extended / "checkpoint.pth.tar")))
    # the rate each epoch trained with: cosine over 4 epochs, starting at the base rate
    expected = [5e-4 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)]
    np.testing.assert_allclose(lr_column(straight), expected, rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(lr_column(extended)[2:], expected[2:], rtol=1e-4, atol=1e-12)


def test_resume_restores_the_scheduler_state(data, tmp_path, monkeypatch):
    extra = ("--lr-scheduler", "cosine", "--epochs", "3")
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    spatial_cnn.main(spatial_args(data, straight, *extra))
    with monkeypatch.context() as m:
        _interrupt_at_step(m, 5)  # in epoch 2 (3 steps an epoch), after one scheduler step
        with pytest.raises(SystemExit):
            spatial_cnn.main(spatial_args(data, broken, *extra))
    spatial_cnn.main(spatial_args(data, broken, *extra, "--resume", str(broken / "checkpoint.pth.tar")))
    np.testing.assert_allclose(lr_column(broken), lr_column(straight), rtol=1e-9)
    a = torch.load(straight / "checkpoint.pth.tar", weights_only=True)["model"]
    b = torch.load(broken / "checkpoint.pth.tar", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_during_the_test_pass_stops_and_resumes_exactly(data, tmp_path, monkeypatch):
    from dataloader.transforms import InputNormalizer
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    spatial_cnn.main(spatial_args(data, straight))
    original = InputNormalizer.forward

    def terminate_in_evaluation(self, batch):
        if not torch.is_grad_enabled():  # evaluate() runs under no_grad
            signal.raise_signal(signal.SIGTERM)
        return original(self, batch)
    with monkeypatch.context() as m:
        m.setattr(InputNormalizer, "forward", terminate_in_evaluation)
        with pytest.raises(SystemExit) as stopped:
            spatial_cnn.main(spatial_args(data, broken))
    assert stopped.value.code == 128 + signal.SIGTERM
    partial = torch.load(broken / "checkpoint.pth.tar", weights_only=True)
    assert partial["epoch"] == 0 and partial["samples_done"] == 12  # the epoch's training is kept
    spatial_cnn.main(spatial_args(data, broken, "--resume", str(broken / "checkpoint.pth.tar")))
    a = torch.load(straight / "checkpoint.pth.tar", weights_only=True)
    b = torch.load(broken / "checkpoint.pth.tar", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (straight / "test.csv").read_text() == (broken / "test.csv").read_text()


def test_an_output_folder_holding_a_run_is_refused(data, tmp_path):
    out = tmp_path / "run"
    spatial_cnn.main(spatial_args(data, out, "--epochs", "1"))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for extra in ((), ("--epochs", "1")):
        with pytest.raises(UserError, match=f"(?s){out} holds a previous run .*--resume.*--overwrite"):
            spatial_cnn.main(spatial_args(data, out, *extra))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    result = spatial_cnn.main(spatial_args(data, out, "--evaluate"))  # --evaluate alone: the run's best
    best = torch.load(out / "model_best.pth.tar", weights_only=True)
    assert result["top1"] == best["best_top1"]
    spatial_cnn.main(spatial_args(data, out, "--epochs", "1", "--overwrite"))
    assert len((out / "train.csv").read_text().splitlines()) == 2  # a fresh log, not appended to


def test_a_second_run_into_a_busy_folder_fails_at_once(data, tmp_path):
    out = tmp_path / "busy"
    holder = engine.OutputFolder(out, "spatial_video_preds.pickle", resume=False, overwrite=False)
    try:
        proc = subprocess.run([sys.executable, "spatial_cnn.py", "--data-root", str(data.data_root), "--split-dir",
                               str(data.split_dir), "--output-dir", str(out), "--pretrained", "none"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        holder.close()
    assert proc.returncode == 1 and f"{out} is in use by another run (pid {os.getpid()}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unusable_output_folder_fails_before_indexing(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot create the output folder"):
        spatial_cnn.main(spatial_args(data, blocker / "out", "--data-root", str(tmp_path / "no-frames")))


def test_stale_temporaries_go_and_files_follow_the_umask(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".checkpoint.pth.tar.k1ll3d.tmp").write_bytes(b"x" * 1000)
    old = os.umask(0o002)
    try:
        spatial_cnn.main(spatial_args(data, out, "--epochs", "1"))
    finally:
        os.umask(old)
    assert not list(out.glob(".*.tmp"))
    for name in ("checkpoint.pth.tar", "model_best.pth.tar", "spatial_video_preds.pickle", "curves.png"):
        assert (out / name).stat().st_mode & 0o777 == 0o664, name


def test_nan_weights_give_no_score_file(data, tmp_path):
    good = tmp_path / "good"
    motion_cnn.main(motion_args(data, good, "--epochs", "1"))
    ckpt = torch.load(good / "model_best.pth.tar", weights_only=True)
    ckpt["model"]["fc.weight"][0, 0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pth.tar")
    with pytest.raises(UserError, match="non-finite scores .*for 6 of 6 test videos, e.g. Alpha_g01_c01"):
        motion_cnn.main(motion_args(data, tmp_path / "e", "--evaluate", "--resume", str(tmp_path / "nan.pth.tar")))
    assert not (tmp_path / "e" / "motion_video_preds.pickle").exists()


def test_bad_numeric_flags_are_one_usage_message(data, tmp_path, capsys):
    proc = subprocess.run([sys.executable, "spatial_cnn.py", "--data-root", str(data.data_root), "--output-dir",
                           str(tmp_path), "--test-frames", "0", "--batch-size", "0", "--lr", "-1", "--epochs", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "argument --test-frames: 0 is not a whole number in [1, 1000]" in proc.stderr
    for flag, value, problem in (("--epochs", "0", "0 is not a whole number in [1, 100000]"),
                                 ("--batch-size", "0", "0 is not a whole number in [1, 65536]"),
                                 ("--lr", "-1", "-1 is not a number in (0, 100]"),
                                 ("--lr", "nan", "nan is not finite")):
        with pytest.raises(SystemExit):
            spatial_cnn.parse_args(["--data-root", str(data.data_root), flag, value])
        assert f"argument {flag}: {problem}" in capsys.readouterr().err


def test_resuming_a_finished_run_says_so(data, tmp_path):
    out = tmp_path / "run"
    spatial_cnn.main(spatial_args(data, out, "--epochs", "1"))
    with pytest.raises(UserError, match="has finished 1 epochs and --epochs is 1: nothing to train"):
        spatial_cnn.main(spatial_args(data, out, "--epochs", "1", "--resume", str(out / "checkpoint.pth.tar")))


def test_a_folder_given_as_checkpoint_names_the_file_inside(data, tmp_path):
    out = tmp_path / "run"
    spatial_cnn.main(spatial_args(data, out, "--epochs", "1"))
    with pytest.raises(UserError, match=f"{out} is a folder, not a file\n  fix: pass e.g. {out}/checkpoint.pth.tar"):
        spatial_cnn.main(spatial_args(data, tmp_path / "e", "--evaluate", "--resume", str(out)))


def test_score_keys_use_the_class_folder_spelling(tmp_path):
    """UCF101 lists name v_HandStandPushups_* files under the class HandstandPushups; score
    files key them HandstandPushups_gXX_cYY, as the reference repo does."""
    from tests.synth import save, write_split
    classes = ["HandstandPushups", "Other"]
    videos = {"train": [("HandstandPushups", "v_HandStandPushups_g02_c01"), ("Other", "v_Other_g02_c01")],
              "test": [("HandstandPushups", "v_HandStandPushups_g01_c01"), ("Other", "v_Other_g01_c01")]}
    write_split(tmp_path / "s", classes, videos["train"], videos["test"])
    rng = np.random.default_rng(0)
    for _, name in videos["train"] + videos["test"]:
        for i in range(1, 12):
            save(tmp_path / "f" / name / f"frame{i:06d}.jpg", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    spatial_cnn.main(spatial_cnn.parse_args([
        "--data-root", str(tmp_path / "f"), "--split-dir", str(tmp_path / "s"), "--output-dir", str(tmp_path / "o"),
        "--arch", "resnet18", "--pretrained", "none", "--input-size", "32", "--workers", "0", "--test-frames", "2",
        "--evaluate"]))
    assert set(load_scores(tmp_path / "o" / "spatial_video_preds.pickle")) == {"HandstandPushups_g01_c01",
                                                                                "Other_g01_c01"}


@pytest.mark.parametrize("name,member", [("imagenet", "IMAGENET1K_V1"), ("imagenet-v1", "IMAGENET1K_V1"),
                                         ("imagenet-v2", "IMAGENET1K_V2")])
def test_imagenet_weights_by_name_and_the_offline_message(monkeypatch, name, member):
    import torchvision
    seen = []

    def offline(url, *args, **kwargs):
        seen.append(url)
        raise urllib.error.URLError("no network")
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(UserError) as err:
        build_model("resnet101", 101, 3, name)
    weights = getattr(torchvision.models.ResNet101_Weights, member)
    filename = weights.url.rsplit("/", 1)[-1]
    assert seen == [weights.url] and filename in str(err.value) and member in str(err.value)
    assert str(Path(torch.hub.get_dir()) / "checkpoints") in str(err.value)


def test_checkpoint_records_the_pretrained_weights(data, tmp_path):
    spatial_cnn.main(spatial_args(data, tmp_path, "--epochs", "1"))
    assert torch.load(tmp_path / "checkpoint.pth.tar", weights_only=True)["pretrained_weights"] == "none"
    assert pretrained_name("imagenet") == "IMAGENET1K_V1"


def test_a_folder_holding_only_a_score_file_is_protected(tmp_path):
    """An --evaluate run's folder (or a copied result) holds no checkpoint, only the score file:
    a new run there must not replace it silently."""
    out = tmp_path / "scores_only"
    out.mkdir()
    (out / "spatial_video_preds.pickle").write_bytes(b"results")
    with pytest.raises(UserError, match="holds a previous run \\(spatial_video_preds.pickle\\)"):
        engine.OutputFolder(out, "spatial_video_preds.pickle", resume=False, overwrite=False)
    assert (out / "spatial_video_preds.pickle").read_bytes() == b"results"
    engine.OutputFolder(out, "spatial_video_preds.pickle", resume=False, overwrite=True).close()


def test_resume_in_the_readme_s_form_continues_that_run_with_its_settings(data, tmp_path, monkeypatch, capsys):
    """``spatial_cnn.py --resume RUN/checkpoint.pth.tar --epochs 3``: on in RUN (not
    record/spatial), with the run's lr, batch size, schedule and data options, not the defaults;
    a flag given explicitly wins and the log says so. ``--resume`` alone is the run in
    --output-dir; ``--evaluate`` alone scores its best checkpoint."""
    run = tmp_path / "run"
    spatial_cnn.main(spatial_args(data, run, "--lr", "0.02", "--batch-size", "3", "--lr-scheduler", "cosine"))
    monkeypatch.chdir(tmp_path)  # where record/spatial would be
    capsys.readouterr()
    args = spatial_cnn.parse_args(["--resume", str(run / "checkpoint.pth.tar"), "--epochs", "3", "--workers", "0"])
    spatial_cnn.main(args)
    assert (args.output_dir, args.lr, args.batch_size, args.lr_scheduler, args.data_root) == \
        (str(run), 0.02, 3, "cosine", str(data.data_root))
    assert not (tmp_path / "record").exists()
    assert len((run / "train.csv").read_text().splitlines()) == 4  # epochs 1, 2 and now 3
    log = capsys.readouterr().out
    assert "--lr 0.02" in log and "--batch-size 3" in log and f"--output-dir {run}" in log
    assert "given on the command line instead of" in log and "--epochs" in log
    assert torch.load(run / "checkpoint.pth.tar", weights_only=True)["epoch"] == 3
    # --resume alone: the run in --output-dir, with a flag that overrides a stored setting
    args = spatial_cnn.parse_args(["--resume", "--output-dir", str(run), "--epochs", "4", "--lr", "0.01",
                                   "--workers", "0"])
    spatial_cnn.main(args)
    assert args.lr == 0.01 and args.batch_size == 3
    assert "--lr" in capsys.readouterr().out.split("given on the command line instead of")[1]
    # --evaluate alone: the run's best checkpoint, its score file in the run
    result = spatial_cnn.main(spatial_cnn.parse_args(["--evaluate", "--output-dir", str(run), "--workers", "0"]))
    assert result["top1"] == torch.load(run / "model_best.pth.tar", weights_only=True)["best_top1"]


def test_every_run_folder_records_its_settings_and_config_starts_a_run_from_them(data, tmp_path):
    import json
    first = tmp_path / "first"
    spatial_cnn.main(spatial_args(data, first, "--lr", "0.02", "--recipe", "tsn", "--epochs", "1",
                                  "--test-crops", "1", "--test-frames", "3"))
    record = json.loads((first / "config.json").read_text())
    assert {"command", "settings", "versions", "git", "host", "device", "started"} <= set(record)
    assert record["settings"]["lr"] == 0.02 and record["settings"]["segments"] == 3  # the recipe's, resolved
    assert record["versions"]["torch"] == torch.__version__ and record["device"] == "cpu"
    assert set(record["git"]) == {"commit", "dirty"}
    second = tmp_path / "second"
    args = spatial_cnn.parse_args(["--config", str(first / "config.json"), "--output-dir", str(second),
                                   "--epochs", "1", "--lr", "0.03"])
    assert (args.lr, args.recipe, args.segments, args.data_root, args.batch_size) == \
        (0.03, "tsn", 3, str(data.data_root), 4)  # the record's, but the flag given
    record["settings"]["lr"] = float("nan")
    (tmp_path / "edited.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="--config .*edited.json: lr nan is not finite"):
        spatial_cnn.parse_args(["--config", str(tmp_path / "edited.json")])
    record["settings"]["lr"], record["settings"]["arch"] = 0.01, "resnet9000"
    (tmp_path / "edited.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="values no flag takes: arch 'resnet9000'"):
        spatial_cnn.parse_args(["--config", str(tmp_path / "edited.json")])


def test_a_log_of_another_version_takes_the_new_column_without_misaligning(tmp_path):
    from utils import CsvLogger
    path = tmp_path / "test.csv"
    path.write_text("epoch,loss,top1\n1,0.5,50.0\n")  # written before mean_class existed
    CsvLogger(path).log({"epoch": 2, "loss": 0.4, "top1": 60.0, "mean_class": 55.0})
    assert CsvLogger(path).read() == [{"epoch": "1", "loss": "0.5", "top1": "50.0", "mean_class": ""},
                                      {"epoch": "2", "loss": "0.4", "top1": "60.0", "mean_class": "55.0"}]
