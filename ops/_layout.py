"""Memory-layout rules shared by the dispatcher and the kernels."""

from __future__ import annotations

import torch
from torch import Tensor


def is_channels_last(x: Tensor) -> bool:
    """Whether x (N, C, H, W) keeps its channels innermost, as PyTorch's suggest_memory_format.

    Tensors contiguous in both formats (C == 1 or H == W == 1) count as NCHW. Strided views of
    a channels_last tensor, such as a channel slice x[:, a:b], count as channels_last, so ops
    on them return channels_last like F.conv2d does.
    """
    if x.is_contiguous():
        return False
    if x.is_contiguous(memory_format=torch.channels_last):
        return True
    n_stride, c_stride, h_stride, w_stride = x.stride()
    return x.shape[1] > 1 and c_stride == 1 and c_stride < w_stride <= h_stride <= n_stride


def memory_format(x: Tensor) -> torch.memory_format:
    return torch.channels_last if is_channels_last(x) else torch.contiguous_format
