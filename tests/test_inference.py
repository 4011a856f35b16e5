"""predict.py's library pieces that need no model: reading ahead, merging windows into segments."""
from __future__ import annotations

import pytest

from utils import UserError


def test_read_ahead_keeps_order_and_errors():
    from dataloader.video import read_ahead

    assert list(read_ahead(iter(range(1000)), depth=4)) == list(range(1000))

    def failing():
        yield 1
        raise UserError("decoding failed at 0.04 s")
    with pytest.raises(UserError, match="0.04 s"):
        list(read_ahead(failing()))
    stream = read_ahead(iter(range(10**6)), depth=2)
    assert next(stream) == 0
    stream.close()  # stops the thread without draining the source


def test_segments_merge_windows_with_the_same_top_class():
    from inference.windows import segments

    def window(start, label, p):
        return {"start": start, "end": start + 2.0, "topk": [{"class": label, "probability": p}]}
    windows = [window(0, "Run", 0.9), window(1, "Run", 0.7), window(2, "Jump", 0.3), window(3, "Jump", 0.8),
               window(4, "Jump", 0.6)]
    got = [(s.label, s.start, s.stop, round(s.score, 3)) for s in segments(windows)]
    assert got == [("Run", 0, 3.0, 0.8), ("Jump", 2, 6.0, 0.567)]
    got = [(s.label, s.start, s.stop) for s in segments(windows, min_score=0.5)]
    assert got == [("Run", 0, 3.0), (None, 2, 4.0), ("Jump", 3, 6.0)]
