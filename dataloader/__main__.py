"""Summarise a data set on disk: ``python -m dataloader --data-root DIR [--flow-root DIR] --split 1``."""
from __future__ import annotations

import argparse
import json
import statistics

from guards import FRAME_FILES, INPUT, OUTPUT, add_path, check_io
from utils import HelpFormatter, UserError, atomic_write, run_cli

from .index import LAYOUTS, build_index, resolve_layout, stream_sources
from .splits import add_split_arguments, split_from_args


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dataloader", description=__doc__, formatter_class=HelpFormatter)
    add_path(p, "--data-root", role=INPUT, folder=True, reads=FRAME_FILES, help="folder of RGB frames")
    add_path(p, "--flow-root", role=INPUT, folder=True, reads=FRAME_FILES, help="folder of optical flow frames")
    add_split_arguments(p)
    p.add_argument("--layout", default="ucf101", choices=sorted(LAYOUTS), help="frame layout preset")
    p.add_argument("--rgb-template", help="free RGB frame template, e.g. '{video}/img_{idx:05d}.jpg'")
    p.add_argument("--flow-x-template", help="free flow x template")
    p.add_argument("--flow-y-template", help="free flow y template")
    add_path(p, "--index-cache", role=OUTPUT, folder=True, help="folder for the frame index cache (default: none)")
    add_path(p, "--json", role=OUTPUT, help="also write the summary to this JSON file")
    return p


def summarise(args: argparse.Namespace) -> tuple[dict, dict[str, list[str]]]:
    """The summary (the --json format) and a few names of missing videos per list."""
    if not args.data_root and not args.flow_root:
        raise UserError("give --data-root (RGB frames) and/or --flow-root (optical flow)")
    split = split_from_args(args)
    layout = resolve_layout(args.layout, args.rgb_template, args.flow_x_template, args.flow_y_template)
    sources = []
    if args.data_root:
        sources += stream_sources("spatial", layout, data_root=args.data_root)
    if args.flow_root:
        sources += stream_sources("motion", layout, flow_root=args.flow_root)
    summary: dict = {"classes": split.num_classes}
    frames, examples = [], {}
    for what, records in (("train", split.train), ("test", split.test)):
        found, missing = build_index(records, sources, args.index_cache)
        summary[what] = {"videos": len(records), "found": len(found), "missing": len(missing)}
        frames += [v.sources[0].frames for v in found]
        examples[what] = [f"{r.name} ({why})" for r, why in missing[:3]]
    summary["frames"] = ({"min": min(frames), "median": statistics.median(frames), "max": max(frames)}
                         if frames else {"min": None, "median": None, "max": None})
    return summary, examples


def main(argv: list[str] | None = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    check_io(parser, args)
    summary, examples = summarise(args)
    print(f"classes: {summary['classes']}")
    for what in ("train", "test"):
        s = summary[what]
        line = f"{what}: {s['videos']} videos, {s['found']} found, {s['missing']} missing"
        if s["missing"]:
            line += f" (e.g. {', '.join(examples[what])})"
        print(line)
    f = summary["frames"]
    print(f"frames per video (found): min {f['min']}, median {f['median']}, max {f['max']}")
    if args.json:
        with atomic_write(args.json, "w") as f:
            f.write(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    run_cli(main)
