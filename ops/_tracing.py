"""When an op must go through its registered custom op rather than its eager shortcut."""

from __future__ import annotations

import torch
from torch import Tensor


def traced(x: Tensor) -> bool:
    """True where only the custom op works or is seen: torch.compile / export, fake or meta
    tensors, jit tracing (fvcore), and Python dispatch modes (FlopCounterMode)."""
    return (
        type(x) is not Tensor
        or x.device.type == "meta"
        or torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch._C._len_torch_dispatch_stack() > 0
    )
