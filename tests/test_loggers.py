"""--logger: the TensorBoard backend's event file holds each epoch's scalars, the confusion
matrices and the hparams; W&B says how to install it; only the CSV logs without a flag."""
from __future__ import annotations

import sys

import pytest
import torch

import engine
import spatial_cnn
from scorefiles import confusion_figure
from tests.synth import make_dataset
from tests.test_engine import spatial_args
from utils import UserError

pytest.importorskip("tensorboard")
SCALARS = {"train/loss", "train/top1", "train/top5", "test/loss", "test/top1", "test/top5", "test/frame_top1", "lr",
           "speed/samples_per_s", "speed/data_wait_share", "speed/epoch_seconds"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), frames=13, size=(36, 44))


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_tensorboard_holds_each_epochs_scalars_confusion_and_hparams(data, tmp_path):
    out = tmp_path / "run"
    result = spatial_cnn.main(spatial_args(data, out, "--logger", "tensorboard", "--epochs", "3"))
    board = events(out)
    tags = board.Tags()
    assert SCALARS <= set(tags["scalars"])
    for tag in SCALARS:
        assert [e.step for e in board.Scalars(tag)] == [1, 2, 3], tag
    csv_rows = (out / "test.csv").read_text().splitlines()[1:]  # the CSV logs stay, with the same numbers
    assert [round(e.value, 3) for e in board.Scalars("test/top1")] == [float(r.split(",")[2]) for r in csv_rows]
    assert all(0 <= e.value <= 1 for e in board.Scalars("speed/data_wait_share"))
    assert all(e.value > 0 for e in board.Scalars("speed/samples_per_s"))
    train_rows = (out / "train.csv").read_text().splitlines()[1:]
    assert [e.value for e in board.Scalars("lr")] == pytest.approx([float(r.split(",")[4]) for r in train_rows])
    assert [e.step for e in board.Images("test/confusion_matrix")] == [1, 2, 3]
    assert b"PNG" in board.Images("test/confusion_matrix")[0].encoded_image_string[:8]
    # hparams: the settings with the final metrics
    plugin = board.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugin and "_hparams_/experiment" in plugin
    final = {t: board.Scalars(t)[-1].value for t in tags["scalars"] if t.startswith("hparam/")}
    assert final["hparam/top1"] == pytest.approx(result["top1"]) and "hparam/best_top1" in final


def test_a_resumed_run_continues_the_event_file_without_repeating_epochs(data, tmp_path):
    import shutil
    out = tmp_path / "run"
    spatial_cnn.main(spatial_args(data, out, "--logger", "tensorboard", "--epochs", "2"))
    shutil.copy(out / "checkpoint.pth.tar", tmp_path / "epoch2.pth.tar")
    spatial_cnn.main(spatial_args(data, out, "--logger", "tensorboard", "--epochs", "3",
                                  "--resume", str(out / "checkpoint.pth.tar")))
    assert [e.step for e in events(out).Scalars("train/loss")] == [1, 2, 3]
    # resumed again from epoch 2: epoch 3 is logged anew, not twice
    spatial_cnn.main(spatial_args(data, out, "--logger", "tensorboard", "--epochs", "3",
                                  "--resume", str(tmp_path / "epoch2.pth.tar")))
    assert [e.step for e in events(out).Scalars("train/loss")] == [1, 2, 3]
    # --evaluate logs its test pass's confusion matrix and drops nothing
    spatial_cnn.main(spatial_args(data, out, "--logger", "tensorboard", "--evaluate",
                                  "--resume", str(out / "model_best.pth.tar")))
    board = events(out)
    assert [e.step for e in board.Scalars("train/loss")] == [1, 2, 3]
    assert len((out / "train.csv").read_text().splitlines()) == 4
    # --overwrite starts the events afresh
    spatial_cnn.main(spatial_args(data, out, "--logger", "tensorboard", "--epochs", "1", "--overwrite"))
    assert [e.step for e in events(out).Scalars("train/loss")] == [1]


def test_without_the_flag_only_csv_and_a_missing_backend_says_how_to_install_it(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    spatial_cnn.main(spatial_args(data, out, "--epochs", "1"))
    assert not list(out.glob("events.out.tfevents.*")) and (out / "train.csv").is_file()
    assert spatial_cnn.parse_args(["--logger", "wandb,tensorboard"]).logger == ["csv", "tensorboard", "wandb"]
    with pytest.raises(SystemExit):
        spatial_cnn.parse_args(["--logger", "csv,mlflow"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed (and never a network call)
    with pytest.raises(UserError, match=r"(?s)--logger wandb needs the package wandb.*pip install"):
        spatial_cnn.main(spatial_args(data, tmp_path / "other", "--logger", "wandb", "--epochs", "1"))


def test_only_the_main_process_logs(tmp_path):
    args = spatial_cnn.parse_args(["--logger", "tensorboard", "--output-dir", str(tmp_path)])
    from engine.loggers import open_loggers
    assert open_loggers(args, tmp_path, "spatial", "test", 0, is_main=False).backends == []
    assert not any(tmp_path.iterdir())


def test_an_epochs_timing_counts_samples_and_the_wait_for_data():
    import time

    from dataloader import spatial_normalizer
    from models import build_model

    def slow_batches():
        for _ in range(3):
            time.sleep(0.2)
            yield torch.randint(0, 256, (2, 1, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1])
    model = build_model("resnet18", 2, 3, "none")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    ctx = engine.Context(torch.device("cpu"), spatial_normalizer(), None, engine.World())
    timing = engine.EpochTiming()
    engine.train_one_epoch(model, slow_batches(), torch.nn.CrossEntropyLoss(), optimizer,
                           torch.amp.GradScaler("cpu", enabled=False), ctx, 0, engine.Meters(), timing=timing)
    assert timing.samples == 6 and timing.data_seconds >= 0.6 and timing.seconds >= timing.data_seconds
    assert 0 < timing.data_wait <= 1 and timing.samples_per_second == pytest.approx(6 / timing.seconds)


def test_wandb_receives_the_same_numbers_through_its_api(data, tmp_path, monkeypatch):
    """A stand-in for the wandb package (no network): what the backend hands its API."""
    import types
    calls = {"log": [], "summary": {}, "finished": False}

    class Run:
        summary = calls["summary"]

        def log(self, values, step):
            calls["log"].append((step, values))

        def finish(self):
            calls["finished"] = True

    def init(**kwargs):
        calls["init"] = kwargs
        return Run()
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init, Image=lambda figure: "image"))
    from engine import loggers
    drawn = []
    monkeypatch.setattr(loggers, "confusion_figure", lambda *a: drawn.append(a) or confusion_figure(*a))
    out = tmp_path / "run"
    result = spatial_cnn.main(spatial_args(data, out, "--logger", "wandb,tensorboard", "--epochs", "2"))
    assert len(drawn) == 2  # one figure a test pass, for both backends
    assert calls["init"]["config"]["epochs"] == 2 and calls["init"]["dir"] == str(out)
    scalars = [(step, v) for step, v in calls["log"] if "train/loss" in v]
    assert [step for step, _ in scalars] == [1, 2]
    assert {"lr", "speed/samples_per_s", "speed/data_wait_share", "test/top1", "train/top5"} <= set(scalars[0][1])
    assert [step for step, v in calls["log"] if "test/confusion_matrix" in v] == [1, 2]
    assert calls["summary"]["top1"] == result["top1"] and calls["finished"]


def test_a_disk_that_fills_stops_tensorboard_with_a_warning_not_the_run(data, tmp_path, capsys, monkeypatch):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(SummaryWriter, "add_scalar", full)
    out = tmp_path / "full"
    spatial_cnn.main(spatial_args(data, out, "--logger", "tensorboard", "--epochs", "2"))
    assert "TensorBoard logging stopped, its events cannot be written (No space left on device)" in \
        capsys.readouterr().out
    assert (out / "checkpoint.pth.tar").exists() and len((out / "train.csv").read_text().splitlines()) == 3


def test_runs_are_named_after_their_folder_with_per_step_scalars_and_mean_class_accuracy(data, tmp_path, capsys):
    """``tensorboard --logdir record`` shows a run as ``spatial`` (its events are in the run
    folder); --print-freq adds a line and per-step scalars; the test passes log the mean class
    accuracy beside top-1/top-5 (CSV too); --val-interval 2 tests after epochs 2 and 3 only."""
    out = tmp_path / "spatial"
    spatial_cnn.main(spatial_args(data, out, "--logger", "tensorboard", "--epochs", "3", "--print-freq", "1",
                                  "--val-interval", "2"))
    assert list(out.glob("events.out.tfevents.*")) and not (out / "tensorboard").exists()
    board = events(out)
    assert board.Scalars("train_step/loss") and board.Scalars("train_step/lr")
    assert [e.step for e in board.Scalars("test/top1")] == [2, 3]
    assert [e.step for e in board.Scalars("train/loss")] == [1, 2, 3]
    rows = (out / "test.csv").read_text().splitlines()
    assert rows[0].split(",") == ["epoch", "loss", "top1", "top5", "frame_top1", "mean_class"] and len(rows) == 3
    log = capsys.readouterr()
    assert "epoch 1 [1/" in log.out + log.err and "mean class" in log.out
