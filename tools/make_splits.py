"""Write UCF101-format split lists for your own videos in class folders.

    python tools/make_splits.py VIDEO_DIR OUT_DIR [--test-fraction 0.3] [--splits 3]
                                [--group-pattern REGEX] [--seed 0]

VIDEO_DIR/<class>/<video> becomes OUT_DIR/classInd.txt, trainlistNN.txt and testlistNN.txt,
which spatial_cnn.py, motion_cnn.py and average_fusion.py read unchanged (--split-dir OUT_DIR).
Each group of videos (those whose names give the same group under --group-pattern, e.g.
UCF101's '_g(\\d+)_', one actor of a class; else each video) lands on the side a hash of its
name, its class and --seed says: adding or removing videos never moves another one across, and
each class's test share is --test-fraction on average. The same seed gives the same lists.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataloader.class_folders import assign_splits, one_sided, scan_class_folders, write_split_lists  # noqa: E402
from guards import INPUT, OUTPUT, VIDEO_FILES, add_path, bound, check_io  # noqa: E402
from utils import HelpFormatter, UserError, run_cli  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_path(p, "video_dir", role=INPUT, folder=True, reads=VIDEO_FILES, type=Path,
             help="folder of class folders of videos")
    add_path(p, "out_dir", role=OUTPUT, folder=True, type=Path,
             help="where the split lists go (the scripts' --split-dir)")
    p.add_argument("--test-fraction", type=bound("test_fraction"), default=0.3,
                   help="share of each class's videos in the test list")
    p.add_argument("--splits", type=bound("splits"), default=3,
                   help="how many splits (test parts overlap as little as they can)")
    p.add_argument("--group-pattern", help="regular expression whose first group (or match) names a video's group")
    p.add_argument("--seed", type=bound("seed"), default=0, help="seed of the assignment of groups to sides")
    return p


def main(args: argparse.Namespace) -> int:
    check_io(get_args_parser(), args)
    classes = scan_class_folders(args.video_dir, args.group_pattern)
    splits = assign_splits(classes, args.test_fraction, args.splits, args.seed)
    for k, split in enumerate(splits, start=1):
        if not any(test for _, test in split.values()):
            raise UserError(f"split {k} would have no test videos: every class has too few videos or groups for "
                            f"--test-fraction {args.test_fraction}\n  fix: a larger --test-fraction, more videos, "
                            f"or a --group-pattern that gives more groups")
    write_split_lists(args.out_dir, splits)
    print(f"{'class':30} {'videos':>6} {'groups':>6} " + " ".join(f"{'train/test ' + str(k + 1):>14}"
                                                                  for k in range(len(splits))))
    for name, videos in classes.items():
        counts = " ".join(f"{len(s[name][0]):>9}/{len(s[name][1]):<4}" for s in splits)
        print(f"{name:30} {len(videos):6d} {len({v.group for v in videos}):6d} {counts}")
    total = sum(len(v) for v in classes.values())
    print(f"{len(classes)} classes, {total} videos; lists written to {args.out_dir}")
    short = one_sided(splits)
    if short:
        print(f"warning: {len(short)} classes have all their videos on one side: {', '.join(short[:5])}"
              f"{' ...' if len(short) > 5 else ''} (too few videos or groups for --test-fraction "
              f"{args.test_fraction}, or their names' hashes fell so)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()))
