"""Depthwise convolution on oneDNN's fast CPU kernels: every direction phrased as a forward
convolution that lands on one of them (any dtype; the float32 work mostly goes to our own
kernels in native.py, by the dispatcher's choice).

PyTorch's CPU convolution is oneDNN, and for depthwise layers oneDNN has two fast kernels and
one slow fallback (read from ONEDNN_VERBOSE with the torch 2.14.1 wheel, which pins oneDNN):

- `jit_dw` (NCHW, reordered to 16-channel blocks): any kernel, but only while the padding is at
  most 6 and smaller than the kernel; beyond that oneDNN falls back to im2col + GEMM (`gemm`),
  10-50x slower.
- `brdgmm_dw` (channels_last forward): any kernel and padding, but kernels 11 and 13 wide run
  2-3x slower than 15 wide (13x13 at 2x64x56x56: 2.2 ms, 13x15: 0.8 ms).
- The weight-gradient has no fast kernel past 3x3 in NCHW nor past 13 wide in channels_last.

So:
- forward: crop the taps that only ever read padding; then jit_dw (NCHW, explicit padding
  where it exceeds 6) or brdgmm_dw (channels_last and wide NCHW kernels; 11/13-wide kernels
  widened to 15 by zero taps).
- input-gradient: the forward of grad_out with the kernel rotated by 180 degrees.
- weight-gradient: dW[c, i, j] = sum_n sum_(y, x) X[n, c, y + i - p, x + j - p] dY[n, c, y, x]
  is a forward depthwise convolution of X seen as (1, N*C, H, W) with dY as its (N*C) kernels,
  whose (kh, kw) output is then summed over the batch. On 2x64x56x56 fp32 with 2 threads it
  costs 1.2-1.5 ms at 13x13 against 8.4 ms for oneDNN's own weight-gradient in channels_last
  and 2.9 ms by FFT.

Stride is 1 everywhere in this file (the dispatcher sends strided convs to F.conv2d).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .._geometry import embed_live_taps, live_window, output_hw, rotated_padding
from .._layout import is_channels_last

# jit_dw accepts at most this much padding, and less than the dilated kernel's extent.
JIT_DW_MAX_PADDING = 6
# NCHW kernels at least this wide have no jit_dw forward at "same" padding: go channels_last.
GEMM_KERNEL_WIDTH = 15
# brdgmm_dw kernel widths that run faster once zero taps widen them to 15.
BRDGMM_WIDEN_TO_15 = (11, 13)


def _conv_plan(channels_last: bool, kernel_hw, pads, dilation, groups: int) -> Callable:
    """F.conv2d with (top, bottom, left, right) padding: padded explicitly when asymmetric, or
    when jit_dw (NCHW) would refuse it. Negative padding crops."""
    top, bottom, left, right = pads
    limit_h = min(JIT_DW_MAX_PADDING, dilation[0] * (kernel_hw[0] - 1))
    limit_w = min(JIT_DW_MAX_PADDING, dilation[1] * (kernel_hw[1] - 1))
    symmetric = top == bottom and left == right and top >= 0 and left >= 0
    if symmetric and (channels_last or (top <= limit_h and left <= limit_w)):
        return lambda x, w, b: F.conv2d(x, w, b, 1, (top, left), dilation, groups)
    explicit = (left, right, top, bottom)
    return lambda x, w, b: F.conv2d(F.pad(x, explicit), w, b, 1, 0, dilation, groups)


def forward_plan(x: Tensor, weight: Tensor, padding, dilation) -> Callable:
    """The forward for tensors shaped and laid out like x and weight, as a function of
    (x, weight, bias); keeps x's memory format."""
    in_hw = tuple(x.shape[2:])
    full_hw = tuple(weight.shape[2:])
    out_hw = output_hw(in_hw, full_hw, padding, dilation)
    live, pads = live_window(full_hw, in_hw, out_hw, padding, dilation)
    kernel_hw = tuple(s.stop - s.start for s in live)
    nchw = not is_channels_last(x)
    if nchw and dilation[1] * (kernel_hw[1] - 1) + 1 < GEMM_KERNEL_WIDTH:
        run = _conv_plan(False, kernel_hw, pads, dilation, x.shape[1])
    else:  # channels_last, or a wide kernel: brdgmm_dw beats jit_dw on an explicitly padded map
        widen = (kernel_hw[1] in BRDGMM_WIDEN_TO_15 and dilation[1] == 1) * (15 - kernel_hw[1]) // 2
        top, bottom, left, right = pads
        conv = _conv_plan(True, kernel_hw, (top, bottom, left + widen, right + widen), dilation,
                          x.shape[1])  # fmt: skip
        if widen:  # zero taps: brdgmm_dw runs 15-wide kernels 2-3x faster than 11 or 13 wide
            brdgmm = lambda x, w, b: conv(x, F.pad(w, (widen, widen)), b)  # noqa: E731
        else:
            brdgmm = conv
        if nchw:
            cl = torch.channels_last
            run = lambda x, w, b: brdgmm(x.contiguous(memory_format=cl), w, b).contiguous()  # noqa: E731
        else:
            run = brdgmm
    if kernel_hw == full_hw:
        return run
    rows, cols = live
    return lambda x, w, b: run(x, w[:, :, rows, cols], b)


def forward(x: Tensor, weight: Tensor, bias: Tensor | None, padding, dilation) -> Tensor:
    """Depthwise conv, stride 1, symmetric `padding`; the output keeps x's memory format.
    Planned for this one call (the dispatcher keeps plans per route)."""
    return forward_plan(x, weight, padding, dilation)(x, weight, bias)


def backward_input(grad_out: Tensor, weight: Tensor, input_hw, padding, dilation) -> Tensor:
    """dX: the forward of grad_out with the kernel rotated by 180 degrees."""
    reach = rotated_padding(weight.shape[2:], padding, dilation)
    return forward(grad_out, weight.flip(2, 3), None, reach, dilation)


def backward_weight(grad_out: Tensor, x: Tensor, kernel_hw, padding, dilation) -> Tensor:
    """dW (C, 1, kh, kw): X as (1, N*C, H, W) convolved with dY as N*C kernels, summed over N."""
    n, c, h, w = x.shape
    ho, wo = grad_out.shape[2:]
    live, (top, bottom, left, right) = live_window(kernel_hw, (h, w), (ho, wo), padding, dilation)
    kh, kw = (s.stop - s.start for s in live)
    planes = x.contiguous().view(1, n * c, h, w)
    kernels = grad_out.contiguous().view(n * c, 1, ho, wo)
    # The "dilation" of this conv is 1 over dY's taps; the weight's dilation becomes its stride.
    top_bottom_ok = top == bottom and top >= 0 and top <= min(JIT_DW_MAX_PADDING, ho - 1)
    left_right_ok = left == right and left >= 0 and left <= min(JIT_DW_MAX_PADDING, wo - 1)
    if top_bottom_ok and left_right_ok:
        per_sample = F.conv2d(planes, kernels, None, tuple(dilation), (top, left), 1, n * c)
    else:
        padded = F.pad(planes, (left, right, top, bottom))
        per_sample = F.conv2d(padded, kernels, None, tuple(dilation), 0, 1, n * c)
    accumulate = torch.float64 if x.dtype == torch.float64 else torch.float32
    grad = per_sample.view(n, c, kh, kw).sum(0, dtype=accumulate).to(x.dtype).unsqueeze(1)
    return embed_live_taps(grad, kernel_hw, live)
