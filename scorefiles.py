"""Per-video score files, ``{video_key: float array of num_classes}``: reading them safely
(pickles of this repo, of the reference repo, from Python 2 or 3, any protocol, through an
unpickler that builds only numeric arrays, within hard size caps; or .npz), writing them
atomically, their protocol sidecars (NAME.json), and the fusion weights those imply.
No torch: average_fusion.py imports only this and utils."""
from __future__ import annotations

import io
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from guards import value_problems
from utils import UserError, atomic_write


class ScoreFileError(UserError):
    """A score file that cannot be read or does not fit the others."""


# Hard limits of a score file, far above any real data set (UCF101: 101 classes x 3,783
# videos; Kinetics-700: 700 x 64k), so that no file can make the reader allocate without end.
MAX_SCORE_FILE_BYTES = 2 * 1024 ** 3
MAX_CLASSES = 100_000
MAX_SCORES = 200_000_000  # videos x classes in one file
_LIMITS = (f"score files hold at most {MAX_CLASSES:,} classes a video and {MAX_SCORES:,} scores "
           f"(videos x classes) in all")
_DTYPE_RE = re.compile(r"[<>|=]?[biuf][1248]")


class _Refused(pickle.UnpicklingError):
    pass


class _DType:
    """Stands for ``numpy.dtype`` while unpickling: plain numbers only (bool, int, float)."""

    def __init__(self, spec=None, align=False, copy=False):
        if not isinstance(spec, str) or not _DTYPE_RE.fullmatch(spec):
            raise _Refused(f"dtype {spec!r} refused (only bool, int and float scores)")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state):
        # numpy's dtype state: (version, byte order, subarray, names, fields, ...)
        dtype = getattr(self, "dtype", None)
        if (dtype is None or not isinstance(state, tuple) or len(state) < 5 or state[1] not in ("<", ">", "|", "=")
                or state[2:5] != (None, None, None)):
            raise _Refused("dtype state refused (structured, subarray or malformed)")
        if state[1] in "<>":
            self.dtype = dtype.newbyteorder(state[1])


def _checked_array(data, dtype, shape, fortran: bool = False) -> np.ndarray:
    """A float64 array made from bytes that are really there, of a checked dtype and shape."""
    if not isinstance(dtype, _DType) or getattr(dtype, "dtype", None) is None:
        raise _Refused("array without a plain numeric dtype")
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, tuple) or len(shape) > 2 or not all(type(n) is int and n >= 0 for n in shape):
        raise _Refused("array shape refused (not a tuple of at most 2 sizes)")
    if any(n > MAX_SCORES for n in shape):  # before multiplying: a forged 10**100000 must cost nothing
        raise _Refused(f"array with a dimension over {MAX_SCORES:,} refused ({_LIMITS})")
    count = math.prod(shape)
    if count > MAX_SCORES:
        raise _Refused(f"array of {count:,} values refused ({_LIMITS})")
    if isinstance(data, str):  # Python 2 pickles: bytes arrive as latin-1 text
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)):
        raise _Refused(f"array data of type {type(data).__name__} refused (object arrays are not scores)")
    if len(data) != count * dtype.dtype.itemsize:
        raise _Refused(f"array of shape {shape} needs {count * dtype.dtype.itemsize} bytes, "
                       f"the file holds {len(data)}")
    array = np.frombuffer(bytes(data), dtype=dtype.dtype).reshape(shape, order="F" if fortran else "C")
    return array.astype(np.float64)


class _ArrayStub:
    """Stands for the empty ndarray of numpy's ``_reconstruct``; BUILD fills it with checked data."""

    array: np.ndarray | None = None

    def __setstate__(self, state):
        # numpy's ndarray state: (version, shape, dtype, is_fortran, raw data)
        if not isinstance(state, tuple) or len(state) != 5:
            raise _Refused("array state refused")
        _, shape, dtype, fortran, data = state
        self.array = _checked_array(data, dtype, shape, bool(fortran))


def _refuse_ndarray(*args, **kwargs):
    raise _Refused("numpy.ndarray called directly (arrays are only accepted through numpy's own "
                   "reconstruction, with their data in the file)")


def _reconstruct(cls, shape=None, code=None):
    if cls is not _refuse_ndarray:
        raise _Refused(f"_reconstruct of {cls!r} refused")
    return _ArrayStub()


def _scalar(dtype, data=None):
    return float(_checked_array(data, dtype, ())[()])


def _frombuffer(data, dtype, shape, order="C"):
    return _checked_array(data, dtype, shape, order == "F")


def _encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode refused except for latin-1 text")
    return text.encode("latin1")


def _reconstructor(cls, base, state):
    # Python 2 pickles plain objects through copy_reg._reconstructor; only dict is allowed.
    if cls is not dict and cls is not object:
        raise _Refused(f"refusing to reconstruct {cls!r}")
    return dict() if state is None else dict(state)


# Every global a score file may name, mapped to a stand-in that checks its arguments: numpy
# itself never sees a dtype, shape or buffer from the file before they are checked, so a
# forged pointer, a zero stride or a huge shape cannot crash or exhaust the reader.
_SAFE_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): _refuse_ndarray, ("numpy", "dtype"): _DType,
    ("builtins", "dict"): dict, ("__builtin__", "dict"): dict,
    ("collections", "OrderedDict"): dict,
    ("_codecs", "encode"): _encode,
    ("copy_reg", "_reconstructor"): _reconstructor, ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object, ("builtins", "object"): object,
}
for _module in ("numpy.core", "numpy._core"):
    _SAFE_GLOBALS[(f"{_module}.multiarray", "_reconstruct")] = _reconstruct
    _SAFE_GLOBALS[(f"{_module}.multiarray", "scalar")] = _scalar
    _SAFE_GLOBALS[(f"{_module}.numeric", "_frombuffer")] = _frombuffer


class _ScoreUnpickler(pickle._Unpickler):
    """Admit only what a score file needs: dicts, strings, numbers and numeric arrays.

    The pure-Python unpickler (a dict memo, so a forged memo index costs nothing) over the
    file's bytes in memory (a length prefix cannot read past the end); every global maps to a
    checked stand-in, so a score file from someone else can neither run code nor crash or
    exhaust the process."""

    def find_class(self, module: str, name: str):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"refusing to load global {module}.{name}") from None


def _score_vector(value) -> np.ndarray | None:
    """A loaded value as a float64 vector, or None when it is not a plain score vector."""
    if isinstance(value, _ArrayStub):
        return None if value.array is None else value.array.reshape(-1)
    if isinstance(value, np.ndarray):  # from _frombuffer
        return value.reshape(-1)
    if isinstance(value, (list, tuple)) and all(type(x) in (int, float) for x in value):
        try:
            return np.array(value, dtype=np.float64)
        except OverflowError:
            return None
    return None


def _read_pickle(path: Path) -> dict:
    size = path.stat().st_size
    if size > MAX_SCORE_FILE_BYTES:
        raise ScoreFileError(f"{path}: {size:,} bytes is more than a score file can be "
                             f"({MAX_SCORE_FILE_BYTES:,}; {_LIMITS})")
    data = path.read_bytes()
    raw = _ScoreUnpickler(io.BytesIO(data), encoding="latin1").load()
    if not isinstance(raw, dict):
        raise ScoreFileError(f"{path}: not a score file: expected a dict {{video_name: scores}}, "
                             f"got {type(raw).__name__}")
    return raw


def _read_npz(path: Path) -> dict:
    """An .npz of 'videos' (names) and 'scores' (matrix), headers checked before any data is read."""
    with zipfile.ZipFile(path) as archive:
        for member, kinds in (("videos.npy", "US"), ("scores.npy", "biuf")):
            with archive.open(member) as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(f)
                count = math.prod(shape)
                if dtype.kind not in kinds or dtype.hasobject or count > MAX_SCORES or len(shape) > 2:
                    raise _Refused(f"{member} of dtype {dtype} and shape {shape} refused ({_LIMITS})")
                if archive.getinfo(member).file_size < f.tell() + count * dtype.itemsize:
                    raise _Refused(f"{member} is shorter than its shape {shape} needs")
    with np.load(path, allow_pickle=False) as data:
        names, scores = data["videos"], data["scores"]
    if len(names) != len(scores):
        raise _Refused(f"{len(names)} video names for {len(scores)} score rows")
    return dict(zip((str(n) for n in names), scores.astype(np.float64)))


def load_scores(path: str | Path) -> dict[str, np.ndarray]:
    """Load a per-video score file (.pickle from this repo, the reference repo, Python 2 or 3,
    any protocol; or .npz with arrays ``videos`` and ``scores``).

    Hostile files are refused with one line naming the file: only numeric arrays whose data
    is in the file, within :data:`MAX_CLASSES` and :data:`MAX_SCORES`, and finite scores."""
    path = Path(path)
    if path.is_dir():
        raise ScoreFileError(f"{path} is a folder, not a score file\n"
                             f"  fix: pass the *_video_preds.pickle file inside it")
    if not path.is_file():
        raise ScoreFileError(f"score file not found: {path}\n"
                             f"  fix: run the stream with --evaluate to write it, or pass its path")
    try:
        raw = _read_npz(path) if path.suffix == ".npz" else _read_pickle(path)
    except ScoreFileError:
        raise
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, OSError, AttributeError, ImportError,
            IndexError, TypeError, OverflowError, MemoryError, RecursionError, zipfile.BadZipFile) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ScoreFileError(f"{path}: not a readable score file ({reason}); expected a pickle of "
                             f"{{video_name: array of class scores}} or an .npz with 'videos' and 'scores'") from None
    if not raw:
        raise ScoreFileError(f"{path}: the score file holds no videos")
    scores: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        if isinstance(name, bytes):
            name = name.decode("latin1")
        array = _score_vector(value)
        if not isinstance(name, str) or array is None or array.size == 0:
            shown = repr(name)[:80] if isinstance(name, (str, bytes)) else type(name).__name__
            raise ScoreFileError(f"{path}: entry {shown} is not a video name with a vector of scores")
        if array.size > MAX_CLASSES:
            raise ScoreFileError(f"{path}: entry {name[:80]!r} has {array.size:,} scores ({_LIMITS})")
        scores[name] = array
    lengths = {a.size for a in scores.values()}
    if len(lengths) != 1:
        raise ScoreFileError(f"{path}: score vectors have different lengths {sorted(lengths)[:5]}")
    if len(scores) * next(iter(lengths)) > MAX_SCORES:
        raise ScoreFileError(f"{path}: {len(scores):,} videos x {next(iter(lengths)):,} classes ({_LIMITS})")
    check_finite_scores(scores, str(path))
    return scores


def check_finite_scores(scores: Mapping[str, np.ndarray], source: str) -> None:
    """Refuse scores that hold NaN or infinity: a diverged model's output is no result."""
    bad = [name for name, vector in scores.items() if not np.isfinite(vector).all()]
    if bad:
        raise ScoreFileError(f"{source}: {len(bad)} of {len(scores)} videos have non-finite scores (NaN or inf), "
                             f"e.g. {bad[0]}\n  fix: the model that wrote them diverged or its weights are "
                             f"damaged; evaluate a good checkpoint again")


def save_scores(path: str | Path, scores: Mapping[str, np.ndarray]) -> None:
    """Write per-video scores atomically: pickle (the reference's format) or .npz by suffix."""
    path = Path(path)
    names = list(scores)
    matrix = np.stack([np.asarray(scores[n], dtype=np.float32) for n in names])
    with atomic_write(path) as f:
        if path.suffix == ".npz":
            np.savez(f, videos=np.array(names), scores=matrix)
        else:
            # protocol 2 so that the reference's Python 2 tooling reads our files too
            pickle.dump({n: matrix[i] for i, n in enumerate(names)}, f, protocol=2)


# The protocol a score file was made with, in a JSON file beside it (NAME.json for NAME.pickle):
# fusion reads the recipe from it to choose its default weights.
TSN_FUSION_WEIGHTS = {"spatial": 1.0, "motion": 1.5}  # TSN: RGB 1 : flow 1.5


def score_info_path(score_path: str | Path) -> Path:
    return Path(score_path).with_suffix(".json")


def save_score_info(score_path: str | Path, info: Mapping[str, object]) -> None:
    """Write the protocol of a score file (stream, recipe, test frames and crops) beside it."""
    import json

    with atomic_write(score_info_path(score_path), "w") as f:
        json.dump(dict(info), f, indent=1)


SCORE_INFO_MAX_BYTES = 1 << 20  # a description is a few hundred bytes


def load_score_info(score_path: str | Path) -> dict:
    """The protocol saved beside a score file; {} when there is none (the reference's files)."""
    import json

    path = score_info_path(score_path)
    if not path.is_file():
        return {}
    try:
        if path.stat().st_size > SCORE_INFO_MAX_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes, more than a description's {SCORE_INFO_MAX_BYTES}")
        info = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ScoreFileError(f"{path}: nested too deeply to be a score description\n  fix: delete it or evaluate "
                             f"the stream again") from None
    except (OSError, ValueError) as err:
        raise ScoreFileError(f"{path}: not a readable score description ({err})\n  fix: delete it (it only sets "
                             f"default fusion weights) or evaluate the stream again") from None
    if not isinstance(info, dict):
        return {}
    problems = value_problems(info)  # the numbers it records pass the flags' bounds
    if problems:
        raise ScoreFileError(f"{path}: a score description no evaluation writes ({'; '.join(problems)})\n  fix: "
                             f"delete it (it only sets default fusion weights) or evaluate the stream again")
    return info


def default_fusion_weights(recipes: Mapping[str, str | None]) -> list[float] | None:
    """TSN's 1 : 1.5 when the spatial and the motion stream both come from the TSN recipe,
    else None (equal weights). ``recipes`` maps stream names, in fusion order, to recipes."""
    if set(recipes) == set(TSN_FUSION_WEIGHTS) and all(r == "tsn" for r in recipes.values()):
        return [TSN_FUSION_WEIGHTS[name] for name in recipes]
    return None


def check_fusion_weights(weights: list[float], names: list[str]) -> None:
    """Refuse weights that rank nothing meaningful: a count other than the streams', a negative
    or non-finite weight, or all zero (the fused score would be 0/0)."""
    if len(weights) != len(names):
        raise UserError(f"--weights has {len(weights)} values for {len(names)} streams ({', '.join(names)})")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise UserError(f"--weights {' '.join(f'{w:g}' for w in weights)}: each weight must be 0 or more and at "
                        f"least one positive, else the fused scores rank nothing\n  fix: e.g. --weights "
                        f"{' '.join('1' for _ in names)}")



def confusion_figure(labels: np.ndarray, predictions: np.ndarray, classes: list[str], title: str):
    """A matplotlib figure of the confusion matrix, rows normalised to the fraction of each
    true class (class names on the axes up to 40 classes)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    matrix = np.zeros((k, k))
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    matrix /= np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5, min(24, k * 0.22))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 40:
        shown = [c.replace("$", r"\$") for c in classes]  # a '$' would start matplotlib's mathtext
        ax.set_xticks(range(k), shown, rotation=90, fontsize=7)
        ax.set_yticks(range(k), shown, fontsize=7)
    fig.tight_layout()
    return fig
