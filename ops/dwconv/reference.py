"""Reference depthwise convolution: `F.conv2d` with `groups=C` and ATen's convolution backward.

The ground truth every other backend is tested against, and the route for every combination
the fast backends do not cover (stride > 1, devices without a kernel of ours).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def forward(x: Tensor, weight: Tensor, bias: Tensor | None, padding, dilation) -> Tensor:
    return F.conv2d(x, weight, bias, 1, tuple(padding), tuple(dilation), groups=x.shape[1])


def backward_input(grad_out: Tensor, weight: Tensor, input_hw, padding, dilation) -> Tensor:
    n, c = grad_out.shape[:2]
    return torch.nn.grad.conv2d_input(
        (n, c, *input_hw), weight, grad_out, 1, tuple(padding), tuple(dilation), groups=c
    )


def backward_weight(grad_out: Tensor, x: Tensor, kernel_hw, padding, dilation) -> Tensor:
    c = x.shape[1]
    return torch.nn.grad.conv2d_weight(
        x, (c, 1, *kernel_hw), grad_out, 1, tuple(padding), tuple(dilation), groups=c
    )
