"""tools/make_splits.py: split lists for videos in class folders."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dataloader.class_folders import assign_splits, scan_class_folders
from dataloader.splits import load_split
from tools import make_splits
from utils import UserError

ROOT = Path(__file__).resolve().parent.parent


def make_folders(root: Path, counts: dict[str, int], group_size: int = 1) -> Path:
    """Empty stand-ins for videos (make_splits reads names only): class folders of
    ``v_<Class>_gNN_cMM.mp4``, ``group_size`` clips a group."""
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            (root / cls / f"v_{cls}_g{i // group_size + 1:02d}_c{i % group_size + 1:02d}.mp4").touch()
    return root


def run(video_dir: Path, out: Path, *extra: str) -> str:
    proc = subprocess.run([sys.executable, "tools/make_splits.py", str(video_dir), str(out), *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("group_size", [1, 4])
def test_every_video_on_one_side_fractions_and_groups(tmp_path, group_size):
    counts = {"Archery": 40, "Bowling": 23, "Cycling": 17, "Diving": 64}
    videos = make_folders(tmp_path / "videos", counts, group_size)
    pattern = ["--group-pattern", r"_g(\d+)_"] if group_size > 1 else []
    out = run(videos, tmp_path / "splits", "--test-fraction", "0.3", "--splits", "3", *pattern)
    assert "4 classes, 144 videos" in out and "Diving" in out
    for k in (1, 2, 3):
        split = load_split(tmp_path / "splits", k)  # read back by the scripts' own reader
        train, test = {r.name for r in split.train}, {r.name for r in split.test}
        everything = {p.stem for p in videos.rglob("*.mp4")}
        assert not train & test and train | test == everything  # each video exactly once
        for cls, n in counts.items():  # each group's side is its hash's: the fraction is kept on average
            n_test = sum(r.class_name == cls for r in split.test)
            assert group_size > 1 or 0 < n_test < n, (cls, n_test)
            assert all(r.label == split.classes.index(cls) for r in split.train + split.test if r.class_name == cls)
        groups_in_all = len(everything) / group_size  # a binomial draw a group: within 3.5 of its deviations
        assert abs(len(test) / len(everything) - 0.3) < 3.5 * (0.3 * 0.7 / groups_in_all) ** 0.5
        groups = lambda records: {(r.class_name, r.group) for r in records}  # noqa: E731
        assert not groups(split.train) & groups(split.test)  # no group on both sides


def test_same_seed_same_lists_and_splits_differ(tmp_path):
    videos = make_folders(tmp_path / "videos", {"A": 30, "B": 30})
    run(videos, tmp_path / "one", "--seed", "3")
    run(videos, tmp_path / "two", "--seed", "3")
    run(videos, tmp_path / "three", "--seed", "4")
    for name in ("classInd.txt", "trainlist01.txt", "testlist02.txt"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert (tmp_path / "one" / "testlist01.txt").read_text() != (tmp_path / "three" / "testlist01.txt").read_text()
    tests = [set((tmp_path / "one" / f"testlist0{k}.txt").read_text().split()) for k in (1, 2, 3)]
    assert len(tests[0] & tests[1]) < len(tests[0]) / 2  # the splits test on different videos


def test_groups_keep_their_videos_together(tmp_path):
    classes = scan_class_folders(make_folders(tmp_path / "v", {"A": 12, "B": 12}, group_size=3), r"_g(\d+)_")
    assert {v.group for v in classes["A"]} == {"01", "02", "03", "04"}
    for seed in range(5):
        (split,) = assign_splits(classes, 0.5, 1, seed=seed)
        for train, test in split.values():
            assert not {v.group for v in train} & {v.group for v in test}
            assert len(test) % 3 == 0 and len(train) + len(test) == 12  # whole groups of 3


def test_bad_folders_are_one_clear_message(tmp_path, capsys):
    videos = make_folders(tmp_path / "videos", {"A": 5, "B": 5})
    (videos / "Empty").mkdir()
    args = make_splits.get_args_parser().parse_args([str(videos), str(tmp_path / "out")])
    with pytest.raises(UserError, match=r"class folder .*Empty has no videos"):
        make_splits.main(args)
    (videos / "Empty").rmdir()
    (videos / "B" / "v_A_g01_c01.mp4").touch()
    with pytest.raises(UserError, match="two videos are named v_A_g01_c01: in A and B"):
        make_splits.main(args)
    (videos / "B" / "v_A_g01_c01.mp4").unlink()
    (videos / "B" / "with space.mp4").touch()
    with pytest.raises(UserError, match="whitespace"):
        make_splits.main(args)
    (videos / "B" / "with space.mp4").unlink()
    (videos / "Tiny").mkdir()
    (videos / "Tiny" / "only.mp4").touch()
    assert make_splits.main(args) == 0
    assert re.search(r"warning: \d+ classes have all their videos on one side: .*Tiny \(split 1: no",
                     capsys.readouterr().err)


def test_group_patterns_that_cannot_work_are_refused_or_warned(tmp_path):
    videos = make_folders(tmp_path / "videos", {"A": 4, "B": 4})
    out = str(tmp_path / "out")
    with pytest.raises(UserError, match="--group-pattern .* is not a regular expression"):
        make_splits.main(make_splits.get_args_parser().parse_args([str(videos), out, "--group-pattern", r"_g(\d+_"]))
    with pytest.warns(UserWarning, match="matches no video name"):
        make_splits.main(make_splits.get_args_parser().parse_args([str(videos), out, "--group-pattern", "_x(\\d+)_"]))
    # one group a class (the whole class is one actor): no test list could hold anything
    with pytest.raises(UserError, match="split 1 would have no test videos"):
        make_splits.main(make_splits.get_args_parser().parse_args([str(videos), out, "--group-pattern", "^(v)_"]))


def test_a_symlinked_class_folder_is_listed_and_found_alike(tmp_path):
    from dataloader.video import find_videos
    videos = make_folders(tmp_path / "videos", {"A": 3})
    make_folders(tmp_path / "elsewhere", {"B": 3})
    (videos / "B").symlink_to(tmp_path / "elsewhere" / "B")
    (videos / "A" / "loop").symlink_to(videos)  # a link back up the tree is walked once
    listed = {v.filename for vs in scan_class_folders(videos).values() for v in vs}
    found = find_videos(videos)
    assert {p.name for p in found} == listed and len(found) == 6


def test_adding_or_removing_videos_never_moves_another_group(tmp_path):
    """A video added to a class (a new group) or removed takes no other video across the
    split: each side is decided by the group's own name (and the seed)."""
    def sides(folder: Path) -> dict[str, str]:
        out = run(folder, tmp_path / "lists", "--test-fraction", "0.3", "--splits", "3")
        assert "classes" in out
        return {f"{k}:{line.split()[0]}": side for k in (1, 2, 3) for side in ("train", "test")
                for line in (tmp_path / "lists" / f"{side}list0{k}.txt").read_text().splitlines()}
    videos = make_folders(tmp_path / "videos", {"A": 20, "B": 20})
    before = sides(videos)
    (videos / "A" / "v_A_g99_c01.mp4").touch()
    (videos / "B" / "v_B_g03_c01.mp4").unlink()
    after = sides(videos)
    assert {k: v for k, v in after.items() if "g99" not in k} == {k: v for k, v in before.items() if "B_g03" not in k}
    assert any("g99" in k for k in after)
