"""A trained stream as a file other runtimes load: ONNX (onnxruntime, TensorRT, ...) or
TorchScript. The file takes the uint8 frames (or flow stacks) the loaders make, [N, C, S, S]
with any N, and returns the logits: the stream's input normalisation is inside it. It also
holds the checkpoint's record (class names, the settings that define what the model sees), so
``predict.py --backend onnxruntime|torchscript`` tests it with the checkpoint's protocol.

The export is checked before it is kept: the file is loaded back by its runtime and compared
with PyTorch on random inputs of two batch sizes; a difference over ``TOLERANCE`` of the largest
score refuses it.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch

from engine import check_finite_weights, load_checkpoint, publishable
from models import build_model
from utils import UserError, atomic_path, optional_import

from .scorer import StreamModel, check_stream_record, frame_source, stream_model, stream_normalizer

EXPORT_SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
BACKENDS = ("torch", "onnxruntime", "torchscript")  # predict.py --backend
RECORD_KEY = "two_stream_record"  # the ONNX metadata entry and the TorchScript extra file holding the record
TOLERANCE = 1e-4  # the largest |exported - PyTorch| allowed, as a share of the largest |score|
CHECK_BATCHES = (1, 3)  # batch sizes of the check (the export traced batch 2: the batch dimension is free)


class NormalizedModel(torch.nn.Module):
    """uint8 [N, C, S, S] -> logits: the stream's input normalisation, then its model."""

    def __init__(self, normalizer: torch.nn.Module, model: torch.nn.Module):
        super().__init__()
        self.normalizer, self.model = normalizer, model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalizer(frames))


def exportable(checkpoint: str | Path, class_ind: str | None = None,
               loaded: dict | None = None) -> tuple[NormalizedModel, dict]:
    """(the checkpoint's model behind its normalisation, in eval mode; its record: the
    published checkpoint without the weights, with its class names). ``loaded``: the
    checkpoint's contents when the caller already read them."""
    record = publishable(loaded if loaded is not None else load_checkpoint(checkpoint), checkpoint)
    stream = record.get("stream")
    if stream not in ("spatial", "motion"):
        raise UserError(f"{checkpoint} names no stream (spatial or motion)\n  fix: use the file spatial_cnn.py / "
                        f"motion_cnn.py wrote")
    classes, args = check_stream_record(record, str(checkpoint), stream, class_ind)
    check_finite_weights(record["model"], checkpoint)
    model = build_model(record["arch"], record["num_classes"], record["in_channels"], "none")
    model.load_state_dict(record.pop("model"))
    record["class_names"] = classes
    return NormalizedModel(stream_normalizer(stream, record["in_channels"], args), model).eval(), record


def input_shape(record: dict, batch: int) -> tuple[int, int, int, int]:
    size = int(record["args"].get("input_size", 224))
    return batch, record["in_channels"], size, size


def export_stream(checkpoint: str | Path, out: str | Path, fmt: str, class_ind: str | None = None,
                  loaded: dict | None = None) -> dict:
    """Write ``checkpoint``'s stream to ``out`` as ``fmt`` (onnx, torchscript), checked against
    PyTorch first; returns the check's figures (max_difference, largest_score, batches)."""
    if fmt not in EXPORT_SUFFIXES:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_SUFFIXES)}")
    if fmt == "onnx":
        for package in ("onnx", "onnxscript", "onnxruntime"):
            optional_import(package, "ONNX export")
    module, record = exportable(checkpoint, class_ind, loaded)
    generator = torch.Generator().manual_seed(0)
    example = torch.randint(0, 256, input_shape(record, 2), dtype=torch.uint8, generator=generator)
    try:
        with atomic_path(out) as scratch:  # kept only when written and checked
            _write(module, example, record, scratch, fmt, checkpoint)
            figures = check_export(module, scratch, fmt, record)
    except OSError as err:  # a full disk, a folder gone or read-only
        raise UserError(f"cannot write {out}: {err.strerror or err}\n  fix: free disk space or pass another "
                        f"--out") from None
    return figures


def _write(module: NormalizedModel, example: torch.Tensor, record: dict, path: Path, fmt: str,
           checkpoint: str | Path) -> None:
    """The exporter of ``fmt``; its own errors (an operator without ONNX support, ...) are one
    message, a failed write is left to the caller."""
    try:
        with torch.no_grad():
            (_write_onnx if fmt == "onnx" else _write_torchscript)(module, example, record, path)
    except OSError:
        raise
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserError(f"could not export {checkpoint} as {fmt} ({type(err).__name__}: {reason})\n"
                        f"  fix: try the other --format, or another torch/onnxscript version") from None


def _write_onnx(module: NormalizedModel, example: torch.Tensor, record: dict, path: Path) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(module, (example,), str(path), dynamo=True, input_names=["frames"], output_names=["logits"],
                      dynamic_shapes={"frames": {0: batch}}, external_data=False, verbose=False)
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = RECORD_KEY, json.dumps(record)
    onnx.save(model, str(path))


def _write_torchscript(module: NormalizedModel, example: torch.Tensor, record: dict, path: Path) -> None:
    with _quiet_jit():
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={RECORD_KEY: json.dumps(record)})


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch.jit warns that it is deprecated (for torch.export) at each call: said once, in the
    docs (prediction.md), not on every export and prediction. TorchScript stays for libtorch (C++) users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        yield


@torch.no_grad()
def check_export(module: NormalizedModel, path: Path, fmt: str, record: dict) -> dict:
    """Run the exported file with its runtime on random inputs of ``CHECK_BATCHES`` sizes and
    compare with ``module``; a difference over ``TOLERANCE`` x the largest score is refused."""
    runner, _ = open_exported(path, "onnxruntime" if fmt == "onnx" else "torchscript", torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    difference = largest = 0.0
    for batch in CHECK_BATCHES:
        frames = torch.randint(0, 256, input_shape(record, batch), dtype=torch.uint8, generator=generator)
        expected, got = module(frames), runner(frames)
        if got.shape != expected.shape:
            raise UserError(f"the exported {fmt} model gives scores of shape {tuple(got.shape)} for a batch of "
                            f"{batch}, PyTorch {tuple(expected.shape)}")
        difference = max(difference, (got.float() - expected).abs().max().item())
        largest = max(largest, expected.abs().max().item())
    if not difference <= TOLERANCE * max(largest, 1.0):
        raise UserError(f"the exported {fmt} model differs from PyTorch by {difference:.3g} (largest score "
                        f"{largest:.3g}; allowed {TOLERANCE:g} of it), so it was not written\n"
                        f"  fix: try the other --format, or another onnx/onnxruntime version")
    return {"max_difference": difference, "largest_score": largest, "batches": list(CHECK_BATCHES)}


class OnnxRuntimeModel:
    """An exported ONNX stream run by onnxruntime: a torch batch in, CPU logits out."""

    def __init__(self, session):
        self.session, self.input = session, session.get_inputs()[0].name

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input: frames.cpu().numpy()})[0])


def load_runner(path: str | Path, backend: str, device: torch.device) -> tuple[Callable, dict]:
    """(a callable uint8 batch -> logits, the record stored in the file) of an exported stream."""
    path = Path(path)
    fmt = "onnx" if backend == "onnxruntime" else "torchscript"
    if not path.is_file():
        raise UserError(f"exported model not found: {path}\n  fix: write it with python tools/export.py CKPT "
                        f"--format {fmt}")
    if not path.name.endswith(EXPORT_SUFFIXES[fmt]):
        raise UserError(f"{path} is not a {EXPORT_SUFFIXES[fmt]} file, which --backend {backend} runs\n  fix: export "
                        f"the checkpoint with python tools/export.py {path} --format {fmt}, or use --backend torch")
    return open_exported(path, backend, device)


def open_exported(path: Path, backend: str, device: torch.device) -> tuple[Callable, dict]:
    """load_runner without the checks of the file's name."""
    if backend == "onnxruntime":
        ort = optional_import("onnxruntime", "--backend onnxruntime")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            session = ort.InferenceSession(str(path), providers=providers)
        except Exception as err:
            raise UserError(f"{path}: onnxruntime cannot load it ({type(err).__name__}: {err})\n"
                            f"  fix: export it again with python tools/export.py") from None
        text = session.get_modelmeta().custom_metadata_map.get(RECORD_KEY)
        runner: Callable = OnnxRuntimeModel(session)
    else:
        extra = {RECORD_KEY: ""}
        try:
            with _quiet_jit():
                runner = torch.jit.load(str(path), map_location=device, _extra_files=extra).eval()
        except Exception as err:
            raise UserError(f"{path}: not a TorchScript file ({type(err).__name__}: {err})\n"
                            f"  fix: export it again with python tools/export.py CKPT --format torchscript") from None
        text = extra[RECORD_KEY]
    if not text:
        raise UserError(f"{path} holds no record of its checkpoint (class names, test settings): not written by "
                        f"tools/export.py\n  fix: export the checkpoint with python tools/export.py")
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise UserError(f"{path}: the record of its checkpoint is damaged (not a JSON object)\n"
                        f"  fix: export the checkpoint again with python tools/export.py")
    return runner, record


def load_exported_stream(path: str | Path, stream: str, backend: str, device: torch.device,
                         class_ind: str | None = None) -> StreamModel:
    """An exported stream ready to score videos, with the test protocol of its checkpoint."""
    runner, record = load_runner(path, backend, device)
    classes, args = check_stream_record(record, str(path), stream, class_ind, weights=False)
    probe = torch.zeros(input_shape(record, 1), dtype=torch.uint8, device=device)
    try:  # the record was checked alone: does the model inside take and give what it says?
        with torch.no_grad():
            shape = tuple(runner(probe).shape)
    except Exception as err:
        shape = f"an error ({type(err).__name__})"
    if shape != (1, record["num_classes"]):
        raise UserError(f"{path}: its record (input {tuple(probe.shape[1:])}, {record['num_classes']} classes) does "
                        f"not fit the model inside it, which gives {shape} for that input\n  fix: the file was "
                        f"edited or damaged; export the checkpoint again with python tools/export.py")
    loaded = stream_model(stream, args, classes, runner, torch.nn.Identity())
    loaded.frame_size = tuple(record["frame_size"]) if record.get("frame_size") else None
    loaded.frame_source = frame_source(record, str(path))
    return loaded
