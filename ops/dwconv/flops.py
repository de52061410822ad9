"""FLOP counts of the op, so counters see the same FLOPs whatever backend computes the conv.

`torch.utils.flop_counter.FlopCounterMode` (and Lightning's model summary, which uses it) gets
formulas registered for `zoo::dwconv2d` and its backward: the same counts as for
`aten.convolution` (2 per multiply-add, every tap of every output, padding included).
fvcore counts 1 per multiply-add and takes handles by op name: `FVCORE_HANDLES` (zoo
registers it into fvcore's defaults on import, so `FlopCountAnalysis` needs no extra setup).
"""

from __future__ import annotations

from math import prod

import torch
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

from . import autograd  # noqa: F401  (the ops must exist before formulas attach to them)


@register_flop_formula(torch.ops.zoo.dwconv2d)
def _forward_flops(x_shape, w_shape, bias_shape, padding, dilation, backend, *, out_shape, **_):
    return conv_flop_count(x_shape, w_shape, out_shape)


@register_flop_formula(torch.ops.zoo.dwconv2d_backward)
def _backward_flops(grad_shape, x_shape, w_shape, padding, dilation, backend, output_mask,
                    *, out_shape, **_):  # fmt: skip
    # each of the input- and weight-gradients costs one convolution of the forward's size
    return sum(conv_flop_count(x_shape, w_shape, grad_shape) for need in output_mask[:2] if need)


def multiply_adds(x_shape, w_shape, out_shape) -> int:
    """N * C * Ho * Wo * kh * kw: one per multiply-add (fvcore's convention)."""
    return prod(out_shape) * prod(w_shape[2:])


def _fvcore_dwconv2d(inputs, outputs) -> int:
    """fvcore handle for `zoo::dwconv2d` nodes of a jit trace (x, weight, bias, ...)."""
    x_shape, w_shape = (inputs[i].type().sizes() for i in (0, 1))
    return multiply_adds(x_shape, w_shape, outputs[0].type().sizes())


FVCORE_HANDLES = {"zoo::dwconv2d": _fvcore_dwconv2d}
