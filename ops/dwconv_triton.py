"""Triton depthwise convolution kernels (forward, input-gradient, weight-gradient).

Work in progress: kernels land in the next commit; until then `is_available` is False and the
dispatcher routes every call to the torch backend.
"""

from __future__ import annotations

from torch import Tensor


def is_available(x: Tensor) -> bool:
    return False


def forward(x, weight, bias, padding, dilation) -> Tensor:
    raise NotImplementedError


def backward_input(grad_out, weight, input_hw, padding, dilation) -> Tensor:
    raise NotImplementedError


def backward_weight(grad_out, x, kernel_hw, padding, dilation) -> Tensor:
    raise NotImplementedError
