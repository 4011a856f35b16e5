"""Fuse per-video score files of several streams by a weighted average; report top-1/top-5.

    python average_fusion.py [--spatial PATH] [--motion PATH] [--stream NAME=PATH ...]
                             [--weights 1 1] [--split 1] [--split-dir DIR] [--split-format F] [--json PATH]
                             [--per-class CSV] [--confusion PNG] [--softmax]

Score files: a pickle of {video_name: array of class scores} (this repo's or the reference
repo's) or an .npz with 'videos' and 'scores'. Imports no model or loader code.
"""
from __future__ import annotations

import argparse
import csv
import json

import numpy as np

from dataloader.splits import add_split_arguments, split_from_args
from scorefiles import ScoreFileError, check_fusion_weights, confusion_figure, default_fusion_weights, load_score_info, load_scores
from guards import INPUT, OUTPUT, add_path, bound, check_io
from utils import HelpFormatter, UserError, atomic_write, run_cli


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                formatter_class=HelpFormatter)
    add_path(p, "--spatial", role=INPUT, default="record/spatial/spatial_video_preds.pickle", help="spatial score file")
    add_path(p, "--motion", role=INPUT, default="record/motion/motion_video_preds.pickle", help="motion score file")
    p.add_argument("--stream", action="append", default=[], metavar="NAME=PATH",
                   help="a further stream's score file (repeatable)")
    p.add_argument("--weights", type=bound("fusion_weight"), nargs="+", default=None,
                   help="one weight per stream, in the order spatial, motion, --stream... (default all 1, or "
                        "TSN's 1 1.5 when both score files come from --recipe tsn)")
    p.add_argument("--softmax", action="store_true", help="turn each video's scores into probabilities first")
    add_split_arguments(p)
    add_path(p, "--json", role=OUTPUT, help="write {stream: {top1, top5}, ..., 'fusion': ..., 'videos': N} here")
    add_path(p, "--per-class", role=OUTPUT, help="write per-class top-1 of each stream and of the fusion to this CSV")
    add_path(p, "--confusion", role=OUTPUT, help="draw the fused confusion matrix to this PNG")
    return p


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percentage of rows whose label is among the k highest scores (ties: the earlier class)."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(100.0 * (top == labels[:, None]).any(axis=1).mean())


def align(streams: dict[str, dict[str, np.ndarray]], paths: dict[str, str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Check that all score files cover the same videos with vectors of one length, and stack
    them in one video order. The error lists what differs."""
    names = list(streams)
    first = names[0]
    videos = sorted(streams[first])
    for name in names[1:]:
        only_first = sorted(set(streams[first]) - set(streams[name]))
        only_this = sorted(set(streams[name]) - set(streams[first]))
        if only_first or only_this:
            lines = [f"score files do not cover the same videos: {paths[first]} and {paths[name]}"]
            if only_first:
                lines.append(f"  {len(only_first)} only in {first}: {', '.join(only_first[:5])}"
                             f"{' ...' if len(only_first) > 5 else ''}")
            if only_this:
                lines.append(f"  {len(only_this)} only in {name}: {', '.join(only_this[:5])}"
                             f"{' ...' if len(only_this) > 5 else ''}")
            lines.append("  fix: evaluate both streams on the same split and the same --allow-missing set")
            raise ScoreFileError("\n".join(lines))
    lengths = {name: next(iter(s.values())).size for name, s in streams.items()}
    if len(set(lengths.values())) != 1:
        raise ScoreFileError("score vectors differ in length: " +
                             ", ".join(f"{paths[n]} has {k}" for n, k in lengths.items()) +
                             "\n  fix: fuse score files of models trained on the same classes")
    return videos, {name: np.stack([s[v] for v in videos]) for name, s in streams.items()}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def check_streams(infos: dict[str, dict], paths: dict[str, str]) -> None:
    """A score file whose .json names another stream than the flag it came by (--spatial given
    the motion file) is refused: its weight, e.g. TSN's 1.5, would go to the wrong stream."""
    for name, info in infos.items():
        written_by = info.get("stream")
        if name in ("spatial", "motion") and written_by is not None and written_by != name:
            raise UserError(f"{paths[name]} holds the {written_by} stream's scores (its .json says so), given as "
                            f"--{name}\n  fix: pass it as --{written_by}")


def fuse(args: argparse.Namespace) -> dict:
    paths = {"spatial": args.spatial, "motion": args.motion}
    for item in args.stream:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or name in paths or name == "fusion":
            raise UserError(f"--stream wants NAME=PATH with a new name, got {item!r}")
        paths[name] = path
    check_io(get_args_parser(), args, inputs={f"--stream {name}={path}": path for name, path in paths.items()
                                              if name not in ("spatial", "motion")})
    infos = {name: load_score_info(path) for name, path in paths.items()}
    check_streams(infos, paths)
    weights = args.weights or default_fusion_weights({n: info.get("recipe") for n, info in infos.items()})
    if weights and not args.weights:
        print(f"weights {' : '.join(f'{w:g}' for w in weights)} (TSN recipe, from the score files' .json; "
              f"--weights to choose others)")
    weights = weights or [1.0] * len(paths)
    check_fusion_weights(weights, list(paths))
    streams = {name: load_scores(path) for name, path in paths.items()}
    videos, matrices = align(streams, paths)

    split = split_from_args(args)
    label_of = {r.key: r.label for r in split.train + split.test}
    unknown = [v for v in videos if v not in label_of]
    if unknown:
        raise ScoreFileError(f"{len(unknown)} videos of the score files are not in split {args.split} of "
                             f"{args.split_dir}, e.g. {', '.join(unknown[:3])}\n  fix: pass the --split/--split-dir "
                             f"the streams were evaluated on")
    num_scores = next(iter(matrices.values())).shape[1]
    if num_scores != split.num_classes:
        raise ScoreFileError(f"score vectors have {num_scores} entries but {args.split_dir} has "
                             f"{split.num_classes} classes\n  fix: pass the --split-dir the streams were trained on")
    labels = np.array([label_of[v] for v in videos])

    if args.softmax:
        matrices = {name: softmax(m) for name, m in matrices.items()}
    fused = sum(w * matrices[name] for w, name in zip(weights, paths))
    results = {name: m for name, m in matrices.items()}
    results["fusion"] = fused
    report = {name: {"top1": topk_accuracy(m, labels, 1), "top5": topk_accuracy(m, labels, 5)}
              for name, m in results.items()}
    report["videos"] = len(videos)
    report["weights"] = dict(zip(paths, weights))

    if args.per_class:
        with atomic_write(args.per_class, "w") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "videos", *[f"{n}_top1" for n in results]])
            predictions = {n: m.argmax(axis=1) for n, m in results.items()}
            for c, class_name in enumerate(split.classes):
                mask = labels == c
                if mask.any():
                    writer.writerow([class_name, int(mask.sum()),
                                     *[round(100.0 * float((p[mask] == c).mean()), 3) for p in predictions.values()]])
    if args.confusion:
        draw_confusion(args.confusion, labels, fused.argmax(axis=1), split.classes)
    return report


def draw_confusion(path: str, labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> None:
    """The fused confusion matrix, rows normalised to the fraction of each true class."""
    import matplotlib.pyplot as plt

    fig = confusion_figure(labels, predictions, classes, "fused confusion matrix")
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict:
    report = fuse(args)
    print(f"{'stream':10} {'top-1':>7} {'top-5':>7}   ({report['videos']} videos)")
    for name, r in report.items():
        if name not in ("videos", "weights"):
            print(f"{name:10} {r['top1']:7.2f} {r['top5']:7.2f}")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()))
