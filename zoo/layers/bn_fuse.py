"""Fold an eval-mode BatchNorm into the convolution or linear layer that feeds it."""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor


def fuse_bn(weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of `bn(layer(x))` as one layer, for a layer with (weight, bias).

    weight has the output channels first (conv (O, I, kh, kw) or linear (O, I)); bias may be
    None. Uses the running statistics, so the result equals the pair in eval mode only.
    """
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    shift = bn.bias - bn.running_mean * scale
    fused_weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
    fused_bias = shift if bias is None else shift + bias * scale
    return fused_weight, fused_bias
