"""tools/export.py and the exported streams predict.py runs (tiny untrained checkpoints; the
parity of predict.py on a video is in test_predict.py)."""
from __future__ import annotations

import sys
import warnings

import pytest
import torch

from inference import export
from inference.scorer import load_stream
from tests.test_trust import CLASSES, checkpoint
from tools import export as export_tool
from utils import UserError

pytest.importorskip("onnxruntime")


def run_export(*argv: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notices
        return export_tool.main(export_tool.get_args_parser().parse_args(list(argv)))


@pytest.mark.parametrize("fmt,backend", [("onnx", "onnxruntime"), ("torchscript", "torchscript")])
@pytest.mark.parametrize("stream", ["spatial", "motion"])
def test_an_exported_stream_scores_as_pytorch_at_any_batch_size(tmp_path, fmt, backend, stream):
    ckpt = checkpoint(tmp_path / "ckpt.pth.tar", stream=stream, flow_mean=0.4, flow_std=0.7)
    out = tmp_path / f"model{export.EXPORT_SUFFIXES[fmt]}"
    assert run_export(str(ckpt), "--format", fmt, "--out", str(out)) == 0
    reference = load_stream(str(ckpt), stream, torch.device("cpu"))  # what predict.py --backend torch runs
    loaded = export.load_exported_stream(out, stream, backend, torch.device("cpu"))
    assert loaded.classes == CLASSES and loaded.input_size == 32 and loaded.test_frames == 3
    assert loaded.test_positions == reference.test_positions and loaded.stack_length == reference.stack_length
    for batch in (1, 5, 8):  # none of them the traced batch (2)
        frames = torch.randint(0, 256, (batch, 3 if stream == "spatial" else 20, 32, 32), dtype=torch.uint8)
        with torch.no_grad():
            expected = reference.model(reference.normalizer(frames))
            got = loaded.model(loaded.normalizer(frames))
        assert got.shape == expected.shape
        assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_an_export_that_differs_from_pytorch_is_refused_and_not_written(tmp_path, monkeypatch):
    ckpt = checkpoint(tmp_path / "ckpt.pth.tar")
    out = tmp_path / "spatial.torchscript.pt"  # the check is the same for both formats; TorchScript exports fast
    real_open = export.open_exported

    def drifting(path, backend, device):
        runner, record = real_open(path, backend, device)
        return (lambda frames: runner(frames) * 1.001), record
    monkeypatch.setattr(export, "open_exported", drifting)
    with pytest.raises(UserError, match="differs from PyTorch by .* so it was not written"):
        run_export(str(ckpt), "--format", "torchscript", "--out", str(out))
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nor its scratch


def test_an_export_with_its_batch_baked_in_is_refused(tmp_path, monkeypatch):
    """The export traces batch 2; a file that only takes that batch must fail the check (run at
    other batch sizes), not pass it."""
    ckpt = checkpoint(tmp_path / "ckpt.pth.tar")
    out = tmp_path / "spatial.torchscript.pt"
    real_open = export.open_exported

    def baked(path, backend, device):
        runner, record = real_open(path, backend, device)
        return (lambda frames: runner(frames[:1].expand(2, *frames.shape[1:]))), record
    monkeypatch.setattr(export, "open_exported", baked)
    with pytest.raises(UserError, match="gives scores of shape \\(2, 3\\) for a batch of 1"):
        run_export(str(ckpt), "--format", "torchscript", "--out", str(out))
    assert not out.exists()


def test_bad_export_and_backend_inputs_are_named(tmp_path, monkeypatch):
    import predict
    ckpt = checkpoint(tmp_path / "ckpt.pth.tar")
    with pytest.raises(UserError, match="is the checkpoint"):
        run_export(str(ckpt), "--format", "torchscript", "--out", str(ckpt))
    with pytest.raises(UserError, match=r"ends in \.onnx"):
        run_export(str(ckpt), "--format", "onnx", "--out", str(tmp_path / "model.pth"))
    # a checkpoint given to an exported backend, an exported file to the torch backend
    with pytest.raises(UserError, match=r"(?s)not a \.onnx file.*tools/export\.py"):
        predict.Predictor(spatial=str(ckpt), backend="onnxruntime")
    onnx_file = tmp_path / "s.onnx"
    assert run_export(str(ckpt), "--format", "onnx", "--out", str(onnx_file)) == 0
    with pytest.raises(UserError, match="--backend onnxruntime"):
        predict.Predictor(spatial=str(onnx_file), backend="torch")
    assert predict.Predictor(spatial=str(onnx_file)).args.backend == "onnxruntime"  # told by the name
    with pytest.raises(UserError, match="need different backends"):
        predict.Predictor(spatial=str(onnx_file), motion=str(ckpt))
    with pytest.raises(UserError, match="a model of the spatial stream, given as --motion"):
        predict.Predictor(motion=str(onnx_file), backend="onnxruntime")
    # an ONNX file without the record of its checkpoint
    import onnx
    bare = onnx.load(str(onnx_file))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(UserError, match="holds no record of its checkpoint"):
        predict.Predictor(spatial=str(tmp_path / "bare.onnx"), backend="onnxruntime")
    entry = bare.metadata_props.add()
    entry.key, entry.value = export.RECORD_KEY, "{not json"
    onnx.save(bare, str(tmp_path / "damaged.onnx"))
    with pytest.raises(UserError, match="damaged.onnx: the record of its checkpoint is damaged"):
        predict.Predictor(spatial=str(tmp_path / "damaged.onnx"), backend="onnxruntime")
    # an exporter's own error is one message, and leaves no file
    with monkeypatch.context() as m:
        m.setattr(torch.jit, "trace", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("unsupported op\nmore")))
        with pytest.raises(UserError, match=r"could not export .* as torchscript \(RuntimeError: unsupported op\)"):
            run_export(str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "x.torchscript.pt"))
    assert not list(tmp_path.glob("*x.torchscript.pt*"))
    # the optional packages missing: what needs them and how to install them
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"(?s)--backend onnxruntime needs the package onnxruntime.*requirements-extras"):
        predict.Predictor(spatial=str(onnx_file), backend="onnxruntime")
    with pytest.raises(UserError, match="ONNX export needs the package onnxruntime"):
        run_export(str(ckpt), "--format", "onnx", "--out", str(tmp_path / "again.onnx"))


def test_the_default_name_says_stream_arch_and_recipe(tmp_path, monkeypatch):
    ckpt = checkpoint(tmp_path / "ckpt.pth.tar", stream="motion", recipe="tsn")
    monkeypatch.chdir(tmp_path)
    assert run_export(str(ckpt), "--format", "torchscript") == 0
    assert (tmp_path / "motion-resnet18-tsn.torchscript.pt").is_file()
    first = (tmp_path / "motion-resnet18-tsn.torchscript.pt").read_bytes()
    assert run_export(str(ckpt), "--format", "torchscript") == 0  # again: beside it, not over it
    assert (tmp_path / "motion-resnet18-tsn-2.torchscript.pt").is_file()
    assert (tmp_path / "motion-resnet18-tsn.torchscript.pt").read_bytes() == first


def test_an_output_that_is_the_checkpoint_under_another_name_is_refused(tmp_path):
    """A hard link is the same file: exporting or converting over it would replace the input."""
    import os

    from tools import convert_weights
    ckpt = checkpoint(tmp_path / "ckpt.pth.tar")
    os.link(ckpt, tmp_path / "linked.torchscript.pt")
    with pytest.raises(UserError, match="is the checkpoint"):
        run_export(str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "linked.torchscript.pt"))
    with pytest.raises(UserError, match="is SRC"):
        convert_weights.main(convert_weights.get_args_parser().parse_args([str(ckpt), str(tmp_path / "linked.torchscript.pt")]))


def test_a_full_disk_during_export_or_conversion_is_one_message_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from tools import convert_weights
    ckpt = checkpoint(tmp_path / "ckpt.pth.tar")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(export, "_write_torchscript", full)
    with pytest.raises(UserError, match="cannot write .*spatial.torchscript.pt: No space left on device"):
        run_export(str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "spatial.torchscript.pt"))
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError, match="cannot write OUT .*out.pth: No space left on device"):
        convert_weights.main(convert_weights.get_args_parser().parse_args(
            [str(ckpt), str(tmp_path / "out.pth"), "--arch", "resnet18"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth.tar"]
    (tmp_path / "folder.pth").mkdir()
    with pytest.raises(UserError, match="OUT .*folder.pth is a folder"):
        convert_weights.main(convert_weights.get_args_parser().parse_args(
            [str(ckpt), str(tmp_path / "folder.pth"), "--arch", "resnet18"]))


@pytest.mark.parametrize("edit", [{"args.input_size": 48}, {"stream": "motion", "in_channels": 20},
                                  {"num_classes": 4, "class_names": CLASSES + ["Delta"]}])
def test_an_exported_record_edited_to_another_input_or_stream_is_one_message(tmp_path, edit):
    import json

    import onnx
    ckpt = checkpoint(tmp_path / "ckpt.pth.tar")
    assert run_export(str(ckpt), "--format", "onnx", "--out", str(tmp_path / "s.onnx")) == 0
    model = onnx.load(str(tmp_path / "s.onnx"))
    entry = next(e for e in model.metadata_props if e.key == export.RECORD_KEY)
    record = json.loads(entry.value)
    for key, value in edit.items():
        if key.startswith("args."):
            record["args"][key[5:]] = value
        else:
            record[key] = value
    entry.value = json.dumps(record)
    onnx.save(model, str(tmp_path / "edited.onnx"))
    stream = record["stream"]
    with pytest.raises(UserError, match="edited.onnx: its record .* does not fit the model inside it"):
        export.load_exported_stream(tmp_path / "edited.onnx", stream, "onnxruntime", torch.device("cpu"))


def test_an_exported_file_given_as_a_checkpoint_is_one_message_without_torch_s_warnings(tmp_path, capfd):
    ckpt = checkpoint(tmp_path / "ckpt.pth.tar")
    out = tmp_path / "s.torchscript.pt"
    assert run_export(str(ckpt), "--format", "torchscript", "--out", str(out)) == 0
    capfd.readouterr()
    with pytest.raises(UserError, match="is an exported model .*, not a checkpoint"):
        run_export(str(out), "--format", "onnx", "--out", str(tmp_path / "s.onnx"))
    assert "weights_only" not in capfd.readouterr().err
