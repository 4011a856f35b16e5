"""The reference recipe's scores, frozen: a tiny run of both streams whose score files were
written by the code of the commit before the TSN options existed (``COMMIT``), so that a test
can check that ``--recipe reference`` still trains and evaluates bit for bit as it did. The
fixture records the versions and processor it was written under (tests/frozen.py).

    python -m tests.reference_run   # write the fixture again, from COMMIT's code, under this environment
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from tests.synth import make_dataset

FIXTURE = Path(__file__).resolve().parent / "data" / "reference_scores.npz"
COMMIT = "e2dfbbc"  # tests: freeze the reference recipe's scores of a tiny run before the TSN options land
REGENERATE = "python -m tests.reference_run"
RECORD_KEY = "_record"


def run_both_streams(root: Path, *extra: str) -> dict[str, dict[str, np.ndarray]]:
    """Train each stream for one epoch on generated data and return its test score file."""
    import motion_cnn
    import spatial_cnn
    from scorefiles import load_scores

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


def load_fixture() -> tuple[dict | None, dict[str, np.ndarray]]:
    """(the record of where it was written, or None for a fixture without one; {stream/video: scores})."""
    with np.load(FIXTURE) as frozen:
        arrays = {key: frozen[key] for key in frozen.files if key != RECORD_KEY}
        record = json.loads(str(frozen[RECORD_KEY])) if RECORD_KEY in frozen.files else None
    return record, arrays


def main() -> None:
    from tests.frozen import run_at_commit, written_record

    written = run_at_commit(COMMIT, "tests.reference_run", "tests/data/reference_scores.npz")
    with np.load(io.BytesIO(written)) as scores:
        arrays = {key: scores[key] for key in scores.files}
    np.savez(FIXTURE, **arrays, **{RECORD_KEY: np.array(json.dumps(written_record(COMMIT)))})
    print(f"wrote {FIXTURE} ({len(arrays)} score vectors, from {COMMIT}'s code)")


if __name__ == "__main__":
    main()
