"""Split formats (UCF101, HMDB51, mmaction2 lists), their detection and their bad inputs,
and video names with awkward characters through the whole pipeline."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from dataloader import LAYOUTS, build_index, stream_sources
from dataloader.index import warn_listed_frames
from dataloader.splits import (SplitError, hmdb51_film, holdout_groups, load_split, read_hmdb51)
from tests.synth import make_dataset, write_split

# names as HMDB51 writes them, with the characters that break naive code
AWKWARD = ["#122_Cleaning_Up_The_Beach_Chips_{cls}_f_cm_np1_ba_med_1",
           "(Film)_&_Friends!_{cls}_u_nm_np1_fr_goo_0",
           "Don't_Stop_[1985]_{cls}_h_cm_np2_le_bad_3",
           "a;b,c__double__underscore_{cls}_f_nm_np1_ri_med_2",
           "A_Very_Long_Title_" + "x" * 120 + "_{cls}_u_cm_np1_fr_med_0"]


def write_hmdb51(folder: Path, classes: list[str], per_class: tuple[int, int, int] = (70, 30, 3),
                 split: int = 1) -> dict[str, tuple[str, int]]:
    """HMDB51-style files: per class ``train`` lines with 1, ``test`` with 2, ``unused`` with 0.
    Returns {video: (class, status)} as an independent reading of what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    train, test, unused = per_class
    for c, cls in enumerate(classes):
        lines = []
        for i in range(train + test + unused):
            template = AWKWARD[i % len(AWKWARD)]
            name = f"{template.format(cls=cls)}_{i}"
            status = 1 if i < train else 2 if i < train + test else 0
            lines.append(f"{name}.avi {status} ")
            truth[name] = (cls, status)
        (folder / f"{cls}_test_split{split}.txt").write_text("\n".join(lines) + "\n")
    return truth


def test_hmdb51_split_files_give_the_official_counts(tmp_path):
    classes = [f"cls{c:02d}_{'x' * (c % 3)}" for c in range(51)][::-1]  # written in reverse order
    truth = write_hmdb51(tmp_path / "hmdb", classes)
    write_hmdb51(tmp_path / "hmdb", classes, per_class=(10, 10, 0), split=2)  # another split, same folder
    split = load_split(tmp_path / "hmdb", 1)
    assert (len(split.train), len(split.test)) == (3570, 1530)
    assert split.classes == sorted(classes)  # class indices follow the sorted names
    for records, status in ((split.train, 1), (split.test, 2)):
        got = {r.name: (r.class_name, r.label) for r in records}
        expected = {n: (c, sorted(classes).index(c)) for n, (c, s) in truth.items() if s == status}
        assert got == expected
        assert all(r.key == r.name for r in records)  # score keys keep every character
    assert len(load_split(tmp_path / "hmdb", 2).train) == 510


def test_hmdb51_groups_are_source_films():
    assert hmdb51_film("April_09_brush_hair_u_nm_np1_ba_goo_0", "brush_hair") == "April_09"
    assert hmdb51_film("(Film)_&_Friends!_pick_u_nm_np1_fr_goo_0", "pick") == "(Film)_&_Friends!"
    assert hmdb51_film("no_class_part_here", "pick") == "no_class_part_here"


def test_holdout_never_splits_a_film(tmp_path):
    write_hmdb51(tmp_path / "hmdb", ["pick", "run", "jump"], per_class=(20, 5, 0))
    split = load_split(tmp_path / "hmdb", 1)
    train, val = holdout_groups(split.train, 2)
    assert len(val) > 0 and len(train) + len(val) == len(split.train)
    assert not {r.group for r in train} & {r.group for r in val}
    assert len({r.class_name for r in val}) == 3  # a film's clips span the classes here


@pytest.mark.parametrize("line,message", [
    ("some_video.avi 3", r"x_test_split1.txt:2: status '3' is not 0"),
    ("some_video.avi", r"x_test_split1.txt:2: expected '<video>.avi <0\|1\|2>'"),
])
def test_bad_hmdb51_lines_name_file_and_line(tmp_path, line, message):
    (tmp_path / "x_test_split1.txt").write_text(f"ok_video.avi 1\n{line}\n")
    with pytest.raises(SplitError, match=message):
        read_hmdb51(tmp_path, 1)


def test_a_video_in_two_hmdb51_class_files_is_refused(tmp_path):
    (tmp_path / "a_test_split1.txt").write_text("one.avi 1\nshared.avi 2\n")
    (tmp_path / "b_test_split1.txt").write_text("two.avi 1\nshared.avi 1\n")
    with pytest.raises(SplitError, match=r"b_test_split1.txt:2: video shared is also listed at a_test_split1.txt:2"):
        load_split(tmp_path, 1)


def test_split_format_detection_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(SplitError, match=r"cannot tell the split format of .*empty \(it holds notes.txt\)"):
        load_split(tmp_path / "empty", 1)
    both = tmp_path / "both"
    write_split(both, ["A"], [("A", "v_A_g01_c01")], [("A", "v_A_g02_c01")])
    (both / "A_test_split1.txt").write_text("v.avi 1\n")
    with pytest.raises(SplitError, match=r"both UCF101 lists (?s:.)* --split-format"):
        load_split(both, 1)
    assert len(load_split(both, 1, "ucf101").train) == 1 and len(load_split(both, 1, "hmdb51").train) == 1


# --- mmaction2 lists -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ucf_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("mm"), frames=12, size=(32, 40), class_folder=True)


def _mmaction_lists(data, folder: Path, kind: str, label_shift: int = 0) -> tuple[Path, Path]:
    split = load_split(data.split_dir, 1)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for what, records in (("train", split.train), ("test", split.test)):
        if kind == "rawframes":  # mmaction2: "<frame_dir> <total_frames> <label>"
            lines = [f"{r.class_name}/{r.name} 12 {r.label + label_shift}" for r in records]
        else:  # "<video path> <label>"
            lines = [f"{r.class_name}/{r.name}.mp4 {r.label + label_shift}" for r in records]
        path = folder / f"{what}_{kind}.txt"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths[0], paths[1]


@pytest.mark.parametrize("kind", ["rawframes", "videos"])
def test_mmaction_lists_give_the_same_index_as_ucf101_lists(ucf_data, tmp_path, kind):
    train_list, test_list = _mmaction_lists(ucf_data, tmp_path, kind)
    ucf = load_split(ucf_data.split_dir, 1)
    mm = load_split(train_list=train_list, test_list=test_list)
    assert mm.classes == ucf.classes  # from the first path component
    sources = stream_sources("spatial", LAYOUTS["ucf101"], data_root=ucf_data.data_root)
    for a, b in ((ucf.train, mm.train), (ucf.test, mm.test)):
        found_a, missing_a = build_index(a, sources)
        found_b, missing_b = build_index(b, sources)
        assert not missing_a and not missing_b
        assert [(v.record.name, v.record.label, v.frames, v.sources[0].folder) for v in found_a] == \
            [(v.record.name, v.record.label, v.frames, v.sources[0].folder) for v in found_b]
    names = tmp_path / "names.txt"
    names.write_text("\n".join(ucf.classes) + "\n")
    assert load_split(train_list=train_list, test_list=test_list, class_names=names).classes == ucf.classes


def test_mmaction_errors_name_file_and_line(ucf_data, tmp_path):
    train_list, test_list = _mmaction_lists(ucf_data, tmp_path, "rawframes")
    names = tmp_path / "names.txt"
    names.write_text("Alpha\nBeta\n")  # 3 classes are used
    with pytest.raises(SplitError, match=r"train_rawframes.txt:\d+: label 2 is out of range: 2 classes"):
        load_split(train_list=train_list, test_list=test_list, class_names=names)
    bad = tmp_path / "bad.txt"
    bad.write_text("Alpha/v 12 0\nAlpha/w 12 zero\n")
    with pytest.raises(SplitError, match=r"bad.txt:2: label 'zero' is not a number"):
        load_split(train_list=bad, test_list=test_list)
    with pytest.raises(SplitError, match="needs --train-list and --test-list"):
        load_split(split_format="mmaction", train_list=train_list)


def test_rawframe_counts_are_checked_against_the_disk(ucf_data, tmp_path, capsys):
    train_list, test_list = _mmaction_lists(ucf_data, tmp_path, "rawframes")
    lines = train_list.read_text().splitlines()
    lines[0] = lines[0].replace(" 12 ", " 99 ")
    train_list.write_text("\n".join(lines) + "\n")
    split = load_split(train_list=train_list, test_list=test_list)
    found, _ = build_index(split.train, stream_sources("spatial", LAYOUTS["ucf101"], data_root=ucf_data.data_root))
    wrong = warn_listed_frames(found, "train")
    assert [v.record.name for v in wrong] == [split.train[0].name] and wrong[0].frames == 12  # the disk wins
    assert "list 99, disk 12" in capsys.readouterr().out
    flow, _ = build_index(split.test, stream_sources("motion", LAYOUTS["ucf101"], flow_root=ucf_data.flow_root))
    assert warn_listed_frames(flow, "test") == []  # flow: one frame fewer than the RGB count is right


# --- awkward names through the whole pipeline -----------------------------------------------

def test_awkward_hmdb51_names_go_through_extraction_flow_training_and_fusion(tmp_path):
    import average_fusion
    import motion_cnn
    import spatial_cnn
    from tools import compute_flow, extract_frames
    from tools.make_demo_data import render_video, write_video
    from scorefiles import load_scores

    rng = np.random.default_rng(0)
    classes = {"pick": ((230, 80, 60), -1), "run": ((60, 170, 40), 1)}
    names = {"pick": ["Don't_[Stop]_#1_&_Go_pick_u_nm_np1_fr_goo_0", "Film_A_pick_f_cm_np1_ba_med_1",
                      "Film_B_pick_f_cm_np1_ba_med_2"],
             "run": ["(Run)_&_Friends!_run_u_cm_np1_le_bad_0", "Film_C;x,y__z_run_h_nm_np2_fr_goo_1",
                     "Film_D_run_f_cm_np1_ri_med_2"]}
    splits = tmp_path / "splits"
    splits.mkdir()
    for cls, (colour, direction) in classes.items():
        for name in names[cls]:
            write_video(tmp_path / "videos" / cls / f"{name}.avi", render_video(colour, direction, 16, (48, 64), rng))
        status = [1, 1, 2]
        (splits / f"{cls}_test_split1.txt").write_text("".join(f"{n}.avi {s}\n" for n, s in zip(names[cls], status)))
    assert extract_frames.main(extract_frames.get_args_parser().parse_args(
        [str(tmp_path / "videos"), str(tmp_path / "frames"), "--size", "48", "64", "--workers", "1"])) == 0
    assert compute_flow.main(compute_flow.get_args_parser().parse_args(
        [str(tmp_path / "frames"), str(tmp_path / "flow"), "--method", "farneback", "--workers", "1"])) == 0
    common = ["--split-dir", str(splits), "--arch", "resnet18", "--pretrained", "none", "--input-size", "40",
              "--batch-size", "2", "--workers", "0", "--test-frames", "3", "--epochs", "1", "--device", "cpu"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may be skipped or renamed on the way
        spatial_cnn.main(spatial_cnn.parse_args(["--data-root", str(tmp_path / "frames"),
                                                 "--output-dir", str(tmp_path / "s"), *common]))
        motion_cnn.main(motion_cnn.parse_args(["--flow-root", str(tmp_path / "flow"),
                                               "--output-dir", str(tmp_path / "m"), *common]))
        motion_cnn.main(motion_cnn.parse_args(["--flow-root", str(tmp_path / "flow"), "--output-dir",
                                               str(tmp_path / "m2"), *common, "--evaluate", "--resume",
                                               str(tmp_path / "m" / "checkpoint.pth.tar")]))
    expected = {names["pick"][2], names["run"][2]}
    for path in (tmp_path / "s" / "spatial_video_preds.pickle", tmp_path / "m2" / "motion_video_preds.pickle"):
        assert set(load_scores(path)) == expected
    assert (tmp_path / "s" / "classInd.txt").read_text() == "1 pick\n2 run\n"
    report = average_fusion.main(average_fusion.get_args_parser().parse_args(
        ["--spatial", str(tmp_path / "s" / "spatial_video_preds.pickle"),
         "--motion", str(tmp_path / "m2" / "motion_video_preds.pickle"), "--split-dir", str(splits)]))
    assert report["videos"] == 2


def test_extract_frames_lists_in_every_format(tmp_path):
    from dataloader.splits import listed_videos
    hmdb = tmp_path / "pick_test_split1.txt"
    hmdb.write_text("Don't_[x]_pick_0.avi 1\nb_pick_1.avi 0\nc_pick_2.avi 2\n")
    assert listed_videos(hmdb) == ["pick/Don't_[x]_pick_0.avi", "pick/c_pick_2.avi"]
    ucf = tmp_path / "trainlist01.txt"
    ucf.write_text("A/v_A_g01_c01.avi 1\r\nB/v_B_g01_c01.avi 2\r\n")
    assert listed_videos(ucf) == ["A/v_A_g01_c01.avi", "B/v_B_g01_c01.avi"]
    mm = tmp_path / "mm.txt"
    mm.write_text("A/x.mp4 0\n")
    assert listed_videos(mm, "mmaction") == ["A/x.mp4"]
    mm.write_text("A/x 30 0\n")
    with pytest.raises(SplitError, match="rawframe list names frame folders"):
        listed_videos(mm, "mmaction")
    with pytest.raises(SplitError, match="not found"):
        listed_videos(tmp_path / "nope.txt")


@pytest.mark.parametrize("item", ["/etc/passwd_dir", "../outside/v_x_g01_c01.mp4", "Run/../../x.mp4",
                                  "C:/videos/x.mp4", "Run\\..\\..\\x.mp4"])
def test_mmaction_paths_that_leave_the_root_are_refused_naming_file_and_line(tmp_path, item):
    from dataloader.splits import listed_videos, read_mmaction
    good = tmp_path / "train.txt"
    good.write_text("Run/v_a.mp4 0\n")
    bad = tmp_path / "test.txt"
    bad.write_text(f"Run/v_b.mp4 0\n{item} 0\n")
    with pytest.raises(SplitError, match=r"test.txt:2: .* leaves the data root"):
        read_mmaction(good, bad)
    with pytest.raises(SplitError, match=r"test.txt:2: .* leaves the data root"):
        listed_videos(bad, "mmaction")
    rawframes = tmp_path / "raw.txt"
    rawframes.write_text(f"{item.rsplit('.', 1)[0]} 10 0\n")
    with pytest.raises(SplitError, match="raw.txt:1"):
        read_mmaction(good, rawframes)


def test_digits_int_refuses_are_a_split_error(tmp_path):
    from dataloader.splits import read_class_index
    index = tmp_path / "classInd.txt"
    index.write_text("1 Run\n² Jump\n")
    with pytest.raises(SplitError, match="classInd.txt:2"):
        read_class_index(index)


def test_a_missing_hmdb51_class_file_is_refused_not_dropped(tmp_path):
    for cls in ("brush_hair", "cartwheel"):
        for split in (1, 2):
            (tmp_path / f"{cls}_test_split{split}.txt").write_text(f"{cls}_a.avi 1\n{cls}_b.avi 2\n")
    assert read_hmdb51(tmp_path, 2).classes == ["brush_hair", "cartwheel"]
    (tmp_path / "cartwheel_test_split2.txt").unlink()
    with pytest.raises(SplitError, match="1 classes have split files but none for split 2: cartwheel_test_split2"):
        read_hmdb51(tmp_path, 2)


def test_an_mmaction_test_class_without_training_videos_is_warned_with_counts(tmp_path):
    from dataloader.splits import read_mmaction
    (tmp_path / "train.txt").write_text("Run/v_a.mp4 0\n")
    (tmp_path / "test.txt").write_text("Run/v_b.mp4 0\nJump/v_c.mp4 1\nJump/v_d.mp4 1\n")
    with pytest.warns(UserWarning, match=r"1 test classes have no training videos .*Jump \(2 test videos\)"):
        split = read_mmaction(tmp_path / "train.txt", tmp_path / "test.txt")
    assert split.classes == ["Run", "Jump"]


def test_absolute_paths_only_with_the_flag_and_class_names(tmp_path):
    from dataloader.splits import listed_videos, read_mmaction
    data = make_dataset(tmp_path / "elsewhere", clips=1)
    videos = sorted(p for p in data.data_root.iterdir() if p.is_dir())
    (tmp_path / "names.txt").write_text("".join(f"{c}\n" for c in ("Alpha", "Beta", "Gamma")))
    label = {"Alpha": 0, "Beta": 1, "Gamma": 2}
    lines = "".join(f"{v} 14 {label[v.name.split('_')[1]]}\n" for v in videos)  # absolute frame folders
    (tmp_path / "list.txt").write_text(lines)
    with pytest.raises(SplitError, match="(?s)list.txt:1: .* leaves the data root .*--allow-absolute-paths"):
        read_mmaction(tmp_path / "list.txt", tmp_path / "list.txt")
    with pytest.raises(SplitError, match="(?s)an absolute path names no class.*--class-names"):
        read_mmaction(tmp_path / "list.txt", tmp_path / "list.txt", allow_absolute=True)
    split = read_mmaction(tmp_path / "list.txt", tmp_path / "list.txt", tmp_path / "names.txt", allow_absolute=True)
    assert split.classes == ["Alpha", "Beta", "Gamma"]
    (tmp_path / "unrelated_root").mkdir()
    source = stream_sources("spatial", LAYOUTS["ucf101"], data_root=tmp_path / "unrelated_root")
    found, missing = build_index(split.test, source)
    assert not missing and len(found) == len(videos)  # read where the list says, not under the root
    (tmp_path / "up.txt").write_text("../x/v_a.mp4 0\n")
    with pytest.raises(SplitError, match="up.txt:1"):
        listed_videos(tmp_path / "up.txt", "mmaction", allow_absolute=True)  # '..' never
