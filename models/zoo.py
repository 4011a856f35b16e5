"""State dicts of the action-recognition zoos, mapped to torchvision's ResNet keys.

Detected from the keys:

- ``torchvision``: ``conv1.weight``, ``bn1.*``, ``layerX.Y.convN.weight``, ``layerX.Y.bnN.*``,
  ``layerX.Y.downsample.0|1.*`` (also this repo's checkpoints and the reference repo's, whose
  ``conv1_custom``/``fc_custom`` and ``module.`` prefixes models.normalize_keys removes first).
- ``mmaction2`` (0.x and 1.x, ``state_dict`` of a recognizer): ``backbone.conv1.conv.weight``,
  ``backbone.conv1.bn.*``, ``backbone.layerX.Y.convN.conv|bn.*``,
  ``backbone.layerX.Y.downsample.conv|bn.*``; the head ``cls_head.*`` is dropped.
- ``tsn-pytorch`` and TSM (``module.base_model.*``; TSM wraps shifted convs as ``.net``):
  ``new_fc.*`` (their classifier) is dropped.

Every backbone tensor must land: a checkpoint of another depth or an unknown layout is one
message naming the first key that does not fit.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from utils import UserError, sha256_of

ZOO_FORMATS = ("torchvision", "mmaction2", "tsn-pytorch")
_MMACTION_LAYER = re.compile(r"^(layer\d+\.\d+)\.(conv\d)\.(conv|bn)\.(.+)$")
_MMACTION_DOWNSAMPLE = re.compile(r"^(layer\d+\.\d+)\.downsample\.(conv|bn)\.(.+)$")


def detect_format(state: dict[str, torch.Tensor]) -> str:
    """Which zoo's layout a state dict has (see the module's docstring)."""
    keys = list(state)
    if any(k.startswith(("backbone.", "cls_head.")) for k in keys):
        return "mmaction2"
    if any(k.startswith(("module.base_model.", "base_model.", "new_fc.", "module.new_fc.")) for k in keys):
        return "tsn-pytorch"
    return "torchvision"


def to_torchvision(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """(the state dict with torchvision's keys, its zoo format, the keys dropped: heads)."""
    zoo = detect_format(state)
    out, dropped = {}, []
    for key, value in state.items():
        if zoo == "mmaction2":
            new = _from_mmaction2(key)
        elif zoo == "tsn-pytorch":
            new = _from_tsn(key)
        else:
            new = key
        if new is None:
            dropped.append(key)
        else:
            out[new] = value
    return out, zoo, dropped


def _from_mmaction2(key: str) -> str | None:
    if key.startswith("cls_head."):
        return None
    key = key.removeprefix("backbone.")
    if key.startswith("conv1.conv."):
        return "conv1." + key[len("conv1.conv."):]
    if key.startswith("conv1.bn."):
        return "bn1." + key[len("conv1.bn."):]
    match = _MMACTION_LAYER.match(key)
    if match:
        block, conv, part, rest = match.groups()
        return f"{block}.{conv if part == 'conv' else 'bn' + conv[4:]}.{rest}"
    match = _MMACTION_DOWNSAMPLE.match(key)
    if match:
        block, part, rest = match.groups()
        return f"{block}.downsample.{0 if part == 'conv' else 1}.{rest}"
    return key  # an unknown key stays as it is: the strict load names it


def _from_tsn(key: str) -> str | None:
    key = key.removeprefix("module.")
    if key.startswith("new_fc."):
        return None
    key = key.removeprefix("base_model.")
    return key.replace(".net.", ".")  # TSM's temporal-shift wrappers around a conv


# --pretrained NAME: the zoos' Kinetics-400 models (downloaded once into torch.hub's cache; the
# sha256 prefix in each file name is checked). Both are ResNet-50 (--arch resnet50); the flow
# model takes 5 x/y pairs (--stack-length 5) normalised as (x - 128) / 128
# (--flow-mean 0.502 --flow-std 0.502).
_OPENMMLAB = "https://download.openmmlab.com/mmaction/recognition/tsn"
ZOO_PRESETS = {
    "mmaction2-tsn-r50-k400-rgb": f"{_OPENMMLAB}/tsn_r50_1x1x3_100e_kinetics400_rgb/"
                                  f"tsn_r50_1x1x3_100e_kinetics400_rgb_20200614-e508be42.pth",
    "mmaction2-tsn-r50-k400-flow": f"{_OPENMMLAB}/tsn_r50_320p_1x1x3_110e_kinetics400_flow/"
                                   f"tsn_r50_320p_1x1x3_110e_kinetics400_flow_20200705-3036bab6.pth",
}

# what each preset's model is: --pretrained NAME sets these where the command line is silent and
# refuses a flag that contradicts one (the flow settings on the motion stream)
ZOO_PRESET_SETTINGS = {
    "mmaction2-tsn-r50-k400-rgb": {"arch": "resnet50"},
    "mmaction2-tsn-r50-k400-flow": {"arch": "resnet50", "stack_length": 5, "flow_mean": 0.502, "flow_std": 0.502},
}
FLOW_SETTINGS = ("stack_length", "flow_mean", "flow_std")

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")  # torch.hub's convention: NAME-<sha256 prefix>.pth


def cached_file_of_url(url: str) -> Path:
    """Where torch.hub's cache keeps (or will keep) the file of an http(s) URL; nothing is fetched."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.split("?", 1)[0].rsplit("/", 1)[-1]


def resolve_weights(path_or_url: str) -> str:
    """A local path as it is; an http(s) URL or a name of ``ZOO_PRESETS``: its file in torch.hub's
    cache (downloaded once), whose sha256 must start with the hash its file name carries, when
    it carries one."""
    url = ZOO_PRESETS.get(str(path_or_url), str(path_or_url))
    if not url.startswith(("http://", "https://")):
        return path_or_url
    cached = cached_file_of_url(url)
    match = _HASH_IN_NAME.search(cached.name)
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=match.group(1) if match else None,
                                           progress=False)
        except Exception as err:  # no network, HTTP errors, a hash that does not match
            raise UserError(f"could not download {url} ({type(err).__name__}: {err})\n  fix: download it where "
                            f"there is internet and put it at {cached}, or pass the local file") from None
    elif match and not sha256_of(cached).startswith(match.group(1)):
        raise UserError(f"{cached}: its sha256 does not start with {match.group(1)}, as its name says (a damaged or "
                        f"different file)\n  fix: delete it to download it again, or pass the right file")
    return str(cached)
