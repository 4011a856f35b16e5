"""ResNets for both streams: torchvision's models with a new classifier, any number of input
channels (cross-modality pre-training for more than 3), and loading of the reference repo's
checkpoints."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from utils import UserError

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


class Classifier(nn.Linear):
    """The new classifier, with optional dropout before it. A subclass of Linear so that the
    state dict keeps torchvision's names (``fc.weight``, ``fc.bias``)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__(in_features, num_classes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.dropout(x))


class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm that always normalises with its running statistics and never updates
    them, also in training mode; its affine parameters are not trained. Same state dict
    as nn.BatchNorm2d, so checkpoints load either way."""

    def train(self, mode: bool = True) -> "FrozenStatsBatchNorm2d":
        return super().train(False)


def freeze_partial_bn(model: nn.Module) -> int:
    """TSN's partial BN: every BatchNorm but the first (which adapts to the new input, e.g.
    20 flow channels) keeps its ImageNet statistics and affine parameters. Returns how many
    were frozen. Call before building the optimizer (and after SyncBatchNorm conversion)."""
    norms = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for name, norm in norms[1:]:
        frozen = FrozenStatsBatchNorm2d(norm.num_features, norm.eps, norm.momentum, norm.affine,
                                        norm.track_running_stats)
        frozen.load_state_dict(norm.state_dict())
        frozen.to(device=norm.weight.device if norm.affine else None)
        frozen.requires_grad_(False)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, frozen)
    model.train(model.training)
    return len(norms) - 1


def cross_modality_conv1(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Cross-modality pre-training (Wang et al., TSN): average an RGB first-conv weight
    (out, 3, k, k) over its input channels and replicate it to ``in_channels``."""
    return weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1).contiguous()


def tile_flow_conv1(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A flow first conv of L x/y pairs (channels x1, y1, x2, y2, ...: this repo's order and
    mmaction2's, whose FormatShape('NCHW_Flow') lays out L x (x, y)) for ``in_channels`` = 2 x kL:
    the pairs tiled k times and scaled by 1/k, so that the response to a constant flow (every x
    equal, every y equal) is unchanged."""
    pairs = weight.shape[1] // 2
    if weight.shape[1] % 2 or in_channels % 2 or (in_channels // 2) % pairs:
        raise UserError(f"a first conv of {weight.shape[1]} channels cannot be tiled to {in_channels}: the target "
                        f"stack must hold a whole multiple of its {pairs} x/y pairs\n  fix: --stack-length "
                        f"{pairs} (exact) or a multiple of it")
    times = in_channels // weight.shape[1]
    return (weight.repeat(1, times, 1, 1) / times).contiguous()


# --pretrained names of torchvision's ImageNet weights. "imagenet" is V1, the weights the
# reference repo fine-tuned (torchvision's DEFAULT is V2 for ResNet-50/101/152).
IMAGENET_WEIGHTS = {"imagenet": "IMAGENET1K_V1", "imagenet-v1": "IMAGENET1K_V1", "imagenet-v2": "IMAGENET1K_V2"}


def pretrained_name(pretrained: str) -> str:
    """What --pretrained means, for checkpoints: torchvision's weight name, 'none' or the path."""
    return IMAGENET_WEIGHTS.get(pretrained, pretrained)


def imagenet_weights(arch: str, name: str = "imagenet"):
    """torchvision's weights enum member for ``--pretrained name`` (imagenet, imagenet-v1/-v2)."""
    enum = models.get_model_weights(arch)
    member = IMAGENET_WEIGHTS[name]
    if not hasattr(enum, member):
        available = ", ".join(k for k, v in IMAGENET_WEIGHTS.items() if hasattr(enum, v))
        raise UserError(f"torchvision has no {member} weights for {arch}\n  fix: --pretrained one of {available}")
    return getattr(enum, member)


def imagenet_state_dict(arch: str, name: str = "imagenet") -> dict[str, torch.Tensor]:
    """ImageNet weights through torchvision's weights API: from its cache, or downloaded for
    an online user. Without either, a UserError names the exact file and the cache folder."""
    weights = imagenet_weights(arch, name)
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as err:  # URLError, socket errors, HTTP errors: all mean "not reachable"
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        filename = weights.url.rsplit("/", 1)[-1]
        raise UserError(
            f"could not load the ImageNet weights {filename} ({arch} {weights.name}) "
            f"({type(err).__name__}: {err}).\n"
            f"  fix: on a machine with internet run python -c \"import torchvision; "
            f"torchvision.models.get_model('{arch}', weights='{weights.name}')\", then copy "
            f"{filename} to {hub}/ here;\n"
            f"  or download {weights.url} and pass --pretrained PATH/{filename};\n"
            f"  or train from scratch with --pretrained none") from None


def ensure_pretrained(arch: str, pretrained: str) -> None:
    """Make sure --pretrained can be had now, before hours of other work: torchvision's ImageNet
    weights from its cache (fetched now if missing), a zoo preset or URL in torch.hub's cache
    (likewise), a local file that exists; else the loaders' own message with its fix."""
    from .zoo import resolve_weights

    if pretrained == "none":
        return
    if pretrained in IMAGENET_WEIGHTS:
        weights = imagenet_weights(arch, pretrained)
        if not (Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]).is_file():
            imagenet_state_dict(arch, pretrained)
        return
    path = Path(resolve_weights(pretrained))
    if not path.is_file():
        raise UserError(f"--pretrained {pretrained}: no such file\n  fix: pass imagenet, none, a zoo preset or the "
                        f"path of a state dict or checkpoint")


def load_torch_file(path: str | Path, what: str, fix: str) -> object:
    """torch.load a file safely (weights_only) to the CPU; a missing or unreadable file is a
    UserError that names it, says what was expected (``what``) and how to fix it."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.pth*"))
        hint = f"e.g. {path / inside[0]}" if inside else "the file inside it"
        raise UserError(f"{what} {path} is a folder, not a file\n  fix: pass {hint}")
    if not path.is_file():
        raise UserError(f"{what} not found: {path}\n  fix: {fix}")
    if path.name.endswith((".onnx", ".torchscript.pt")):
        raise UserError(f"{what} {path} is an exported model (tools/export.py), which predict.py runs, not a "
                        f"checkpoint\n  fix: {fix}")
    try:
        with warnings.catch_warnings():  # torch's own advice on other kinds of file; the message below says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{path}: cannot read this {what} ({type(err).__name__}: {err})\n  fix: {fix}") from None


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file with torchvision's keys: torchvision's .pth, this repo's
    or the reference repo's checkpoints, mmaction2's and tsn-pytorch/TSM's (models/zoo.py)."""
    from .zoo import resolve_weights, to_torchvision

    path = resolve_weights(str(path))
    state = load_torch_file(path, "--pretrained weights file", "pass imagenet, none or a path to a .pth state dict")
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise UserError(f"{path} holds no state dict of named tensors\n  fix: pass a .pth state dict or a checkpoint "
                        f"with 'state_dict' or 'model'")
    state, zoo, dropped = to_torchvision(normalize_keys(state))
    for key, dims in (("conv1.weight", 4), ("fc.weight", 2)):  # what the adaptations below divide and index
        weight = state.get(key)
        if weight is not None and (weight.dim() != dims or 0 in weight.shape):
            raise UserError(f"{path}: its {key} has the shape {tuple(weight.shape)}, not a ResNet's ({dims} "
                            f"dimensions, none of them 0)\n  fix: pass the weights of a ResNet")
    print(f"--pretrained {path}: {zoo} layout, {len(state)} tensors"
          + (f"; dropped its head: {', '.join(dropped[:4])}{' ...' if len(dropped) > 4 else ''}" if dropped else ""),
          flush=True)
    return state


def normalize_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map other naming schemes to ours: the reference repo's ``conv1_custom``/``fc_custom``,
    DataParallel/DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        key = key.replace("conv1_custom.", "conv1.").replace("fc_custom.", "fc.")
        out[key] = value
    return out


def build_model(arch: str = "resnet101", num_classes: int = 101, in_channels: int = 3,
                pretrained: str = "imagenet", dropout: float = 0.0) -> nn.Module:
    """A torchvision ResNet for ``in_channels`` inputs and ``num_classes`` outputs.

    pretrained: 'imagenet' (= 'imagenet-v1'), 'imagenet-v2' (torchvision's weights), 'none', or
    a path to a state dict.
    ImageNet (or file) weights with 3 input channels are adapted by cross-modality
    pre-training; a classifier of another size is replaced by a fresh one.
    """
    if arch not in ARCHS:
        raise UserError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")
    model = models.get_model(arch, weights=None)
    model.fc = Classifier(model.fc.in_features, num_classes, dropout)
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    if pretrained == "none":
        return model
    state = (imagenet_state_dict(arch, pretrained) if pretrained in IMAGENET_WEIGHTS
             else load_weights_file(pretrained))
    conv1 = state.get("conv1.weight")
    if conv1 is not None and conv1.shape[1] not in (3, in_channels) and in_channels != 3 \
            and conv1.shape[1] % 2 == 0 and in_channels % conv1.shape[1] == 0:
        state["conv1.weight"] = tile_flow_conv1(conv1, in_channels)  # a flow model of fewer pairs
        conv1 = state["conv1.weight"]
    if conv1 is not None and conv1.shape[1] != in_channels:
        if conv1.shape[1] != 3:
            raise UserError(f"--pretrained {pretrained}: its first conv has {conv1.shape[1]} input "
                            f"channels; this model needs {in_channels} (or an RGB model to adapt)\n  fix: a flow "
                            f"model of N x/y pairs fits the motion stream with --stack-length N or a multiple of "
                            f"N (mmaction2's Kinetics flow: 10 channels, --stack-length 5 or 10)")
        state["conv1.weight"] = cross_modality_conv1(conv1, in_channels)
    if state.get("fc.weight") is not None and state["fc.weight"].shape[0] != num_classes:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # a new classifier
    expected = model.state_dict()
    wrong_shape = {k: tuple(v.shape) for k, v in state.items() if k in expected and v.shape != expected[k].shape}
    state = {k: v for k, v in state.items() if k not in wrong_shape}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected or wrong_shape:
        key = next(iter(wrong_shape), None)
        first = (f"its {key} has shape {wrong_shape[key]}, {arch}'s {tuple(expected[key].shape)}"
                 if key else f"it has no {missing[0]}" if missing else f"{arch} has no {unexpected[0]}")
        raise UserError(f"--pretrained {pretrained} does not fit {arch}: {first} ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected, {len(wrong_shape)} of another shape)\n"
                        f"  fix: pass the --arch it was trained with (a checkpoint of another depth or layout "
                        f"cannot be loaded)")
    return model
