"""predict.py on videos of the synthetic generator, against --evaluate on extracted frames/flow."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import motion_cnn
import predict
from inference.predictor import softmax
import spatial_cnn
from tools import compute_flow, extract_frames
from tools.make_demo_data import make_demo_data, render_video, write_video
from scorefiles import load_scores
from utils import UserError

# every test here trains or uses the tiny models (about 20 s once): end to end, so `make test-fast` leaves them out
pytestmark = [pytest.mark.filterwarnings("ignore:.*in both trainlist01 and testlist01"), pytest.mark.slow]

SIZE = ["48", "64"]
TRAIN = ["--arch", "resnet18", "--pretrained", "none", "--input-size", "40", "--batch-size", "8", "--lr", "0.01",
         "--lr-scheduler", "cosine", "--workers", "0", "--test-frames", "5", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.frozen import frozen_threads
    with frozen_threads(None):  # the frozen predictions were made from models trained so
        return train_models(tmp_path_factory.mktemp("predict"))


def train_models(root):
    """Synthetic videos -> frames -> Farneback flow -> two streams trained for a few seconds."""
    splits = make_demo_data(root / "data", seed=1, frames=20, videos_per_class=8)
    # every video in the training list, so that a few seconds of training fit them (the test is
    # about the inference pipeline, not about generalisation)
    label = {line.split()[1]: line.split()[0] for line in (splits / "classInd.txt").read_text().splitlines()}
    videos = sorted((root / "data" / "videos").glob("*/*.avi"))
    (splits / "trainlist01.txt").write_text("".join(f"{v.parent.name}/{v.name} {label[v.parent.name]}\n" for v in videos))
    assert extract_frames.main(extract_frames.get_args_parser().parse_args(
        [str(root / "data" / "videos"), str(root / "frames"), "--size", *SIZE, "--workers", "2"])) == 0
    assert compute_flow.main(compute_flow.get_args_parser().parse_args(
        [str(root / "frames"), str(root / "flow"), "--method", "farneback", "--workers", "2"])) == 0
    common = ["--split-dir", str(splits), *TRAIN]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*in both trainlist01 and testlist01")
        spatial_cnn.main(spatial_cnn.parse_args(
            ["--data-root", str(root / "frames"), "--output-dir", str(root / "spatial"), "--epochs", "6", *common]))
        motion_cnn.main(motion_cnn.parse_args(
            ["--flow-root", str(root / "flow"), "--output-dir", str(root / "motion"), "--epochs", "10", *common]))
    return root, splits


def run_predict(root, *videos, extra=()):
    args = predict.get_args_parser().parse_args(
        [*map(str, videos), "--spatial", str(root / "spatial" / "checkpoint.pth.tar"),
         "--motion", str(root / "motion" / "checkpoint.pth.tar"), "--size", *SIZE, "--flow-method", "farneback",
         "--device", "cpu", "--json", str(root / "pred.json"), *extra])
    status = predict.main(args)
    return status, json.loads((root / "pred.json").read_text())


def test_prediction_beats_each_stream_and_agrees_with_evaluate(trained):
    """What holds on any build: over all 48 videos the fused prediction is right far above chance
    (1/6) and more often than either stream alone (each sees only the colour or the direction),
    and predict.py's scores equal --evaluate's. Which single video a tiny model gets wrong
    depends on the build's float sums, so no single video's class is asserted."""
    root, splits = trained
    videos = sorted((root / "data" / "videos").glob("*/*.avi"))
    status, records = run_predict(root, *videos)
    assert status == 0 and len(records) == len(videos) == 48
    right = {"fused": 0, "spatial": 0, "motion": 0}
    for video, record in zip(videos, records):
        right["fused"] += record["topk"][0]["class"] == video.parent.name
        for stream in ("spatial", "motion"):
            right[stream] += record["streams"][stream]["topk"][0]["class"] == video.parent.name
        probabilities = [e["probability"] for e in record["topk"]]
        assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
        assert 0.5 < sum(probabilities) <= 1.0 + 1e-4
    assert right["fused"] >= len(videos) / 2 and right["fused"] > max(right["spatial"], right["motion"]), right
    # --evaluate of the saved checkpoints on the extracted frames and flow: same positions, same
    # protocol, and predict.py passes frames and flow through the same JPEG storage, so the
    # scores are equal up to float rounding (batches of another size).
    evaluated = evaluate_checkpoints(root, splits, root / "spatial" / "checkpoint.pth.tar",
                                     root / "motion" / "checkpoint.pth.tar")
    tested = [(video.stem[2:], record) for video, record in zip(videos, records)
              if video.stem[2:] in evaluated["spatial"]]
    assert len(tested) == len(evaluated["spatial"]) == 24  # the test list's videos
    for key, record in tested:
        for stream in ("spatial", "motion"):
            ours, reference = np.array(record["streams"][stream]["scores"]), evaluated[stream][key]
            np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4 * np.abs(reference).max())


def evaluate_checkpoints(root, splits, spatial, motion, tag="eval") -> dict:
    common = ["--split-dir", str(splits), *TRAIN, "--evaluate"]
    spatial_cnn.main(spatial_cnn.parse_args(
        ["--data-root", str(root / "frames"), "--output-dir", str(root / f"{tag}_s"), *common, "--resume", str(spatial)]))
    motion_cnn.main(motion_cnn.parse_args(
        ["--flow-root", str(root / "flow"), "--output-dir", str(root / f"{tag}_m"), *common, "--resume", str(motion)]))
    return {"spatial": load_scores(root / f"{tag}_s" / "spatial_video_preds.pickle"),
            "motion": load_scores(root / f"{tag}_m" / "motion_video_preds.pickle")}


def test_predict_and_evaluate_use_the_checkpoints_flow_mean(trained, tmp_path):
    """A motion checkpoint whose training used --flow-mean 0: both predict.py and --evaluate
    (without repeating the flag) normalise as it was trained."""
    root, splits = trained
    ckpt = torch.load(root / "motion" / "checkpoint.pth.tar", weights_only=True)
    ckpt["args"]["flow_mean"] = 0.0
    torch.save(ckpt, tmp_path / "mean0.pth.tar")
    video = root / "data" / "videos" / "GreenDown" / "v_GreenDown_g01_c01.avi"
    status, records = run_predict(root, video, extra=("--motion", str(tmp_path / "mean0.pth.tar")))
    evaluated = evaluate_checkpoints(root, splits, root / "spatial" / "checkpoint.pth.tar", tmp_path / "mean0.pth.tar",
                                     tag="mean0")
    ours, reference = np.array(records[0]["streams"]["motion"]["scores"]), evaluated["motion"][video.stem[2:]]
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4 * np.abs(reference).max())
    _, default = run_predict(root, video)
    assert not np.allclose(default[0]["streams"]["motion"]["scores"], ours, rtol=0.01)


def test_weights_apply_to_their_own_stream(trained):
    root, _ = trained
    video = root / "data" / "videos" / "GreenDown" / "v_GreenDown_g02_c01.avi"
    _, (only_spatial,) = run_predict(root, video, extra=("--weights", "1", "0"))
    _, (only_motion,) = run_predict(root, video, extra=("--weights", "0", "1"))
    ranking = {name: [e["class"] for e in only_spatial["streams"][name]["topk"]] for name in ("spatial", "motion")}
    assert ranking["spatial"] != ranking["motion"]  # else the test could not tell the streams apart
    assert [e["class"] for e in only_spatial["topk"]] == ranking["spatial"]
    assert [e["class"] for e in only_motion["topk"]] == ranking["motion"]


def test_unwritable_json_is_refused_before_any_video(trained, monkeypatch):
    root, _ = trained
    calls = []
    monkeypatch.setattr(predict, "predict_video", lambda *a, **k: calls.append(a))
    video = root / "data" / "videos" / "RedUp" / "v_RedUp_g01_c01.avi"
    for bad in (root / "no" / "such" / "folder" / "out.json", root):
        with pytest.raises(UserError, match="--json"):
            predict.main(predict.get_args_parser().parse_args(
                [str(video), "--spatial", str(root / "spatial" / "checkpoint.pth.tar"), "--json", str(bad)]))
    assert calls == []


def test_nan_weights_are_an_error_not_a_ranking(trained, tmp_path, capsys):
    root, _ = trained
    ckpt = torch.load(root / "spatial" / "checkpoint.pth.tar", weights_only=True)
    ckpt["model"]["fc.bias"][:] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pth.tar")
    video = root / "data" / "videos" / "RedUp" / "v_RedUp_g01_c01.avi"
    status = predict.main(predict.get_args_parser().parse_args(
        [str(video), "--spatial", str(tmp_path / "nan.pth.tar"), "--size", *SIZE, "--device", "cpu"]))
    assert status == 1 and "non-finite scores" in capsys.readouterr().err


def test_one_stream_alone(trained):
    root, _ = trained
    video = root / "data" / "videos" / "BlueDown" / "v_BlueDown_g02_c01.avi"
    args = predict.get_args_parser().parse_args([str(video), "--spatial", str(root / "spatial" / "checkpoint.pth.tar"),
                                                 "--size", *SIZE, "--device", "cpu", "--topk", "2"])
    assert predict.main(args) == 0
    args = predict.get_args_parser().parse_args([str(video.parent), "--motion", str(root / "motion" / "checkpoint.pth.tar"),
                                                 "--size", *SIZE, "--device", "cpu", "--flow-method", "farneback",
                                                 "--json", str(root / "alone.json")])
    assert predict.main(args) == 0
    records = json.loads((root / "alone.json").read_text())
    assert len(records) == 8 and all(list(r["streams"]) == ["motion"] for r in records)  # a whole folder


def test_bad_videos_are_reported_and_the_others_go_on(trained, capsys):
    root, _ = trained
    good = root / "data" / "videos" / "RedUp" / "v_RedUp_g01_c01.avi"
    broken = root / "broken.avi"
    broken.write_bytes(b"not a video at all" * 50)
    short = root / "short.avi"
    write_video(short, render_video((230, 80, 60), 1, 6, (48, 64), np.random.default_rng(0)))
    status, records = run_predict(root, broken, good, short, root / "missing.avi")
    assert status == 1
    assert [("error" in r) for r in records] == [True, False, True, True]
    assert "cannot open" in records[0]["error"] and "file not found" in records[3]["error"]
    assert "needs at least 11" in records[2]["error"]
    err = capsys.readouterr().err
    assert "3 of 4 videos failed" in err and "Traceback" not in err


def test_bad_checkpoints(trained, tmp_path):
    root, _ = trained
    video = root / "data" / "videos" / "RedUp" / "v_RedUp_g01_c01.avi"
    ckpt = torch.load(root / "motion" / "checkpoint.pth.tar", weights_only=True)
    torch.save({"epoch": 1, "state_dict": ckpt["model"], "best_prec1": 0.0, "optimizer": {}}, tmp_path / "ref.pth.tar")
    other = dict(ckpt, class_names=[f"X{i}" for i in range(6)])
    torch.save(other, tmp_path / "other.pth.tar")

    def run(*extra):
        return predict.main(predict.get_args_parser().parse_args([str(video), "--size", *SIZE, "--device", "cpu", *extra]))
    with pytest.raises(UserError, match="has no class names"):
        run("--motion", str(tmp_path / "ref.pth.tar"))
    with pytest.raises(UserError, match="different class sets .*'RedUp', 'X0'"):
        run("--spatial", str(root / "spatial" / "checkpoint.pth.tar"), "--motion", str(tmp_path / "other.pth.tar"))
    with pytest.raises(UserError, match="checkpoint of the motion stream, given as --spatial"):
        run("--spatial", str(root / "motion" / "checkpoint.pth.tar"))
    with pytest.raises(UserError, match="give --spatial"):
        run()


def test_tsn_recipe_end_to_end_train_evaluate_fuse_predict(trained, tmp_path):
    """--recipe tsn: both streams train (multi-scale crops, partial BN, 3 segments), evaluate
    with 25 positions x 10 crops, fuse with TSN's 1 : 1.5 weights taken from the score files,
    and predict.py runs each checkpoint's stored protocol, agreeing with --evaluate."""
    root, splits = trained
    import average_fusion
    common = ["--split-dir", str(splits), *TRAIN[:TRAIN.index("--test-frames")], "--device", "cpu", "--recipe", "tsn",
              "--epochs", "1"]
    spatial_cnn.main(spatial_cnn.parse_args(
        ["--data-root", str(root / "frames"), "--output-dir", str(tmp_path / "spatial"), *common]))
    motion_cnn.main(motion_cnn.parse_args(
        ["--flow-root", str(root / "flow"), "--output-dir", str(tmp_path / "motion"), *common]))
    ckpt = torch.load(tmp_path / "motion" / "checkpoint.pth.tar", weights_only=True)
    assert (ckpt["args"]["recipe"], ckpt["args"]["test_frames"], ckpt["args"]["test_crops"]) == ("tsn", 25, 10)

    report = average_fusion.main(average_fusion.get_args_parser().parse_args(
        ["--spatial", str(tmp_path / "spatial" / "spatial_video_preds.pickle"),
         "--motion", str(tmp_path / "motion" / "motion_video_preds.pickle"), "--split-dir", str(splits)]))
    assert report["weights"] == {"spatial": 1.0, "motion": 1.5}

    video = root / "data" / "videos" / "BlueUp" / "v_BlueUp_g01_c01.avi"
    status, (record,) = run_predict(tmp_path, video, extra=(
        "--spatial", str(tmp_path / "spatial" / "checkpoint.pth.tar"),
        "--motion", str(tmp_path / "motion" / "checkpoint.pth.tar")))
    assert status == 0
    for stream in ("spatial", "motion"):  # the training run's own test pass: 25 positions x 10 crops
        evaluated = load_scores(tmp_path / stream / f"{stream}_video_preds.pickle")[video.stem[2:]]
        ours = np.array(record["streams"][stream]["scores"])
        np.testing.assert_allclose(ours, evaluated, rtol=0, atol=1e-4 * np.abs(evaluated).max())
    spatial, motion = (np.array(record["streams"][s]["scores"]) / 25 for s in ("spatial", "motion"))
    fused = softmax((spatial + 1.5 * motion) / 2.5)
    assert record["topk"][0]["probability"] == pytest.approx(float(fused.max()), abs=1e-5)


def test_short_videos_give_the_scores_recorded_before_streaming(trained):
    """tests/data/predict_record.json was written by the whole-video predict.py, before it
    streamed its frames: the same checkpoints (trained identically) give the same scores."""
    from tests.frozen import check_record, frozen_threads
    from tests.predict_record import RECORD, REGENERATE, load_record, predict_scores
    record, recorded = load_record()
    check_record(record, RECORD, REGENERATE)  # the numbers hold only where they were written
    root, _ = trained
    with frozen_threads(record):
        now = predict_scores(root)
    assert now.keys() == recorded.keys()
    for video, streams in recorded.items():
        for stream, scores in streams.items():
            np.testing.assert_allclose(now[video][stream], scores, rtol=1e-5, atol=1e-5, err_msg=f"{video} {stream}")


# --- long videos: streaming, timeline, outputs -----------------------------------------------

def write_long_video(path, colours_and_directions, frames_each, seed=0):
    """One generated action after the other: ``frames_each`` frames of each (colour, direction)."""
    rng = np.random.default_rng(seed)
    parts = [render_video(colour, direction, frames_each, (48, 64), rng) for colour, direction in colours_and_directions]
    write_video(path, np.concatenate(parts))
    return path


def loaded_streams(root):
    device = torch.device("cpu")
    return [predict.load_stream(str(root / "spatial" / "checkpoint.pth.tar"), "spatial", device),
            predict.load_stream(str(root / "motion" / "checkpoint.pth.tar"), "motion", device)]


def predict_args(root, video, *extra):
    args = predict.get_args_parser().parse_args(
        [str(video), "--spatial", str(root / "spatial" / "checkpoint.pth.tar"), "--motion",
         str(root / "motion" / "checkpoint.pth.tar"), "--size", *SIZE, "--flow-method", "farneback",
         "--device", "cpu", "--workers", "1", *extra])
    predict.check_args(args)
    return args


def test_peak_memory_does_not_grow_with_the_video(trained, tmp_path):
    """1,000 and 4,000 frames, whole video and a timeline: the extra 3,000 frames would cost
    27.6 MB to hold (48x64x3 bytes each); the peak grows by far less."""
    import tracemalloc
    root, _ = trained
    red_up = ((230, 80, 60), -1)
    videos = {n: write_long_video(tmp_path / f"long{n}.avi", [red_up] * (n // 100), 100) for n in (1000, 4000)}
    streams, device = loaded_streams(root), torch.device("cpu")
    flow_of = predict.FlowFunction("farneback", device, 1)
    for extra in ([], ["--window", "8", "--stride", "4"]):
        peaks = {}
        for n, video in videos.items():
            args = predict_args(root, video, *extra)
            tracemalloc.start()
            record = predict.predict_video(video, streams, [1.0, 1.0], flow_of, args, device)
            peaks[n] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert record["frames"] == n
        holding = 3000 * 48 * 64 * 3
        assert peaks[4000] - peaks[1000] < holding / 10, (extra, peaks)
        assert peaks[4000] < 40e6, (extra, peaks)  # the stated bound: a few tens of MB at 48x64, any length


def two_classes_the_model_knows(root, tmp_path):
    """(name, (colour, direction)) of two classes whose 100-frame generated videos the tiny models
    classify right: which ones they get right depends on the build's float sums, the timeline
    logic does not."""
    from tools.make_demo_data import demo_classes
    known = []
    for name, colour, direction in demo_classes():
        video = write_long_video(tmp_path / f"{name}.avi", [(colour, direction)], 100, seed=len(known))
        _, (record,) = run_predict(root, video)
        if record["topk"][0]["class"] == name:
            known.append((name, (colour, direction)))
    assert len(known) >= 2, f"the tiny models get fewer than 2 of 6 classes right: {known}"
    return known[0], known[-1]


def test_timeline_finds_the_boundary_between_two_actions(trained, tmp_path):
    root, _ = trained
    (first, first_action), (second, second_action) = two_classes_the_model_knows(root, tmp_path)
    video = write_long_video(tmp_path / "two.avi", [first_action] * 2 + [second_action] * 2, 50)
    args = predict_args(root, video, "--window", "1", "--stride", "0.5", "--json", str(tmp_path / "t.json"),
                        "--csv", str(tmp_path / "t.csv"), "--plot", str(tmp_path / "t.png"),
                        "--annotate", str(tmp_path / "t.mp4"))
    assert predict.main(args) == 0
    (record,) = json.loads((tmp_path / "t.json").read_text())
    windows = record["windows"]
    boundary = 100 / 25  # seconds: frame 100 at 25 fps, from the container's timestamps
    tops = [w["topk"][0]["class"] for w in windows]
    assert tops[0] == first and tops[-1] == second, tops
    change = next(w for w, top in zip(windows, tops) if top != first)
    assert abs(change["start"] - boundary) <= 1.0, (change, tops)  # within one window of the truth
    assert windows[0]["start"] == 0.0 and windows[-1]["end"] == pytest.approx(8.0)
    assert set(windows[0]["streams"]) == {"spatial", "motion"} and len(windows[0]["topk"]) == 5
    assert (tmp_path / "t.png").stat().st_size > 1000 and (tmp_path / "t.csv").read_text().count("\n") == 1 + 5 * len(
        windows)
    import cv2
    capture = cv2.VideoCapture(str(tmp_path / "t.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 200
    capture.release()


def test_overlapping_windows_compute_each_flow_pair_once(trained, tmp_path, monkeypatch):
    from inference import scorer
    from inference.windows import plan_motion
    root, _ = trained
    video = write_long_video(tmp_path / "v.avi", [((60, 170, 40), 1)] * 4, 50)
    calls = []
    original = scorer.FlowFunction.__call__

    def counting(self, pairs):
        calls.extend(id(a) for a, _ in pairs)
        return original(self, pairs)
    monkeypatch.setattr(scorer.FlowFunction, "__call__", counting)
    args = predict_args(root, video, "--window", "2", "--stride", "0.5", "--json", str(tmp_path / "o.json"))
    assert predict.main(args) == 0
    (record,) = json.loads((tmp_path / "o.json").read_text())
    times = [i / 25 for i in range(200)]
    windows = predict.plan_windows(times, 2.0, 0.5) + predict.plan_windows(times)
    positions = loaded_streams(root)[1].test_frames  # the checkpoint's protocol
    motion = plan_motion(windows, [positions] * len(windows), 10, 200)
    reads = sum(len(stack) for window in motion.inputs for stack in window)
    assert len(calls) == record["flow_pairs"] == len(motion.last_use) < reads / 3


def test_bad_timeline_input(trained, tmp_path, capsys):
    root, _ = trained
    video = write_long_video(tmp_path / "short.avi", [((230, 80, 60), -1)], 40)
    for bad in (["--window", "2", "--stride", "0"], ["--window", "-1"]):  # outside the flags' bounds
        with pytest.raises(SystemExit):
            predict_args(root, video, *bad)
        error = capsys.readouterr().err
        assert "argument --window" in error or "argument --stride" in error
    for bad in (["--stride", "1"], ["--csv", "x.csv"]):  # a timeline flag without --window
        with pytest.raises(UserError, match="--window|--stride"):
            predict_args(root, video, *bad)
    args = predict_args(root, video, "--window", "60", "--stride", "10", "--json", str(tmp_path / "w.json"))
    assert predict.main(args) == 0
    (record,) = json.loads((tmp_path / "w.json").read_text())
    assert len(record["windows"]) == 1 and record["windows"][0]["end"] == pytest.approx(1.6)  # the whole video


def test_a_video_broken_partway_keeps_what_was_decoded(trained, tmp_path, capsys):
    root, _ = trained
    video = write_long_video(tmp_path / "whole.avi", [((230, 80, 60), -1)] * 3, 50)
    data = video.read_bytes()
    broken = tmp_path / "broken.avi"
    broken.write_bytes(data[: len(data) * 2 // 3])  # the file ends a third early
    args = predict_args(root, broken, "--json", str(tmp_path / "b.json"))
    assert predict.main(args) == 0
    (record,) = json.loads((tmp_path / "b.json").read_text())
    assert 50 < record["frames"] < 150 and record["decode_stopped_at"] > 1.0
    assert "decoding stopped at" in capsys.readouterr().err


def test_a_timeline_too_fine_to_plan_is_refused_with_the_bound(trained, tmp_path):
    root, _ = trained
    video = write_long_video(tmp_path / "v.avi", [((230, 80, 60), -1)], 50)
    args = predict_args(root, video, "--window", "1", "--stride", "0.0000001", "--json", str(tmp_path / "b.json"))
    assert predict.main(args) == 1  # the video fails, with the bound; nothing was planned
    (record,) = json.loads((tmp_path / "b.json").read_text())
    assert "more than the bound 2000000" in record["error"] and "--stride" in record["error"]


def test_the_plan_bound_counts_every_window_s_test_positions(trained, tmp_path, monkeypatch):
    """About 5,000 windows, each of 1,000 positions: fewer windows than the bound, but 5 million
    inputs to plan, which the bound refuses (counting windows alone would let them through)."""
    root, _ = trained

    def never(*args, **kwargs):
        raise AssertionError("the windows were planned before the bound was checked")
    import inference.predictor
    monkeypatch.setattr(inference.predictor, "plan_windows", never)
    video = write_long_video(tmp_path / "v.avi", [((230, 80, 60), -1)], 50)
    args = predict_args(root, video, "--window", "1", "--stride", "0.0002", "--window-frames", "1000",
                        "--json", str(tmp_path / "b.json"))
    assert predict.main(args) == 1
    (record,) = json.loads((tmp_path / "b.json").read_text())
    assert "windows x their test positions" in record["error"] and "more than the bound 2000000" in record["error"]


def test_a_published_model_predicts_through_torch_hub_as_predict_py_does(trained, tmp_path, monkeypatch):
    from pathlib import Path

    from tools import publish_model
    root, splits = trained
    published = {}
    for stream in ("spatial", "motion"):
        ckpt = root / stream / "checkpoint.pth.tar"
        assert publish_model.main(publish_model.get_args_parser().parse_args(
            [str(ckpt), "--out-dir", str(tmp_path / "pub")])) == 0
        (path,) = (tmp_path / "pub").glob(f"{stream}-resnet18-reference-*.pth")
        saved = torch.load(path, weights_only=True)
        assert "optimizer" not in saved and "rng" not in saved and saved["class_names"]
        assert path.stat().st_size < ckpt.stat().st_size
        published[stream] = path
    video = root / "data" / "videos" / "GreenDown" / "v_GreenDown_g01_c01.avi"
    _, (expected,) = run_predict(root, video)
    # torch.hub from this folder; the checkpoints by URL, found in torch.hub's cache (no network here)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    for path in published.values():
        (tmp_path / "hub" / "checkpoints" / path.name).write_bytes(path.read_bytes())
    urls = {s: f"https://models.example.invalid/{p.name}" for s, p in published.items()}
    predictor = torch.hub.load(str(Path(__file__).resolve().parent.parent), "two_stream", source="local",
                               spatial=urls["spatial"], motion=urls["motion"], size=[48, 64],
                               flow_method="farneback")
    try:
        record = predictor(video)
    finally:
        predictor.close()
    for stream in ("spatial", "motion"):
        np.testing.assert_allclose(record["streams"][stream]["scores"], expected["streams"][stream]["scores"],
                                   rtol=0, atol=1e-5)
    assert record["topk"][0]["class"] == expected["topk"][0]["class"]
    # the published files by their local paths
    local = torch.hub.load(str(Path(__file__).resolve().parent.parent), "two_stream", source="local",
                           spatial=str(published["spatial"]), motion=str(published["motion"]), size=[48, 64],
                           flow_method="farneback")
    try:
        assert local(video)["streams"]["motion"]["scores"] == record["streams"]["motion"]["scores"]
    finally:
        local.close()
    # a cached file whose hash does not match its name is refused, not used
    damaged = tmp_path / "hub" / "checkpoints" / published["spatial"].name
    damaged.write_bytes(damaged.read_bytes() + b"x")
    with pytest.raises(UserError, match="sha256 does not start with"):
        predict.Predictor(spatial=urls["spatial"])
    # the published file evaluates as the training checkpoint does
    evaluated = evaluate_checkpoints(root, splits, published["spatial"], published["motion"], tag="pub")
    original = evaluate_checkpoints(root, splits, root / "spatial" / "checkpoint.pth.tar",
                                    root / "motion" / "checkpoint.pth.tar", tag="orig")
    for stream in ("spatial", "motion"):
        for key, scores in original[stream].items():
            np.testing.assert_array_equal(evaluated[stream][key], scores)


@pytest.mark.parametrize("fmt,backend", [("onnx", "onnxruntime"), ("torchscript", "torchscript")])
def test_exported_streams_predict_as_the_checkpoints_do(trained, tmp_path, fmt, backend):
    pytest.importorskip("onnxruntime")
    from inference.export import EXPORT_SUFFIXES
    from tests.test_export import run_export
    root, _ = trained
    exported = {}
    for stream in ("spatial", "motion"):
        exported[stream] = tmp_path / f"{stream}{EXPORT_SUFFIXES[fmt]}"
        assert run_export(str(root / stream / "checkpoint.pth.tar"), "--format", fmt,
                          "--out", str(exported[stream])) == 0
    videos = [root / "data" / "videos" / name for name in ("GreenDown/v_GreenDown_g01_c01.avi",
                                                           "RedUp/v_RedUp_g02_c01.avi")]
    _, expected = run_predict(root, *videos)
    _, got = run_predict(root, *videos, extra=("--spatial", str(exported["spatial"]), "--motion",
                                               str(exported["motion"]), "--backend", backend))
    for want, have in zip(expected, got):
        for stream in ("spatial", "motion"):
            scores, reference = np.array(have["streams"][stream]["scores"]), np.array(want["streams"][stream]["scores"])
            assert np.abs(scores - reference).max() <= 1e-4 * np.abs(reference).max()
        assert [e["class"] for e in have["topk"]] == [e["class"] for e in want["topk"]]


def test_predict_scores_at_the_frame_size_the_checkpoints_were_trained_on(trained, tmp_path):
    """The checkpoints record the size of the frames they were trained on (48x64 here): without
    --size, predict.py resizes to it, as with --size given; annotations keep the video's size."""
    root, _ = trained
    video = write_long_video(tmp_path / "v.avi", [((230, 80, 60), -1)], 20)
    assert torch.load(root / "spatial" / "checkpoint.pth.tar", weights_only=True)["frame_size"] == [48, 64]
    common = [str(video), "--spatial", str(root / "spatial" / "checkpoint.pth.tar"), "--motion",
              str(root / "motion" / "checkpoint.pth.tar"), "--flow-method", "farneback", "--device", "cpu",
              "--workers", "1"]
    records = {}
    for name, extra in (("default", []), ("given", ["--size", *SIZE])):
        args = predict.get_args_parser().parse_args([*common, *extra, "--json", str(tmp_path / f"{name}.json")])
        assert predict.main(args) == 0
        (records[name],) = json.loads((tmp_path / f"{name}.json").read_text())
    assert records["default"]["frame_size"] == [48, 64]
    assert records["default"]["streams"] == records["given"]["streams"]
