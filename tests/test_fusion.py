"""Score files (safe loading, formats) and average_fusion.py."""
from __future__ import annotations

import csv
import json
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import average_fusion
from tests.synth import write_split
from scorefiles import ScoreFileError, load_scores, save_scores

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["A", "B", "C", "D", "E", "F", "G"]


def python2_pickle(scores: dict[str, np.ndarray]) -> bytes:
    """The bytes Python 2's cPickle (protocol 2) writes for {str: float32 array}: py2 str
    keys and array data as SHORT_BINSTRING, globals from numpy.core.multiarray."""
    out = bytearray(b"\x80\x02}q\x00(")
    for key, array in scores.items():
        data = array.astype("<f4").tobytes()
        out += b"U" + bytes([len(key)]) + key.encode()
        out += b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b\x87R"
        out += b"(K\x01" + b"K" + bytes([array.size]) + b"\x85"
        out += b"cnumpy\ndtype\nq\x03U\x02f4K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        out += b"\x89" + (b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<I", len(data))) + data
        out += b"tb"
    out += b"u."
    return bytes(out)


def test_python2_and_every_python3_protocol_load(tmp_path):
    scores = {"A_g01_c01": np.array([1.5, -2.0, 3.25], np.float32), "B_g02_c03": np.arange(3, dtype=np.float32)}
    path = tmp_path / "py2.pickle"
    path.write_bytes(python2_pickle(scores))
    loaded = load_scores(path)
    assert loaded.keys() == scores.keys() and all(np.array_equal(loaded[k], scores[k]) for k in scores)
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.pickle"
        path.write_bytes(pickle.dumps(scores, protocol=protocol))
        loaded = load_scores(path)
        assert all(np.array_equal(loaded[k], scores[k]) for k in scores), protocol
    path.write_bytes(pickle.dumps({k: v.astype(np.float64).tolist() for k, v in scores.items()}))
    assert np.array_equal(load_scores(path)["A_g01_c01"], scores["A_g01_c01"])  # plain lists of floats


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"A_g01_c01": Evil()}))
    with pytest.raises(ScoreFileError, match="refusing to load global builtins.print"):
        load_scores(path)


def test_save_and_load_both_formats(tmp_path):
    scores = {"A_g01_c01": np.array([0.1, 0.9]), "B_g01_c01": np.array([0.7, 0.3])}
    for name in ("s.pickle", "s.npz"):
        save_scores(tmp_path / name, scores)
        loaded = load_scores(tmp_path / name)
        assert loaded.keys() == scores.keys() and np.allclose(loaded["B_g01_c01"], [0.7, 0.3])
    raw = pickle.loads((tmp_path / "s.pickle").read_bytes())  # plain reference format
    assert isinstance(raw, dict) and isinstance(raw["A_g01_c01"], np.ndarray)
    (tmp_path / "bad.pickle").write_bytes(b"garbage")
    with pytest.raises(ScoreFileError, match="bad.pickle: not a readable score file"):
        load_scores(tmp_path / "bad.pickle")
    with pytest.raises(ScoreFileError, match="score file not found"):
        load_scores(tmp_path / "none.pickle")


@pytest.fixture
def split_dir(tmp_path):
    test = [(c, f"v_{c}_g01_c01") for c in CLASSES[:4]]
    write_split(tmp_path / "splits", CLASSES, [("A", "v_A_g02_c01")], test)
    return tmp_path / "splits"


def fusion_args(split_dir, spatial, motion, *extra):
    return average_fusion.get_args_parser().parse_args(
        ["--spatial", str(spatial), "--motion", str(motion), "--split-dir", str(split_dir), *extra])


def onehot_rank(order: list[int]) -> np.ndarray:
    """Scores that rank classes in the given order (first = highest)."""
    s = np.zeros(len(CLASSES))
    for rank, c in enumerate(order):
        s[c] = len(CLASSES) - rank
    return s


def test_fusion_of_hand_made_scores(tmp_path, split_dir):
    # labels: A=0, B=1, C=2, D=3
    spatial = {"A_g01_c01": onehot_rank([0, 1, 2, 3, 4, 5, 6]),   # right
               "B_g01_c01": onehot_rank([0, 2, 3, 4, 5, 1, 6]),   # label 6th: wrong in top-5
               "C_g01_c01": onehot_rank([1, 2, 0, 3, 4, 5, 6]),   # label 2nd: top-5 only
               "D_g01_c01": onehot_rank([3, 0, 1, 2, 4, 5, 6])}   # right
    motion = {"A_g01_c01": onehot_rank([1, 0, 2, 3, 4, 5, 6]) * 0.1,  # label 2nd
              "B_g01_c01": onehot_rank([1, 0, 2, 3, 4, 5, 6]) * 10,   # right, confident
              "C_g01_c01": onehot_rank([2, 1, 0, 3, 4, 5, 6]) * 10,   # right, confident
              "D_g01_c01": onehot_rank([0, 1, 2, 4, 3, 5, 6]) * 10}   # label 5th, confident
    save_scores(tmp_path / "s.pickle", spatial)
    save_scores(tmp_path / "m.npz", motion)
    report = average_fusion.main(fusion_args(split_dir, tmp_path / "s.pickle", tmp_path / "m.npz",
                                             "--json", str(tmp_path / "f.json"), "--per-class", str(tmp_path / "pc.csv"),
                                             "--confusion", str(tmp_path / "c.png")))
    # by hand: spatial top-1 A,D = 50%, top-5 A,C,D = 75%; motion top-1 B,C = 50%, top-5 all = 100%;
    # fusion (1:1 sum): A right (7+0.6 vs 6+0.7), B right (motion's 70 dominates), C right;
    # D wrong: class A 6+70=76 > ... > D 7+30=37, D 5th of the fused ranking, so top-5 100%.
    assert report["spatial"] == {"top1": 50.0, "top5": 75.0}
    assert report["motion"] == {"top1": 50.0, "top5": 100.0}
    assert report["fusion"] == {"top1": 75.0, "top5": 100.0}
    assert report["videos"] == 4
    assert json.loads((tmp_path / "f.json").read_text()) == report
    rows = list(csv.DictReader(open(tmp_path / "pc.csv")))
    assert [r["class"] for r in rows] == ["A", "B", "C", "D"]
    assert rows[3]["spatial_top1"] == "100.0" and rows[3]["fusion_top1"] == "0.0"
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    weighted = average_fusion.main(fusion_args(split_dir, tmp_path / "s.pickle", tmp_path / "m.npz",
                                               "--weights", "1", "0"))
    assert weighted["fusion"] == weighted["spatial"]
    three = average_fusion.main(fusion_args(split_dir, tmp_path / "s.pickle", tmp_path / "m.npz",
                                            "--stream", f"extra={tmp_path / 's.pickle'}", "--weights", "1", "0", "1"))
    assert three["extra"] == three["spatial"] and three["fusion"] == three["spatial"]


def test_fusion_errors_list_what_differs(tmp_path, split_dir):
    base = {f"{c}_g01_c01": np.ones(len(CLASSES)) for c in "ABCD"}
    save_scores(tmp_path / "s.pickle", base)
    save_scores(tmp_path / "m.pickle", {k: v for k, v in base.items() if k != "C_g01_c01"})
    with pytest.raises(ScoreFileError) as err:
        average_fusion.main(fusion_args(split_dir, tmp_path / "s.pickle", tmp_path / "m.pickle"))
    assert "1 only in spatial: C_g01_c01" in str(err.value)
    save_scores(tmp_path / "m.pickle", {k: np.ones(5) for k in base})
    with pytest.raises(ScoreFileError, match="differ in length: .*s.pickle has 7, .*m.pickle has 5"):
        average_fusion.main(fusion_args(split_dir, tmp_path / "s.pickle", tmp_path / "m.pickle"))
    save_scores(tmp_path / "m.pickle", {**base, "Z_g09_c01": np.ones(7)})
    save_scores(tmp_path / "s.pickle", {**base, "Z_g09_c01": np.ones(7)})
    with pytest.raises(ScoreFileError, match="not in split 1 .*Z_g09_c01"):
        average_fusion.main(fusion_args(split_dir, tmp_path / "s.pickle", tmp_path / "m.pickle"))
    proc = subprocess.run([sys.executable, "average_fusion.py", "--spatial", str(tmp_path / "s.pickle"),
                           "--motion", str(tmp_path / "missing.pickle"), "--split-dir", str(split_dir)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "score file not found" in proc.stderr and "Traceback" not in proc.stderr


# --- hostile score files: refused with one line, exit 1, no crash, bounded memory ----------------

class _Reduce:
    """Pickles as whatever __reduce__ says, without ever building the object here."""

    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def _nested_lists(depth: int) -> bytes:
    key = b"A_g01_c01"
    return b"\x80\x02}X" + struct.pack("<I", len(key)) + key + b"]" * depth + b"a" * (depth - 1) + b"s."


def hostile_pickles() -> dict[str, bytes]:
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own _reconstruct
    f8 = np.dtype("f8")
    wrap = lambda value: pickle.dumps({"A_g01_c01": value}, protocol=2)  # noqa: E731
    return {
        "forged_pointers": wrap(_Reduce(np.ndarray, ((1,), np.dtype("O"), b"A" * 8))),
        "zero_strides": wrap(_Reduce(np.ndarray, ((10**12,), f8, b"A" * 8, 0, (0,)))),
        "huge_shape": wrap(_Reduce(reconstruct, (np.ndarray, (0,), b"b"), (1, (10**12,), f8, False, b"A" * 8))),
        "object_dtype": wrap(_Reduce(reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), np.dtype("O"), False, [1.0]))),
        "short_data": wrap(_Reduce(reconstruct, (np.ndarray, (0,), b"b"), (1, (4,), f8, False, b"A" * 8))),
        "nested_10000_deep": _nested_lists(10_000),
        "string_length_1GB": b"\x80\x04\x8d" + struct.pack("<Q", 10**9) + b"x" * 80,
        "bytes_length_1GB": b"\x80\x03}B" + struct.pack("<I", 10**9) + b"x" * 80,
        "memo_index_4G": b"\x80\x02}r" + struct.pack("<I", 0xFFFFFFF0) + b".",
        "too_many_classes": pickle.dumps({"A_g01_c01": np.zeros(200_000, np.float32)}),
        "nan_scores": pickle.dumps({"A_g01_c01": np.full(7, np.nan), "B_g01_c01": np.ones(7)}),
    }


def _limit_memory():
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (3 * 1024 ** 3, 3 * 1024 ** 3))


@pytest.mark.parametrize("name", sorted(hostile_pickles()))
def test_hostile_score_file_gives_one_line_and_exit_1(tmp_path, split_dir, name):
    path = tmp_path / f"{name}.pickle"
    path.write_bytes(hostile_pickles()[name])
    with pytest.raises(ScoreFileError, match=f"{name}.pickle"):
        load_scores(path)
    good = tmp_path / "good.pickle"
    save_scores(good, {f"{c}_g01_c01": np.ones(len(CLASSES)) for c in "ABCD"})
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "average_fusion.py", "--spatial", str(path), "--motion", str(good),
                           "--split-dir", str(split_dir)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, preexec_fn=_limit_memory, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert lines[0].startswith("error: ") and str(path) in lines[0] and "Traceback" not in proc.stderr
    assert len(lines) == 1 or (name == "nan_scores" and lines[1].startswith("  fix:")), proc.stderr


def test_numpy_scalars_fortran_and_protocol_5_buffers_still_load(tmp_path):
    matrix = np.asfortranarray(np.arange(6, dtype=">f4").reshape(2, 3))
    scores = {"A_g01_c01": matrix[0], "B_g01_c01": [np.float64(1.5), 2.0, 3], "C_g01_c01": matrix.T.copy()[:, 0]}
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.pickle"
        path.write_bytes(pickle.dumps(scores, protocol=protocol))
        loaded = load_scores(path)
        assert np.array_equal(loaded["A_g01_c01"], [0, 1, 2]) and np.array_equal(loaded["B_g01_c01"], [1.5, 2, 3])
        assert np.array_equal(loaded["C_g01_c01"], [0, 1, 2])
    path = tmp_path / "fortran.pickle"
    path.write_bytes(pickle.dumps({"A_g01_c01": matrix}, protocol=2))
    assert np.array_equal(load_scores(path)["A_g01_c01"], matrix.reshape(-1))


def test_fusion_imports_no_torch():
    """average_fusion.py reads score files anywhere, without torch (scorefiles.py and utils.py only)."""
    import subprocess
    import sys
    from pathlib import Path
    code = "import sys, average_fusion; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, check=True)


def test_tsn_weights_only_when_both_streams_are_tsn():
    from scorefiles import default_fusion_weights
    assert default_fusion_weights({"spatial": "tsn", "motion": "tsn"}) == [1.0, 1.5]
    for one in ({"spatial": "tsn", "motion": "reference"}, {"spatial": "reference", "motion": "tsn"},
                {"spatial": "tsn", "motion": None}):
        assert default_fusion_weights(one) is None, one
