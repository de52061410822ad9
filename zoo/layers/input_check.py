"""The channel check every zoo model runs on its input, with the model's name in the message.

Called as `if not torch.jit.is_scripting(): check_in_chans(self, x)`: TorchScript compiles
only the taken side of an `is_scripting()` test, so scripted models skip it. It also returns
at once while torch.fx traces symbolically (shapes are proxies then, and a branch on one
fails). Under torch.compile the comparison is on static sizes (or guarded symbolic ones), so
it adds no graph break; the message is built only when it raises.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

__all__ = ["check_in_chans", "model_name"]


def model_name(model: nn.Module) -> str:
    """The name the model was created by (`timm.create_model`), else its class name."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def check_in_chans(model: nn.Module, x: Tensor, also_accepted: tuple[int, ...] = ()) -> None:
    """Raise ValueError unless x is (N, model.in_chans, H, W) (or has an also_accepted count)."""
    if is_fx_symbolic_tracing():
        return
    in_chans = model.in_chans
    if x.dim() != 4:
        raise ValueError(
            f"{model_name(model)} expects a 4-D input (N, {in_chans}, H, W), got shape "
            f"{tuple(x.shape)}"
        )
    channels = x.shape[1]
    if channels != in_chans and channels not in also_accepted:
        accepted = "".join(f"; {c} accepted too" for c in also_accepted)
        raise ValueError(
            f"{model_name(model)} expects {in_chans} input channels (in_chans={in_chans}"
            f"{accepted}), got {channels}"
        )
