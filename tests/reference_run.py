"""The reference recipe's scores, frozen: a tiny run of both streams whose score files were
written before the TSN options existed (tests/data/reference_scores.npz), so that a test can
check that ``--recipe reference`` still trains and evaluates bit for bit as it did.

    python -m tests.reference_run   # rewrite the fixture (only on purpose: it is the baseline)
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import motion_cnn
import spatial_cnn
from tests.synth import make_dataset
from utils import load_scores

FIXTURE = Path(__file__).resolve().parent / "data" / "reference_scores.npz"


def run_both_streams(root: Path, *extra: str) -> dict[str, dict[str, np.ndarray]]:
    """Train each stream for one epoch on generated data and return its test score file."""
    data = make_dataset(root / "data", frames=13, size=(36, 44))
    common = ["--split-dir", str(data.split_dir), "--arch", "resnet18", "--pretrained", "none",
              "--input-size", "32", "--batch-size", "4", "--workers", "0", "--test-frames", "3",
              "--epochs", "1", "--lr-scheduler", "cosine", "--device", "cpu", *extra]
    scores = {}
    for name, script, root_flag, folder in (("spatial", spatial_cnn, "--data-root", data.data_root),
                                            ("motion", motion_cnn, "--flow-root", data.flow_root)):
        out = root / name
        script.main(script.parse_args([root_flag, str(folder), "--output-dir", str(out), *common]))
        scores[name] = load_scores(out / f"{name}_video_preds.pickle")
    return scores


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scores = run_both_streams(Path(tmp))
    arrays = {f"{stream}/{video}": s for stream, by_video in scores.items() for video, s in by_video.items()}
    FIXTURE.parent.mkdir(exist_ok=True)
    np.savez(FIXTURE, **arrays)
    print(f"wrote {FIXTURE} ({len(arrays)} score vectors)")


if __name__ == "__main__":
    main()
