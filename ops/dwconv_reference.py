"""Reference depthwise convolution: `F.conv2d` with `groups=C` and its ATen backward.

This is the ground truth every other backend is tested against, and the fallback for every
combination the fast backends do not cover (stride > 1, unsupported devices).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups=x.shape[1])


def backward(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    output_mask: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Returns (grad_x, grad_weight, grad_bias); entries not asked for in output_mask are None."""
    return torch.ops.aten.convolution_backward(
        grad_out,
        x,
        weight,
        [weight.shape[0]] if output_mask[2] else None,
        list(stride),
        list(padding),
        list(dilation),
        False,
        [0, 0],
        x.shape[1],
        list(output_mask),
    )
