"""predict.py's scores on short videos, frozen: written by the whole-video predict.py before
it streamed its frames (tests/data/predict_record.json), so that a test can check that the
streaming version gives the same scores.

    python -m tests.predict_record   # rewrite the record (only on purpose: it is the baseline)
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

RECORD = Path(__file__).resolve().parent / "data" / "predict_record.json"
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


def main() -> None:
    from tests.test_predict import train_models

    with tempfile.TemporaryDirectory() as tmp:
        train_models(Path(tmp))
        scores = predict_scores(Path(tmp))
    RECORD.write_text(json.dumps(scores, indent=1) + "\n")
    print(f"wrote {RECORD}")


if __name__ == "__main__":
    main()
