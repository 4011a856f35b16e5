"""predict.py's scores on short videos, frozen: written by the whole-video predict.py of
``COMMIT``, before it streamed its frames (tests/data/predict_record.json), so that a test can
check that the streaming version gives the same scores. The record holds the versions and
processor it was written under (tests/frozen.py).

    python -m tests.predict_record   # write the record again, from COMMIT's code, under this environment
"""
from __future__ import annotations

import json
from pathlib import Path

RECORD = Path(__file__).resolve().parent / "data" / "predict_record.json"
COMMIT = "af27e57"  # tests: freeze predict.py's scores on short videos before it streams its frames
REGENERATE = "python -m tests.predict_record"
VIDEOS = [("RedUp", "g01"), ("GreenDown", "g02"), ("BlueDown", "g03")]


def predict_scores(root: Path) -> dict[str, dict[str, list[float]]]:
    """{video: {stream: scores}} of predict.py on three generated videos, both streams."""
    import predict
    from tests.test_predict import SIZE

    videos = [root / "data" / "videos" / c / f"v_{c}_{g}_c01.avi" for c, g in VIDEOS]
    args = predict.get_args_parser().parse_args(
        [*map(str, videos), "--spatial", str(root / "spatial" / "checkpoint.pth.tar"),
         "--motion", str(root / "motion" / "checkpoint.pth.tar"), "--size", *SIZE, "--flow-method", "farneback",
         "--device", "cpu", "--json", str(root / "record.json")])
    assert predict.main(args) == 0
    records = json.loads((root / "record.json").read_text())
    return {Path(r["video"]).name: {s: r["streams"][s]["scores"] for s in r["streams"]} for r in records}


def load_record() -> tuple[dict | None, dict[str, dict[str, list[float]]]]:
    """(the record of where it was written, or None for a file without one; {video: {stream: scores}})."""
    stored = json.loads(RECORD.read_text())
    if "scores" in stored and "record" in stored:
        return stored["record"], stored["scores"]
    return None, stored


def main() -> None:
    from tests.frozen import run_at_commit, written_record

    written = run_at_commit(COMMIT, "tests.predict_record", "tests/data/predict_record.json")
    scores = json.loads(written)
    RECORD.write_text(json.dumps({"record": written_record(COMMIT), "scores": scores}, indent=1) + "\n")
    print(f"wrote {RECORD} (from {COMMIT}'s code)")


if __name__ == "__main__":
    main()
