"""Data layer: split lists, video index, sampling, datasets, loaders."""
from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dataloader import (LAYOUTS, FrameReadError, MotionDataset, SpatialDataset, SplitError, TrainSampler,
                        build_loader, holdout_groups, index_videos, load_split, resolve_layout,
                        segment_positions, random_start, stack_frames, stream_sources, evaluation_positions)
from dataloader.index import FrameCounter, build_index
from dataloader.transforms import flow_to_tensor
from tests.synth import make_dataset, save, write_split
from utils import UserError

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "ucf101"


def real_frame_counts() -> dict[str, int]:
    path = SHARED / "frame_counts.csv"
    if not path.exists():
        pytest.skip("../shared/ucf101/frame_counts.csv is not beside this checkout")
    with open(path) as f:
        return {row["video"]: int(row["frames"]) for row in csv.DictReader(f)}


# --- split lists -------------------------------------------------------------------------

@pytest.mark.parametrize("split,train,test", [(1, 9537, 3783), (2, 9586, 3734), (3, 9624, 3696)])
def test_shipped_ucf101_splits(split, train, test):
    s = load_split(split=split)
    assert s.num_classes == 101 and (len(s.train), len(s.test)) == (train, test)
    assert s.classes[0] == "ApplyEyeMakeup" and s.classes[-1] == "YoYo"
    assert {r.label for r in s.train} == set(range(101)) == {r.label for r in s.test}
    assert s.train[0].key == "ApplyEyeMakeup_g08_c01" if split == 1 else True


def test_handstand_pushups_quirk():
    s = load_split(split=1)
    videos = [r for r in s.test if r.class_name == "HandstandPushups"]
    assert videos and all(r.name.startswith("v_HandStandPushups_") for r in videos)
    assert videos[0].key == "HandstandPushups_g01_c01"  # score-file key: the folder's spelling
    assert videos[0].folder_candidates() == ["v_HandStandPushups_g01_c01", "v_HandstandPushups_g01_c01"]
    # the real frame counts use the folder spelling; every test video must be found there
    counts = real_frame_counts()
    for r in s.train + s.test:
        assert any(name in counts for name in r.folder_candidates()), r.name


@pytest.mark.parametrize("spelling", ["v_HandStandPushups_g01_c01", "v_HandstandPushups_g01_c01"])
def test_index_finds_either_handstand_spelling(tmp_path, spelling):
    classes = ["HandstandPushups"]
    write_split(tmp_path / "s", classes, [("HandstandPushups", "v_HandStandPushups_g02_c01")],
                [("HandstandPushups", "v_HandStandPushups_g01_c01")])
    for i in range(1, 4):
        save(tmp_path / "f" / spelling / f"frame{i:06d}.jpg", np.zeros((8, 8, 3), np.uint8))
    split = load_split(tmp_path / "s", 1)
    found, missing = build_index(split.test, [(tmp_path / "f", LAYOUTS["ucf101"].rgb)])
    assert len(found) == 1 and not missing and found[0].frames == 3
    assert found[0].sources[0].folder == spelling


def test_crlf_and_blank_lines_parse_like_lf(tmp_path):
    train = [("Alpha", "v_Alpha_g01_c01"), ("Beta", "v_Beta_g01_c01")]
    test = [("Beta", "v_Beta_g02_c01")]
    write_split(tmp_path / "lf", ["Alpha", "Beta"], train, test)
    write_split(tmp_path / "crlf", ["Alpha", "Beta"], train, test, newline="\r\n\r\n")
    assert load_split(tmp_path / "lf") == load_split(tmp_path / "crlf")
    s = load_split(tmp_path / "crlf")
    assert [r.label for r in s.train] == [0, 1] and s.test[0].label == 1
    assert s.test[0].key == "Beta_g02_c01" and s.test[0].group == "g02"


def test_a_byte_order_mark_is_not_part_of_the_first_class(tmp_path):
    write_split(tmp_path / "s", ["RedUp", "Beta"], [("RedUp", "v_RedUp_g01_c01")], [("Beta", "v_Beta_g02_c01")])
    for name in ("classInd.txt", "trainlist01.txt"):
        path = tmp_path / "s" / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    split = load_split(tmp_path / "s")
    assert split.classes == ["RedUp", "Beta"] and split.train[0].class_name == "RedUp"


def test_uneven_or_missing_flow_folders_are_named(tmp_path, capsys):
    d = make_dataset(tmp_path, frames=14)
    split = load_split(d.split_dir)
    sources = stream_sources("motion", LAYOUTS["ucf101"], flow_root=d.flow_root)
    for frame in sorted((d.flow_root / "v" / d.test[0]).iterdir())[11:]:
        frame.unlink()  # y keeps 11 of 13 flow frames
    videos = index_videos(split.test, "test", sources, min_frames=10)
    assert videos[0].frames == 11
    assert f"{d.test[0]} (x 13, y 11)" in capsys.readouterr().out
    import shutil
    shutil.rmtree(d.flow_root / "v" / d.test[1])
    with pytest.raises(UserError, match=f"{d.test[1]}: flow y folder not found \\({d.flow_root / 'v' / d.test[1]}\\)"):
        index_videos(split.test, "test", sources, min_frames=10)


def test_the_score_file_readers_import_no_torch():
    code = "import sys, average_fusion, dataloader.splits, utils; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr


@pytest.mark.parametrize("bad_line,expected", [
    ("Delta/v_Delta_g01_c01.avi 1", "unknown class 'Delta'"),
    ("Alpha/v_Alpha_g01_c01.avi 1", "listed twice (first on line 1)"),
    ("Alpha v_Alpha_g03_c01.avi", "expected 'ClassName/video.avi [label]'"),
    ("Alpha/v_Alpha_g03_c01.avi x", "label 'x' is not a number"),
    ("Alpha/v_Alpha_g03_c01.avi 2", "disagrees with class folder 'Alpha'"),
    ("Alpha/v_Alpha_g03_c01.avi 1 extra", "expected"),
])
def test_bad_train_lines_name_file_and_line(tmp_path, bad_line, expected):
    write_split(tmp_path, ["Alpha", "Beta"], [("Alpha", "v_Alpha_g01_c01")], [("Beta", "v_Beta_g02_c01")])
    path = tmp_path / "trainlist01.txt"
    path.write_text(path.read_text() + "\n" + bad_line + "\n")
    with pytest.raises(SplitError) as err:
        load_split(tmp_path)
    assert f"{path}:3:" in str(err.value) and expected in str(err.value)


def test_bad_class_index_and_missing_files(tmp_path):
    write_split(tmp_path, ["Alpha"], [("Alpha", "v_Alpha_g01_c01")], [("Alpha", "v_Alpha_g02_c01")])
    (tmp_path / "classInd.txt").write_text("1 Alpha\n3 Beta\n")
    with pytest.raises(SplitError, match="1..2 without gaps"):
        load_split(tmp_path)
    (tmp_path / "classInd.txt").write_text("1 Alpha\nBeta\n")
    with pytest.raises(SplitError, match=r"classInd.txt:2: expected"):
        load_split(tmp_path)
    with pytest.raises(SplitError, match="split folder not found"):
        load_split(tmp_path / "nope")
    (tmp_path / "classInd.txt").write_text("1 Alpha\n")
    with pytest.raises(SplitError, match="trainlist02.txt"):
        load_split(tmp_path, split=2)


def test_holdout_takes_whole_groups():
    s = load_split(split=1)
    train, val = holdout_groups(s.train, 3)
    assert {r.group for r in val} == {"g23", "g24", "g25"}
    assert not {r.group for r in train} & {r.group for r in val}
    assert len(train) + len(val) == len(s.train) and {r.label for r in val} == set(range(101))


# --- sampling at real scale ----------------------------------------------------------------

@pytest.mark.parametrize("count", [19, 25])
def test_every_position_of_every_real_video_is_in_range(count):
    counts = real_frame_counts()
    assert len(counts) == 13320 and min(counts.values()) == 28
    rng = random.Random(0)
    L = 10
    for name, n in counts.items():
        for flow_frames in (n, n - 1):  # RGB frames, and flow frames (one fewer)
            positions = evaluation_positions(flow_frames, count)
            assert len(positions) == count
            assert all(1 <= p and p + L - 1 <= flow_frames for p in positions), (name, positions)
            start = random_start(flow_frames, rng)
            assert 1 <= start and max(stack_frames(start)) <= flow_frames
            segs = segment_positions(flow_frames, 3, rng)
            m = flow_frames - L + 1
            for k, p in enumerate(segs):  # each in its own third of the valid range
                assert 1 + k * m // 3 <= p <= (k + 1) * m // 3, (name, segs)


def test_test_positions_match_the_reference():
    # reference: interval = (n-10+1)//19, positions 1 + k*interval
    n = 163
    interval = (n - 10 + 1) // 19
    assert evaluation_positions(n) == [1 + k * interval for k in range(19)]
    assert evaluation_positions(28) == list(range(1, 20))
    short = evaluation_positions(12, 19)  # 3 valid starts: spread, never out of range
    assert len(short) == 19 and set(short) == {1, 2, 3}
    assert evaluation_positions(5, 4) == [1, 1, 1, 1]  # spatial stream, shorter than a stack
    # docs/data.md's example: a 28-frame video has 27 flow frames, so the streams differ slightly
    assert evaluation_positions(28 - 1) == [1, 1, *range(2, 19)]


def test_stack_order_reference_rotation():
    assert stack_frames(5) == list(range(5, 15))
    assert stack_frames(5, reference_order=True) == list(range(6, 15)) + [5]


def test_train_sampler_is_a_function_of_seed_and_epoch():
    a, b = TrainSampler(10, seed=3), TrainSampler(10, seed=3)
    a.set_epoch(2)
    b.set_epoch(2, samples_done=4)
    full = list(a)
    assert sorted(i for i, _ in full) == list(range(10)) and list(b) == full[4:]
    a.set_epoch(3)
    assert list(a) != full
    shards = [list(TrainSampler(7, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4
    assert {i for s in shards for i, _ in s} == set(range(7))


@pytest.mark.parametrize("world_size", [2, 3])
def test_mid_epoch_resume_under_torchrun_skips_each_ranks_share(world_size):
    """``samples_done`` counts all ranks' samples: after k steps of batch B on W ranks each rank
    skips k*B of its own items, so the samples seen before and after the resume are the epoch."""
    batch, steps = 2, 3
    for rank in range(world_size):
        full = TrainSampler(40, seed=5, rank=rank, world_size=world_size)
        full.set_epoch(1)
        resumed = TrainSampler(40, seed=5, rank=rank, world_size=world_size)
        resumed.set_epoch(1, samples_done=steps * batch * world_size)
        items = list(full)
        assert list(resumed) == items[steps * batch:] and len(resumed) == len(items) - steps * batch
    done = TrainSampler(40, seed=5, rank=0, world_size=world_size)
    done.set_epoch(1, samples_done=done.epoch_samples)  # stopped during the epoch's evaluation
    assert list(done) == [] and len(done) == 0


# --- index ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout,class_folder", [("ucf101", False), ("tsn", False), ("tsn", True)])
def test_index_both_layouts(tmp_path, layout, class_folder):
    d = make_dataset(tmp_path, layout=layout, class_folder=class_folder, frames=12)
    split = load_split(d.split_dir)
    lay = resolve_layout(layout)
    rgb = index_videos(split.train, "train", stream_sources("spatial", lay, data_root=d.data_root))
    flow = index_videos(split.test, "test", stream_sources("motion", lay, flow_root=d.flow_root))
    assert len(rgb) == len(split.train) and all(v.frames == 12 for v in rgb)
    assert len(flow) == len(split.test) and all(v.frames == 11 for v in flow)


def test_free_template(tmp_path):
    for i in range(1, 6):
        save(tmp_path / "f" / "Alpha" / "v_Alpha_g01_c01" / f"im{i}.jpeg", np.zeros((8, 8, 3), np.uint8))
    write_split(tmp_path / "s", ["Alpha"], [("Alpha", "v_Alpha_g01_c01")], [("Alpha", "v_Alpha_g01_c01")])
    (tmp_path / "s" / "testlist01.txt").write_text("Alpha/v_Alpha_g02_c01.avi\n")
    split = load_split(tmp_path / "s")
    layout = resolve_layout("ucf101", rgb="{class}/{video}/im{idx}.jpeg")
    (video,) = index_videos(split.train, "train", stream_sources("spatial", layout, data_root=tmp_path / "f"))
    assert video.frames == 5 and video.sources[0].path(3).endswith("Alpha/v_Alpha_g01_c01/im3.jpeg")
    with pytest.raises(UserError, match="must contain"):
        resolve_layout("ucf101", rgb="{video}/frame.jpg")


def test_flow_uses_the_smaller_of_u_and_v(tmp_path):
    d = make_dataset(tmp_path, frames=14)
    name = d.test[0]
    os.remove(d.flow_root / "v" / name / "frame000013.jpg")
    split = load_split(d.split_dir)
    videos = index_videos(split.test, "test", stream_sources("motion", LAYOUTS["ucf101"], flow_root=d.flow_root))
    assert {v.record.name: v.frames for v in videos}[name] == 12


def test_index_cache_is_plain_csv_and_follows_changes(tmp_path):
    d = make_dataset(tmp_path, frames=12)
    split = load_split(d.split_dir)
    counter = FrameCounter(d.data_root, LAYOUTS["ucf101"].rgb, tmp_path / "cache")
    first = counter.count(split.test)
    (cache,) = (tmp_path / "cache").glob("frame_index_*.csv")
    rows = list(csv.DictReader(open(cache)))
    assert {r["video"] for r in rows} == set(d.test) and all(r["frames"] == "12" for r in rows)
    # cached counts are used as they are while folders are unchanged ...
    with open(cache, "w") as f:
        w = csv.writer(f)
        w.writerow(["video", "folder", "mtime_ns", "frames"])
        for r in rows:
            w.writerow([r["video"], r["folder"], r["mtime_ns"], 99])
    assert all(s.frames == 99 for s in counter.count(split.test).values())
    # ... and a folder that changed is recounted
    save(d.data_root / d.test[0] / "frame000013.jpg", np.zeros((8, 8, 3), np.uint8))
    os.utime(d.data_root / d.test[0], ns=(1, 1))
    again = counter.count(split.test)
    assert again[d.test[0]].frames == 13 and first[d.test[0]].frames == 12


def test_missing_videos_are_reported_and_stop_the_run(tmp_path):
    d = make_dataset(tmp_path)
    import shutil
    shutil.rmtree(d.data_root / d.test[0])
    split = load_split(d.split_dir)
    sources = stream_sources("spatial", LAYOUTS["ucf101"], data_root=d.data_root)
    with pytest.raises(UserError) as err:
        index_videos(split.test, "test", sources)
    message = str(err.value)
    assert f"1 of {len(d.test)} test videos cannot be used under" in message
    assert f"{d.test[0]}: frame folder not found ({d.data_root / d.test[0]})" in message
    assert "--allow-missing" in message
    assert len(index_videos(split.test, "test", sources, allow_missing=True)) == len(d.test) - 1
    with pytest.raises(UserError, match="--data-root folder not found"):
        stream_sources("spatial", LAYOUTS["ucf101"], data_root=tmp_path / "nope")


# --- datasets ------------------------------------------------------------------------------

def _motion_video(tmp_path, n=12, size=32):
    """Flow frames with per-frame values and distinct left/right halves."""
    name = "v_Alpha_g01_c01"
    for i in range(1, n + 1):
        x = np.empty((size, size), np.uint8)
        x[:, : size // 2], x[:, size // 2:] = 10 + 10 * i, 250 - 10 * i
        y = np.empty((size, size), np.uint8)
        y[:, : size // 2], y[:, size // 2:] = 60 + 5 * i, 200 - 5 * i
        save(tmp_path / "flow" / "u" / name / f"frame{i:06d}.jpg", x)
        save(tmp_path / "flow" / "v" / name / f"frame{i:06d}.jpg", y)
    write_split(tmp_path / "s", ["Alpha"], [("Alpha", name)], [("Alpha", name)])
    (tmp_path / "s" / "testlist01.txt").write_text("")
    split = load_split(tmp_path / "s")
    return index_videos(split.train, "train", stream_sources("motion", LAYOUTS["ucf101"], flow_root=tmp_path / "flow"))


def test_flow_interleaving_and_flip_negates_x():
    xs = [np.full((2, 3), 10 * i, np.uint8) for i in range(1, 4)]
    ys = [np.full((2, 3), 10 * i + 5, np.uint8) for i in range(1, 4)]
    stack = flow_to_tensor(xs, ys)
    assert stack[:, 0, 0].tolist() == [10, 15, 20, 25, 30, 35]
    flipped = flow_to_tensor(xs, ys, flipped=True)
    assert flipped[:, 0, 0].tolist() == [245, 15, 235, 25, 225, 35]


def test_motion_dataset_flip_mirrors_and_negates_x(tmp_path):
    videos = _motion_video(tmp_path)
    ds = MotionDataset(videos, train=True, input_size=32)
    seen_flip = {False: 0, True: 0}
    for seed in range(40):
        (stack,), label = ds[(0, seed)]
        assert stack.shape == (20, 32, 32) and stack.dtype == torch.uint8 and label == 0
        left, right = stack[:, 16, 4].int(), stack[:, 16, 27].int()
        flipped = bool(left[1] > 128)  # y on the left: 60 + 5i unflipped, 200 - 5i flipped
        seen_flip[flipped] += 1
        start = round((245 - right[0].item()) / 10 if flipped else (left[0].item() - 10) / 10)
        for k in range(10):
            i = start + k
            x_left, x_right, y_left, y_right = 10 + 10 * i, 250 - 10 * i, 60 + 5 * i, 200 - 5 * i
            if flipped:  # mirrored, and x negated (255 - x)
                x_left, x_right, y_left, y_right = 255 - x_right, 255 - x_left, y_right, y_left
            assert abs(left[2 * k] - x_left) <= 3 and abs(right[2 * k] - x_right) <= 3
            assert abs(left[2 * k + 1] - y_left) <= 3 and abs(right[2 * k + 1] - y_right) <= 3
        assert 1 <= start <= 3
    assert seen_flip[True] and seen_flip[False]


def test_motion_dataset_reference_order(tmp_path):
    videos = _motion_video(tmp_path)
    plain = MotionDataset(videos, train=False, input_size=32)
    ref = MotionDataset(videos, train=False, input_size=32, reference_order=True)
    a, _, _ = plain[0]
    b, _, _ = ref[0]
    assert torch.equal(b[:18], a[2:]) and torch.equal(b[18:], a[:2])


def test_spatial_dataset_shapes_and_test_items(tmp_path):
    d = make_dataset(tmp_path, frames=30, size=(40, 52))
    split = load_split(d.split_dir)
    sources = stream_sources("spatial", LAYOUTS["ucf101"], data_root=d.data_root)
    train = SpatialDataset(index_videos(split.train, "train", sources), train=True, input_size=32)
    frames, label = train[(1, 7)]
    assert frames.shape == (3, 3, 32, 32) and frames.dtype == torch.uint8 and label == 0
    assert torch.equal(train[(1, 7)][0], frames)  # a seed fixes the sample
    test = SpatialDataset(index_videos(split.test, "test", sources), train=False, input_size=24, test_frames=5)
    assert len(test) == 5 * len(split.test)
    x, label, video_idx = test[7]
    assert x.shape == (3, 24, 24) and video_idx == 1
    center = SpatialDataset(test.videos, train=False, input_size=24, test_frames=5, test_mode="center")
    assert center[7][0].shape == (3, 24, 24)


def test_corrupt_and_missing_frames_give_one_clear_error(tmp_path):
    d = make_dataset(tmp_path, frames=12)
    split = load_split(d.split_dir)
    videos = index_videos(split.test, "test", stream_sources("spatial", LAYOUTS["ucf101"], data_root=d.data_root))
    bad = d.data_root / d.test[1] / "frame000001.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    loader = build_loader(SpatialDataset(videos, train=False, input_size=24), batch_size=4, train=False, workers=1)
    with pytest.raises(FrameReadError) as err:
        for _ in loader:
            pass
    assert str(bad) in str(err.value) and "Traceback" not in str(err.value)
    bad.unlink()
    with pytest.raises(FrameReadError, match="frame not found: .*frame000001.jpg"):
        for _ in build_loader(SpatialDataset(videos, train=False, input_size=24), 4, train=False, workers=0):
            pass


def test_train_loader_batches(tmp_path):
    d = make_dataset(tmp_path, frames=14)
    split = load_split(d.split_dir)
    videos = index_videos(split.train, "train", stream_sources("motion", LAYOUTS["ucf101"], flow_root=d.flow_root))
    loader = build_loader(MotionDataset(videos, train=True, input_size=24), batch_size=4, train=True, workers=2)
    batches = list(loader)
    assert len(batches) == len(videos) // 4
    x, y = batches[0]
    assert x.shape == (4, 1, 20, 24, 24) and x.dtype == torch.uint8 and y.shape == (4,)


# --- command line --------------------------------------------------------------------------

def test_dataloader_summary_cli(tmp_path):
    d = make_dataset(tmp_path, frames=14)
    import shutil
    shutil.rmtree(d.data_root / d.train[0])
    out = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, "-m", "dataloader", "--data-root", str(d.data_root),
                           "--flow-root", str(d.flow_root), "--split-dir", str(d.split_dir), "--split", "1",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    assert summary["classes"] == 3
    assert summary == {"classes": 3, "train": {"videos": 12, "found": 11, "missing": 1},
                       "test": {"videos": 6, "found": 6, "missing": 0}, "frames": {"min": 14, "median": 14, "max": 14}}
    assert f"train: 12 videos, 11 found, 1 missing (e.g. {d.train[0]} (frame folder not found" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "dataloader", "--data-root", str(tmp_path / "nope")],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and "folder not found" in bad.stderr and "Traceback" not in bad.stderr


def test_own_frames_read_with_ucf101_s_lists_say_that_split_dir_was_forgotten(tmp_path):
    import spatial_cnn
    from tests.synth import make_dataset
    data = make_dataset(tmp_path / "data")
    with pytest.raises(UserError, match="(?s)no --split-dir was given, so UCF101's split lists were used"):
        spatial_cnn.main(spatial_cnn.parse_args(["--data-root", str(data.data_root), "--output-dir",
                                                 str(tmp_path / "run"), "--device", "cpu"]))
