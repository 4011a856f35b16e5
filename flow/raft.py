"""RAFT optical flow through torchvision (weights from its cache or a local file)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from models import load_torch_file
from utils import UserError


def load_raft(weights_path: str | None, device: torch.device) -> torch.nn.Module:
    """torchvision's raft_large with its C_T_SKHT_V2 weights: ``weights_path`` or torchvision's
    cache (downloaded for an online user); a clear error when neither is there."""
    from torchvision.models.optical_flow import Raft_Large_Weights, raft_large

    weights = Raft_Large_Weights.DEFAULT
    model = raft_large(weights=None, progress=False)
    try:
        if weights_path:
            state = load_torch_file(weights_path, "RAFT weights file", "pass raft_large's state dict to --raft-weights")
        else:
            state = weights.get_state_dict(progress=False, check_hash=False)
    except UserError:
        raise
    except Exception as err:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        raise UserError(f"could not load RAFT weights ({type(err).__name__}: {err})\n  fix: download "
                        f"{weights.url} into {hub}/ or pass --raft-weights PATH, or use --method tvl1-torch") from None
    model.load_state_dict(state)
    return model.eval().to(device)


class RAFT:
    """Flow between consecutive RGB frames: frames [N, H, W, 3] uint8 -> flow [N-1, 2, H, W]."""

    def __init__(self, model: torch.nn.Module, batch: int = 16):
        self.model, self.batch = model, batch

    @torch.no_grad()
    def __call__(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """first, second: [B, H, W, 3] uint8 RGB on the model's device."""
        def prepare(x):
            x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
            h, w = x.shape[-2:]
            # RAFT wants sides divisible by 8 and at least 128 (its correlation pyramid)
            pad_h, pad_w = max(128, h + (-h) % 8) - h, max(128, w + (-w) % 8) - w
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate"), h, w
        a, h, w = prepare(first)
        b, _, _ = prepare(second)
        return self.model(a, b)[-1][..., :h, :w]
