"""--pretrained from the zoos' checkpoints (models/zoo.py): synthetic checkpoints written in each
zoo's exact key layout from a torchvision ResNet-50 with known random weights."""
from __future__ import annotations

import re

import numpy as np

import pytest
import torch
import torchvision

from models import build_model
from models.zoo import detect_format
from tools import convert_weights
from utils import UserError


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None, num_classes=400)
    for p in model.parameters():  # known, non-default values everywhere (BN too)
        torch.nn.init.normal_(p)
    for name, buffer in model.named_buffers():
        if "running" in name:
            buffer.uniform_(0.5, 1.5)
    return model.state_dict()


def as_mmaction2(state):
    """mmaction2's ResNet: ConvModule (``.conv``/``.bn``) blocks under ``backbone.``, head ``cls_head.fc_cls``."""
    out = {}
    for key, value in state.items():
        if key.startswith("fc."):
            out["cls_head.fc_cls." + key[3:]] = value
            continue
        key = key.replace("conv1.weight", "conv1.conv.weight") if key == "conv1.weight" else key
        key = re.sub(r"^bn1\.", "conv1.bn.", key)
        key = re.sub(r"^(layer\d+\.\d+)\.(conv\d)\.weight$", r"\1.\2.conv.weight", key)
        key = re.sub(r"^(layer\d+\.\d+)\.bn(\d)\.", r"\1.conv\2.bn.", key)
        key = re.sub(r"^(layer\d+\.\d+)\.downsample\.0\.", r"\1.downsample.conv.", key)
        key = re.sub(r"^(layer\d+\.\d+)\.downsample\.1\.", r"\1.downsample.bn.", key)
        out["backbone." + key] = value
    return {"meta": {"mmaction2_version": "1.x"}, "state_dict": out}


def as_tsn(state, tsm: bool = False):
    """tsn-pytorch (DataParallel ``module.``, ``base_model.``, classifier ``new_fc``); TSM wraps
    each block's first conv as ``.net``."""
    out = {}
    for key, value in state.items():
        if key.startswith("fc."):
            out["module.new_fc." + key[3:]] = value
            continue
        if tsm:
            key = re.sub(r"^(layer\d+\.\d+)\.conv1\.weight$", r"\1.conv1.net.weight", key)
        out["module.base_model." + key] = value
    return {"epoch": 45, "arch": "resnet50", "best_prec1": 70.0, "state_dict": out}


def backbone(state):
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


@pytest.mark.parametrize("layout,expected", [(as_mmaction2, "mmaction2"), (as_tsn, "tsn-pytorch"),
                                             (lambda s: as_tsn(s, tsm=True), "tsn-pytorch"),
                                             (lambda s: s, "torchvision")])
def test_every_backbone_tensor_lands_from_each_zoo(tmp_path, source, layout, expected, capsys):
    path = tmp_path / "ckpt.pth"
    torch.save(layout(source), path)
    saved = torch.load(path, weights_only=True)
    assert detect_format(saved.get("state_dict", saved)) == expected
    model = build_model("resnet50", 101, 3, str(path))
    loaded = model.state_dict()
    for key, value in backbone(source).items():
        assert torch.equal(loaded[key], value), key
    printed = capsys.readouterr().out
    assert f"{expected} layout" in printed
    assert ("dropped its head" in printed) == (expected != "torchvision")  # cls_head / new_fc are not loaded


def test_an_rgb_zoo_model_initialises_the_motion_stream_by_cross_modality(tmp_path, source):
    path = tmp_path / "rgb.pth"
    torch.save(as_mmaction2(source), path)
    model = build_model("resnet50", 101, 20, str(path))
    expected = source["conv1.weight"].mean(dim=1, keepdim=True).repeat(1, 20, 1, 1)
    assert torch.allclose(model.state_dict()["conv1.weight"], expected)


def flow_checkpoint(tmp_path, source, seed: int):
    """A 5-pair (10-channel) flow model in mmaction2's layout: (its first conv, the file)."""
    flow = dict(source)
    torch.manual_seed(seed)
    flow["conv1.weight"] = torch.randn(64, 10, 7, 7)
    path = tmp_path / "flow.pth"
    torch.save(as_mmaction2(flow), path)
    return flow, path


def test_a_flow_model_of_5_pairs_fits_stack_length_5_exactly(tmp_path, source):
    flow, path = flow_checkpoint(tmp_path, source, seed=1)
    assert torch.equal(build_model("resnet50", 101, 10, str(path)).state_dict()["conv1.weight"], flow["conv1.weight"])
    with pytest.raises(UserError, match="(?s)10 input channels; this model needs 14.*a multiple of N"):
        build_model("resnet50", 101, 14, str(path))  # 7 pairs: not a multiple of 5


def _constant_flow(pairs: int, x: float, y: float) -> torch.Tensor:
    """A stack of ``pairs`` flow frames in this repo's channel order x1, y1, x2, y2, ..."""
    stack = torch.empty(1, 2 * pairs, 16, 16)
    stack[:, 0::2], stack[:, 1::2] = x, y
    return stack


def test_a_5_pair_flow_conv_tiled_to_10_pairs_keeps_the_response_to_constant_flow(tmp_path, source):
    flow, path = flow_checkpoint(tmp_path, source, seed=2)
    tiled = build_model("resnet50", 101, 20, str(path)).state_dict()["conv1.weight"]
    conv = torch.nn.functional.conv2d
    for x, y in ((0.3, -0.7), (1.0, 0.0), (-0.2, 0.9)):
        expected = conv(_constant_flow(5, x, y), flow["conv1.weight"])
        assert torch.allclose(conv(_constant_flow(10, x, y), tiled), expected, atol=1e-4)
    # what the test tells apart: tiling channels instead of x/y pairs (x1, x1, y1, y1, ...) moves
    # x weights onto y channels, and the response to a flow whose x and y differ changes
    shuffled = flow["conv1.weight"].repeat_interleave(2, dim=1) / 2
    wrong = conv(_constant_flow(10, 0.3, -0.7), shuffled)
    assert not torch.allclose(wrong, conv(_constant_flow(5, 0.3, -0.7), flow["conv1.weight"]), atol=1e-2)


def test_another_depth_or_layout_names_the_first_key_that_does_not_fit(tmp_path, source):
    path = tmp_path / "r50.pth"
    torch.save(as_mmaction2(source), path)
    with pytest.raises(UserError, match=r"does not fit resnet101: it has no layer3\.6\."):
        build_model("resnet101", 101, 3, str(path))
    with pytest.raises(UserError, match=r"does not fit resnet18: its layer1\.0\.conv1\.weight has shape"):
        build_model("resnet18", 101, 3, str(path))
    shuffled = {"state_dict": {k.replace("backbone.layer1", "backbone.stage1"): v
                               for k, v in as_mmaction2(source)["state_dict"].items()}}
    torch.save(shuffled, tmp_path / "unknown.pth")
    with pytest.raises(UserError, match=r"it has no layer1\.0\.conv1\.weight"):
        build_model("resnet50", 101, 3, str(tmp_path / "unknown.pth"))


def test_convert_weights_writes_what_pretrained_loads(tmp_path, source):
    src, out = tmp_path / "tsm.pth", tmp_path / "converted.pth"
    torch.save(as_tsn(source, tsm=True), src)
    assert convert_weights.main(convert_weights.get_args_parser().parse_args([str(src), str(out)])) == 0
    converted = torch.load(out, weights_only=True)
    assert detect_format(converted) == "torchvision" and not any(k.startswith("fc.") for k in converted)
    for key, value in backbone(source).items():
        assert torch.equal(converted[key], value), key
    model = build_model("resnet50", 101, 3, str(out))
    assert torch.equal(model.state_dict()["layer4.2.bn3.running_var"], source["layer4.2.bn3.running_var"])
    with pytest.raises(UserError, match="is SRC"):
        convert_weights.main(convert_weights.get_args_parser().parse_args([str(src), str(src)]))


def test_flow_normalised_as_mmaction2_trained_it_from_flags_to_predict(tmp_path):
    import engine
    import motion_cnn
    from inference.scorer import load_stream
    from tests.test_trust import checkpoint
    args = motion_cnn.parse_args(["--flow-mean", str(128 / 255), "--flow-std", str(128 / 255)])
    normalizer = motion_cnn.MOTION.normalizer(args, False, None)
    batch = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).repeat(1, 20 // 3 + 1, 1, 1)[:, :20]
    expected = (batch.float() - 128) / 128
    assert torch.allclose(normalizer(batch), expected, atol=1e-6)
    path = checkpoint(tmp_path / "flow.pth.tar", stream="motion", flow_mean=128 / 255, flow_std=128 / 255)
    stream = load_stream(str(path), "motion", torch.device("cpu"))
    assert torch.allclose(stream.normalizer(batch), expected, atol=1e-6)  # predict.py, from the checkpoint
    evaluate = motion_cnn.parse_args(["--evaluate"])
    engine.apply_checkpoint_settings(evaluate, torch.load(path, weights_only=True)["args"], str(path))
    assert evaluate.flow_std == pytest.approx(128 / 255)  # --evaluate, from the checkpoint
    default = motion_cnn.parse_args([])
    assert torch.allclose(motion_cnn.MOTION.normalizer(default, False, None)(batch), batch.float() / 255 - 0.5)
    with pytest.raises(SystemExit):
        motion_cnn.parse_args(["--flow-std", "0"])


def test_a_named_preset_comes_from_torch_hubs_cache_with_its_hash_checked(tmp_path, source, monkeypatch):
    import hashlib

    from models import zoo
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    # the real presets: a file in the cache whose hash is not the name's is refused, never used
    name = zoo.ZOO_PRESETS["mmaction2-tsn-r50-k400-rgb"].rsplit("/", 1)[-1]
    torch.save(as_mmaction2(source), tmp_path / "hub" / "checkpoints" / name)
    with pytest.raises(UserError, match="sha256 does not start with e508be42"):
        build_model("resnet50", 101, 3, "mmaction2-tsn-r50-k400-rgb")
    # a preset whose cached file matches its name loads like the file itself
    data = (tmp_path / "hub" / "checkpoints" / name).read_bytes()
    good = f"tsn_test-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (tmp_path / "hub" / "checkpoints" / good).write_bytes(data)
    monkeypatch.setitem(zoo.ZOO_PRESETS, "test-preset", f"https://download.example.invalid/{good}")
    model = build_model("resnet50", 101, 3, "test-preset")
    assert torch.equal(model.state_dict()["layer2.0.downsample.1.weight"], source["layer2.0.downsample.1.weight"])


# --- a tiny training run from each format, both streams -------------------------------------

def as_seed(state):
    """The reference repo's checkpoint: ``conv1_custom``/``fc_custom`` names, optimizer state beside."""
    renamed = {k.replace("conv1.", "conv1_custom.", 1) if k.startswith("conv1.") else
               k.replace("fc.", "fc_custom.", 1) if k.startswith("fc.") else k: v for k, v in state.items()}
    return {"epoch": 30, "state_dict": renamed, "best_prec1": 80.0, "optimizer": {"state": {}, "param_groups": []}}


def as_this_repo(state):
    import engine
    return {"format": engine.CHECKPOINT_FORMAT, "stream": "spatial", "arch": "resnet18", "num_classes": 400,
            "in_channels": 3, "class_names": [f"c{i}" for i in range(400)], "args": {"arch": "resnet18"},
            "model": state}


def as_mmaction2_flow(state):
    flow = dict(state)
    flow["conv1.weight"] = state["conv1.weight"].repeat(1, 4, 1, 1)[:, :10]  # 5 x/y pairs
    return as_mmaction2(flow)


FORMATS = {"mmaction2": as_mmaction2, "mmaction2-flow": as_mmaction2_flow, "tsn-pytorch": as_tsn,
           "tsm": lambda s: as_tsn(s, tsm=True), "torchvision": lambda s: s, "reference-repo": as_seed,
           "this-repo": as_this_repo}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tests.synth import make_dataset
    return make_dataset(tmp_path_factory.mktemp("zoo-data"), frames=13, size=(36, 44))


@pytest.fixture(scope="module")
def resnet18_source():
    torch.manual_seed(3)
    model = torchvision.models.resnet18(weights=None, num_classes=400)
    for p in model.parameters():
        torch.nn.init.normal_(p)
    return model.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FORMATS))
def test_both_streams_train_from_each_format(tmp_path, tiny_data, resnet18_source, name, capsys):
    import motion_cnn
    import spatial_cnn
    from tests.test_engine import motion_args, spatial_args
    path = tmp_path / f"{name}.pth"
    torch.save(FORMATS[name](resnet18_source), path)
    # a tiny rate: after one epoch the weights are still the source's, so they came from it
    tiny = ["--pretrained", str(path), "--epochs", "1", "--lr", "1e-7", "--test-frames", "1"]
    runs = {"motion": (motion_cnn, motion_args(tiny_data, tmp_path / "motion", *tiny))}
    if name != "mmaction2-flow":
        runs["spatial"] = (spatial_cnn, spatial_args(tiny_data, tmp_path / "spatial", *tiny))
    for stream, (script, args) in runs.items():
        script.main(args)
        trained = torch.load(tmp_path / stream / "checkpoint.pth.tar", weights_only=True)
        assert trained["epoch"] == 1 and np.isfinite(trained["best_top1"])
        for key in ("layer1.0.conv1.weight", "layer4.1.conv2.weight", "layer3.0.downsample.0.weight"):
            assert (trained["model"][key] - resnet18_source[key]).abs().max() < 1e-3, (stream, key)
        conv1 = trained["model"]["conv1.weight"]
        if stream == "spatial":
            assert (conv1 - resnet18_source["conv1.weight"]).abs().max() < 1e-3
        elif name != "mmaction2-flow":  # cross-modality: the RGB mean, replicated
            expected = resnet18_source["conv1.weight"].mean(dim=1, keepdim=True).repeat(1, 20, 1, 1)
            assert (conv1 - expected).abs().max() < 1e-3
        assert conv1.shape[1] == (3 if stream == "spatial" else 20)
    printed = capsys.readouterr().out
    layout = {"mmaction2-flow": "mmaction2", "tsm": "tsn-pytorch", "reference-repo": "torchvision",
              "this-repo": "torchvision"}.get(name, name)
    assert f"{layout} layout" in printed


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.update({"conv1.weight": torch.zeros(64, 0, 7, 7)}), "conv1.weight has the shape \\(64, 0, 7, 7\\)"),
    (lambda s: s.update({"conv1.weight": torch.zeros(64)}), "conv1.weight has the shape \\(64,\\)"),
    (lambda s: s.update({"fc.weight": torch.zeros(10)}), "fc.weight has the shape \\(10,\\)"),
    (lambda s: s.update({3: torch.zeros(1)}), "no state dict of named tensors"),
])
def test_zoo_files_of_no_resnet_shape_are_one_message(tmp_path, edit, message):
    from tools import convert_weights
    state = build_model("resnet18", 10, 3, "none").state_dict()
    edit(state)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(UserError, match=message):
        build_model("resnet18", 5, 20, str(tmp_path / "w.pth"))
    with pytest.raises(UserError, match=message):
        convert_weights.main(convert_weights.get_args_parser().parse_args(
            [str(tmp_path / "w.pth"), str(tmp_path / "out.pth"), "--arch", "resnet18"]))


def test_a_kinetics_preset_sets_what_its_model_is_and_refuses_a_contradiction(capsys):
    import motion_cnn
    import spatial_cnn
    args = motion_cnn.parse_args(["--pretrained", "mmaction2-tsn-r50-k400-flow"])
    assert (args.arch, args.stack_length, args.flow_mean, args.flow_std) == ("resnet50", 5, 0.502, 0.502)
    args = motion_cnn.parse_args(["--pretrained", "mmaction2-tsn-r50-k400-flow", "--stack-length", "10"])
    assert args.stack_length == 10  # its 5 pairs tiled
    args = spatial_cnn.parse_args(["--pretrained", "mmaction2-tsn-r50-k400-rgb"])
    assert args.arch == "resnet50" and args.stack_length == 10
    with pytest.raises(SystemExit):
        motion_cnn.parse_args(["--pretrained", "mmaction2-tsn-r50-k400-flow", "--arch", "resnet101"])
    assert "is a model of --arch resnet50, the command line says resnet101" in capsys.readouterr().err
