"""Inputs that arrive another way than a well-formed flag: output paths equal to inputs,
fusion weights that rank nothing, score files given under the wrong stream's flag, checkpoints
with edited settings, oversized or deeply nested sidecars, memory-sizing values."""
from __future__ import annotations

import argparse
import os
import pickle

import numpy as np
import pytest
import torch

import average_fusion
import engine
import predict
from inference.scorer import load_stream
from inference.windows import count_windows, plan_windows
from models import build_model
from scorefiles import ScoreFileError, load_score_info, save_score_info
from utils import UserError

CLASSES = ["Alpha", "Beta", "Gamma"]


def checkpoint(path, stream="spatial", **settings):
    """A checkpoint in this repo's format: a tiny untrained ResNet-18 and its stored settings."""
    in_channels = 3 if stream == "spatial" else 20
    args = {"arch": "resnet18", "recipe": "reference", "input_size": 32, "test_frames": 3, "test_crops": 1,
            "test_view": "resize", "stack_length": 10, "flow_mean": 0.5, **settings}
    torch.save({"format": engine.CHECKPOINT_FORMAT, "stream": stream, "arch": "resnet18", "num_classes": 3,
                "in_channels": in_channels, "class_names": CLASSES, "args": args,
                "model": build_model("resnet18", 3, in_channels, "none").state_dict()}, path)
    return path


# --- predict.py: outputs never replace inputs -----------------------------------------------------

@pytest.fixture
def inputs(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.avi", "b.mp4"):
        (videos / name).write_bytes(b"not decoded: every refusal comes before any work")
    spatial, motion = tmp_path / "s.pth.tar", tmp_path / "m.pth.tar"
    spatial.write_bytes(b"checkpoint")
    motion.write_bytes(b"checkpoint")
    (tmp_path / "classInd.txt").write_text("1 Alpha\n")
    return tmp_path


def predict_args(root, *extra, videos=("videos/a.avi",)):
    return predict.get_args_parser().parse_args(
        [*(str(root / v) for v in videos), "--spatial", str(root / "s.pth.tar"), "--motion", str(root / "m.pth.tar"),
         "--class-ind", str(root / "classInd.txt"), "--device", "cpu", *extra])


@pytest.mark.parametrize("flag", ["--json", "--csv", "--plot", "--annotate"])
@pytest.mark.parametrize("target", ["videos/a.avi", "s.pth.tar", "m.pth.tar", "classInd.txt"])
def test_no_output_flag_may_name_an_input(inputs, flag, target):
    before = {p: p.read_bytes() for p in inputs.rglob("*") if p.is_file()}
    window = ["--window", "1"] if flag in ("--csv", "--plot") else []
    args = predict_args(inputs, flag, str(inputs / target), *window)
    with pytest.raises(UserError, match="would replace it"):
        predict.main(args)
    assert {p: p.read_bytes() for p in inputs.rglob("*") if p.is_file()} == before


def test_an_input_reached_by_another_spelling_or_a_hard_link_is_refused(inputs):
    os.link(inputs / "s.pth.tar", inputs / "link.json")
    for spelling in (str(inputs / "videos" / ".." / "s.pth.tar"), str(inputs / "link.json")):
        with pytest.raises(UserError, match="--spatial"):
            predict.main(predict_args(inputs, "--json", spelling))


def test_outputs_inside_a_folder_for_several_videos_are_checked_too(inputs):
    # the folder for several videos gets <stem>_annotated.mp4: one of the inputs is named so
    (inputs / "videos" / "a_annotated.mp4").write_bytes(b"an input video")
    args = predict_args(inputs, "--annotate", str(inputs / "videos"),
                        videos=("videos/a.avi", "videos/b.mp4", "videos/a_annotated.mp4"))
    with pytest.raises(UserError, match="a_annotated.mp4 is the video"):
        predict.main(args)


def test_two_outputs_on_one_file_and_bad_drawings_are_refused_before_work(inputs):
    with pytest.raises(UserError, match="--csv .* is --json"):
        predict.main(predict_args(inputs, "--json", str(inputs / "o.json"), "--csv", str(inputs / "o.json"),
                                  "--window", "1"))
    (inputs / "plots").mkdir()
    with pytest.raises(UserError, match="--plot .* is a folder"):
        predict.main(predict_args(inputs, "--plot", str(inputs / "plots"), "--window", "1"))
    with pytest.raises(UserError, match="--annotate .*mp4, .avi or .webm"):
        predict.main(predict_args(inputs, "--annotate", str(inputs / "out.mkv")))


# --- fusion weights and swapped score files ------------------------------------------------------

@pytest.mark.parametrize("weights", [["0", "0"], ["1", "-1"], ["-1", "2"], ["nan", "1"], ["inf", "1"]])
def test_weights_that_rank_nothing_are_refused_by_predict(inputs, weights, capsys):
    # a weight outside its bound is a usage error of the parser; weights that are all 0 are refused by predict
    try:
        args = predict_args(inputs, "--weights", *weights)
    except SystemExit as stop:
        assert stop.code == 2 and "--weights" in capsys.readouterr().err
        return
    with pytest.raises(UserError, match="--weights"):
        predict.main(args)


def _score_files(tmp_path, spatial_info="spatial", motion_info="motion"):
    rng = np.random.default_rng(0)
    videos = ["Alpha_g01_c01", "Beta_g01_c01", "Gamma_g01_c01"]
    split = tmp_path / "split"
    split.mkdir(parents=True)
    (split / "classInd.txt").write_text("1 Alpha\n2 Beta\n3 Gamma\n")
    (split / "trainlist01.txt").write_text("")
    (split / "testlist01.txt").write_text("".join(f"{v.split('_')[0]}/v_{v}.avi\n" for v in videos))
    paths = {}
    for name, info in (("spatial", spatial_info), ("motion", motion_info)):
        path = tmp_path / f"{name}_video_preds.pickle"
        with open(path, "wb") as f:
            pickle.dump({v: rng.normal(size=3) for v in videos}, f)
        if info:
            save_score_info(path, {"stream": info, "recipe": "tsn"})
        paths[name] = path
    return paths, split


def fusion_args(paths, split, *extra):
    return average_fusion.get_args_parser().parse_args(
        ["--spatial", str(paths["spatial"]), "--motion", str(paths["motion"]), "--split-dir", str(split), *extra])


def test_weights_that_rank_nothing_are_refused_by_fusion(tmp_path, capsys):
    paths, split = _score_files(tmp_path)
    with pytest.raises(UserError, match="--weights"):
        average_fusion.fuse(fusion_args(paths, split, "--weights", "0", "0"))
    with pytest.raises(SystemExit):  # a negative weight is outside the parser's bound
        fusion_args(paths, split, "--weights", "1", "-1")
    assert "--weights: -1 is not a number in [0, 1e+06]" in capsys.readouterr().err


def test_swapped_score_files_are_refused_naming_both(tmp_path):
    paths, split = _score_files(tmp_path)
    swapped = {"spatial": paths["motion"], "motion": paths["spatial"]}
    with pytest.raises(UserError, match=r"motion stream's scores .* given as --spatial\n  fix: pass it as --motion"):
        average_fusion.fuse(fusion_args(swapped, split))
    report = average_fusion.fuse(fusion_args(paths, split))  # the right way round: TSN's 1 : 1.5
    assert report["weights"] == {"spatial": 1.0, "motion": 1.5}
    bare, split = _score_files(tmp_path / "bare", spatial_info=None, motion_info=None)  # no sidecars: as before
    assert average_fusion.fuse(fusion_args({"spatial": bare["motion"], "motion": bare["spatial"]}, split))


def test_a_huge_or_deeply_nested_sidecar_is_one_message(tmp_path):
    score = tmp_path / "s.pickle"
    sidecar = tmp_path / "s.json"
    sidecar.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ScoreFileError, match="nested too deeply"):
        load_score_info(score)
    with open(sidecar, "w") as f:
        f.write('{"stream": "' + "x" * (2 << 20) + '"}')
    with pytest.raises(ScoreFileError, match="bytes"):
        load_score_info(score)


# --- checkpoints whose stored settings were edited ----------------------------------------------

@pytest.mark.parametrize("settings,named", [
    ({"test_frames": 100_000_000}, "test_frames"), ({"test_frames": -5}, "test_frames"),
    ({"test_frames": "abc"}, "test_frames"), ({"input_size": 0}, "input_size"), ({"arch": "vgg"}, "arch"),
    ({"test_crops": 4}, "test_crops"), ({"test_positions": "ends"}, "test_positions"),
    ({"stack_length": 0}, "stack_length"), ({"flow_mean": float("nan")}, "flow_mean"),
])
def test_edited_checkpoint_settings_are_one_message_in_predict_and_evaluate(tmp_path, settings, named):
    path = checkpoint(tmp_path / "edited.pth.tar", **settings)
    with pytest.raises(UserError, match=f"edited.pth.tar stores settings no run can have: {named}"):
        load_stream(str(path), "spatial", torch.device("cpu"))
    args = argparse.Namespace(explicit=[], override_checkpoint_settings=False, **{
        k: None for k in engine.CHECKPOINT_SETTINGS})
    with pytest.raises(UserError, match=f"stores settings no run can have: {named}"):
        engine.apply_checkpoint_settings(args, torch.load(path, weights_only=True)["args"], str(path))


def test_class_names_that_do_not_fit_the_outputs_are_refused(tmp_path):
    path = checkpoint(tmp_path / "c.pth.tar")
    ckpt = torch.load(path, weights_only=True)
    ckpt["class_names"] = CLASSES[:2]
    torch.save(ckpt, path)
    with pytest.raises(UserError, match="2 class names for a model of 3 outputs"):
        load_stream(str(path), "spatial", torch.device("cpu"))


def test_a_sound_checkpoint_still_loads(tmp_path):
    stream = load_stream(str(checkpoint(tmp_path / "ok.pth.tar")), "spatial", torch.device("cpu"))
    assert stream.test_frames == 3 and stream.classes == CLASSES


# --- memory-sizing values --------------------------------------------------------------------------

def test_window_counts_are_known_before_the_windows_are_made():
    times = [i / 25 for i in range(250)]  # 10 s
    for window, stride in ((1.0, 0.5), (2.0, 0.3), (4.0, 4.0), (20.0, 1.0), (1.0, 0.04)):
        assert len(plan_windows(times, window, stride)) <= count_windows(times, window, stride)
    assert count_windows(times, 1.0, 1e-7) > 10**7  # what predict.py refuses, computed in no time


def test_window_frames_and_test_frames_are_bounded(inputs, capsys):
    with pytest.raises(SystemExit):
        predict.main(predict_args(inputs, "--window", "1", "--window-frames", "100000000"))
    assert "--window-frames: 100000000 is not a whole number in [1, 1000]" in capsys.readouterr().err


def test_a_class_name_with_dollars_draws_its_confusion_matrix(tmp_path):
    from scorefiles import save_scores
    split = tmp_path / "split"
    split.mkdir()
    names = ["x$\\frac$", "Beta"]
    (split / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    (split / "trainlist01.txt").write_text("")
    (split / "testlist01.txt").write_text("".join(f"{n}/v_{n}_g01_c01.avi\n" for n in names))
    scores = {f"{n}_g01_c01": np.eye(2)[i] for i, n in enumerate(names)}
    save_scores(tmp_path / "s.pickle", scores)
    save_scores(tmp_path / "m.pickle", scores)
    report = average_fusion.main(fusion_args({"spatial": tmp_path / "s.pickle", "motion": tmp_path / "m.pickle"},
                                             split, "--confusion", str(tmp_path / "c.png")))
    assert report["fusion"]["top1"] == 100.0 and (tmp_path / "c.png").stat().st_size > 1000


def test_split_lists_under_another_format_are_refused(tmp_path):
    from dataloader.splits import SplitError, load_split
    (tmp_path / "train.txt").write_text("Run/v_a.mp4 0\n")
    with pytest.raises(SplitError, match="--split-format is ucf101"):
        load_split(tmp_path, 1, "ucf101", tmp_path / "train.txt", tmp_path / "train.txt")


def test_an_uncreatable_frames_folder_is_one_message(tmp_path):
    from tools import extract_frames
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v.avi").write_bytes(b"")
    (tmp_path / "file").write_text("")
    args = extract_frames.get_args_parser().parse_args([str(tmp_path / "videos"), str(tmp_path / "file" / "out"),
                                                        "--check"])
    with pytest.raises(UserError, match="cannot create the frames folder"):
        extract_frames.main(args)


@pytest.mark.parametrize("edit", [lambda c: c.pop("stream"), lambda c: c.update(in_channels=5),
                                  lambda c: c.update(arch="resnet50")])
def test_a_checkpoint_missing_keys_or_with_a_model_unlike_its_settings_is_one_message(tmp_path, edit):
    path = checkpoint(tmp_path / "t.pth.tar")
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(UserError, match="t.pth.tar"):
        load_stream(str(path), "spatial", torch.device("cpu"))


def test_an_annotate_encoder_that_is_missing_is_refused_before_work(inputs, monkeypatch):
    import cv2

    class NoEncoder:
        def __init__(self, *args):
            pass

        def isOpened(self):
            return False

        def release(self):
            pass
    monkeypatch.setattr(cv2, "VideoWriter", NoEncoder)
    with pytest.raises(UserError, match="no encoder for .mp4"):
        predict.main(predict_args(inputs, "--annotate", str(inputs / "out.mp4")))


# --- a record never sizes memory before it is checked ----------------------------------------------

def _no_model_built(monkeypatch):
    import inference.export
    import inference.scorer

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built from an unchecked record")
    for module in (inference.scorer, inference.export):
        monkeypatch.setattr(module, "build_model", refuse)


@pytest.mark.parametrize("edit,message", [
    ({"in_channels": 400_000}, "in_channels 400000 is not a whole number in \\[1, 128\\]"),
    ({"args": {"arch": "resnet18", "stack_length": 200_000}}, "stack_length 200000 is not a whole number"),
    ({"in_channels": 40}, "its record says in_channels 40, its weights conv1.weight have 20"),
    ({"num_classes": 7}, "its record says num_classes 7, its weights fc.weight have 3"),
    ({"args": "resnet18"}, "its settings \\('args'\\) are a str"),
])
def test_a_record_is_checked_against_its_bounds_and_weights_before_any_model_is_built(tmp_path, monkeypatch, edit,
                                                                                     message):
    from tools import export
    path = checkpoint(tmp_path / "m.pth.tar", "motion")
    ckpt = torch.load(path, weights_only=True)
    ckpt.update(edit)
    torch.save(ckpt, path)
    _no_model_built(monkeypatch)
    with pytest.raises(UserError, match=message):
        load_stream(str(path), "motion", torch.device("cpu"))
    with pytest.raises(UserError, match=message):
        export.main(export.get_args_parser().parse_args([str(path), "--format", "torchscript",
                                                         "--out", str(tmp_path / "m.torchscript.pt")]))


def test_convert_weights_bounds_the_input_channels_it_builds(capsys):
    from tools import convert_weights
    for value in ("1000000", "0", "-3"):
        with pytest.raises(SystemExit):
            convert_weights.get_args_parser().parse_args(["src.pth", "out.pth", "--in-channels", value])
        assert "argument --in-channels: " in capsys.readouterr().err


@pytest.mark.parametrize("stream", ["spatial", "motion"])
def test_nan_weights_are_never_published_or_exported(tmp_path, stream):
    from tools import export, publish_model
    path = checkpoint(tmp_path / "c.pth.tar", stream)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    ckpt["optimizer"] = {}
    torch.save(ckpt, path)
    with pytest.raises(UserError, match="hold NaN or inf, e.g. layer1.0.conv1.weight"):
        publish_model.main(publish_model.get_args_parser().parse_args([str(path), "--out-dir", str(tmp_path / "p")]))
    with pytest.raises(UserError, match="hold NaN or inf"):
        export.main(export.get_args_parser().parse_args([str(path), "--format", "torchscript",
                                                         "--out", str(tmp_path / "c.torchscript.pt")]))
    assert not list((tmp_path / "p").glob("*.pth")) and not (tmp_path / "c.torchscript.pt").exists()


def test_a_published_model_given_to_resume_says_how_to_fine_tune(tmp_path):
    import spatial_cnn
    from tools import publish_model
    path = checkpoint(tmp_path / "c.pth.tar")
    publish_model.main(publish_model.get_args_parser().parse_args([str(path), "--out-dir", str(tmp_path)]))
    published = next(tmp_path.glob("spatial-resnet18-reference-*.pth"))
    with pytest.raises(UserError, match=f"(?s)is a published model .*--pretrained {published}"):
        spatial_cnn.main(spatial_cnn.parse_args(["--data-root", str(tmp_path), "--resume", str(published),
                                                 "--output-dir", str(tmp_path / "run"), "--arch", "resnet18"]))


@pytest.mark.parametrize("name", ["x" * 300, "", "..", ".hidden", "a/b", "tab\tname"])
def test_publish_names_that_are_not_plain_file_names_are_refused(tmp_path, name):
    from tools import publish_model
    path = checkpoint(tmp_path / "c.pth.tar")
    with pytest.raises(UserError, match="--name .* must be a plain file name"):
        publish_model.main(publish_model.get_args_parser().parse_args([str(path), "--name", name,
                                                                       "--out-dir", str(tmp_path / "p")]))


def test_publish_into_a_folder_that_is_a_file_or_read_only_is_one_message(tmp_path):
    from tools import publish_model
    path = checkpoint(tmp_path / "c.pth.tar")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot create --out-dir"):
        publish_model.main(publish_model.get_args_parser().parse_args([str(path), "--out-dir",
                                                                       str(tmp_path / "file" / "sub")]))
    with pytest.raises(UserError, match="is not a folder"):
        publish_model.main(publish_model.get_args_parser().parse_args([str(path), "--out-dir", str(tmp_path / "file")]))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError, match="cannot write"):
            publish_model.main(publish_model.get_args_parser().parse_args([str(path), "--out-dir", str(locked)]))


def test_a_sidecar_with_numbers_no_evaluation_writes_is_refused(tmp_path):
    from scorefiles import ScoreFileError, score_info_path
    path = tmp_path / "s.pickle"
    for text in ('{"stream": "spatial", "test_frames": NaN}', '{"stream": "spatial", "test_frames": 1e12}',
                 '{"stream": "spatial", "input_size": -3}'):
        score_info_path(path).write_text(text)
        with pytest.raises(ScoreFileError, match="a score description no evaluation writes"):
            load_score_info(path)


def test_evaluating_a_checkpoint_relabelled_or_without_its_stream_is_one_message(tmp_path):
    import spatial_cnn
    from tests.synth import make_dataset
    data = make_dataset(tmp_path / "data")
    path = checkpoint(tmp_path / "c.pth.tar", input_size=32)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"] = build_model("resnet18", 3, 3, "none").state_dict()
    ckpt.update(class_names=["Alpha", "Beta", "Gamma"])

    def evaluate(edit, name):
        torch.save({**{k: v for k, v in ckpt.items() if k not in edit.get("drop", ())}, **edit.get("set", {})},
                   tmp_path / name)
        spatial_cnn.main(spatial_cnn.parse_args(
            ["--data-root", str(data.data_root), "--split-dir", str(data.split_dir), "--evaluate", "--resume",
             str(tmp_path / name), "--output-dir", str(tmp_path / name.split(".")[0]), "--device", "cpu"]))
    with pytest.raises(UserError, match="(?s)does not fit --arch resnet34: .* weights missing"):
        evaluate({"set": {"arch": "resnet34", "args": {**ckpt["args"], "arch": "resnet34"}}}, "relabelled.pth.tar")
    with pytest.raises(UserError, match="lacks stream: not a complete checkpoint"):
        evaluate({"drop": ("stream",)}, "nostream.pth.tar")


def test_annotations_into_a_folder_that_cannot_take_them_fail_before_any_video(inputs):
    (inputs / "file").write_text("")
    with pytest.raises(UserError, match="--annotate .*out.mp4: the folder .*missing does not exist"):
        predict.main(predict_args(inputs, "--annotate", str(inputs / "missing" / "out.mp4")))
    with pytest.raises(UserError, match="cannot create --annotate"):
        predict.main(predict_args(inputs, "--annotate", str(inputs / "file" / "sub"),
                                  videos=("videos/a.avi", "videos/b.mp4")))
