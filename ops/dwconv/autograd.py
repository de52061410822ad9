"""The op's registration and its one backward.

`zoo::dwconv2d` (and `zoo::dwconv2d_backward`) are `torch.library` custom ops with fake
implementations, so torch.compile, torch.export, fx, TorchScript and the meta device see one
opaque op. Eager calls skip the custom op's dispatch (it costs more than a small 3x3 conv) and
run `DwConv2dFunction`, an autograd.Function made of the same `setup_context` and `backward` as
the custom op's autograd: one backward path, whichever way the forward went.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._geometry import output_hw
from .._layout import memory_format
from .._tracing import traced
from . import dispatch


@torch.library.custom_op("zoo::dwconv2d", mutates_args=())
def dwconv2d_op(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    padding: list[int],
    dilation: list[int],
    backend: str,
) -> Tensor:
    return dispatch.forward(x, weight, bias, padding, dilation, backend)


@dwconv2d_op.register_fake
def _(x, weight, bias, padding, dilation, backend):
    out_hw = output_hw(x.shape[2:], weight.shape[2:], padding, dilation)
    out = x.new_empty((x.shape[0], x.shape[1], *out_hw))
    return out.contiguous(memory_format=memory_format(x))


@torch.library.custom_op("zoo::dwconv2d_backward", mutates_args=())
def dwconv2d_backward_op(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor,
    padding: list[int],
    dilation: list[int],
    backend: str,
    output_mask: list[bool],
) -> tuple[Tensor, Tensor, Tensor]:
    grads = dispatch.backward(grad_out, x, weight, padding, dilation, backend, output_mask)
    # custom ops cannot return None: grads that were not asked for come back empty
    return tuple(x.new_empty(0) if g is None else g for g in grads)


@dwconv2d_backward_op.register_fake
def _(grad_out, x, weight, padding, dilation, backend, output_mask):
    grad_x = x.new_empty(x.shape).contiguous(memory_format=memory_format(x))
    grad_w = weight.new_empty(weight.shape)
    grad_b = x.new_empty((x.shape[1],))
    # like the real op: a separate empty tensor per gradient not asked for (no aliasing)
    grads = (grad_x, grad_w, grad_b)
    return tuple(g if need else x.new_empty(0) for g, need in zip(grads, output_mask, strict=True))


def setup_context(ctx, inputs, output) -> None:
    x, weight, bias, padding, dilation, backend = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None
    ctx.geometry = (padding, dilation, backend)


def backward(ctx, grad_out: Tensor):
    x, weight = ctx.saved_tensors
    mask = [
        ctx.needs_input_grad[0],
        ctx.needs_input_grad[1],
        ctx.has_bias and ctx.needs_input_grad[2],
    ]
    if traced(grad_out):
        grads = dwconv2d_backward_op(grad_out, x, weight, *ctx.geometry, mask)
    else:
        grads = dispatch.backward(grad_out, x, weight, *ctx.geometry, mask)
    return (*(g if need else None for g, need in zip(grads, mask, strict=True)), None, None, None)


dwconv2d_op.register_autograd(backward, setup_context=setup_context)


class DwConv2dFunction(torch.autograd.Function):
    """The eager autograd: the custom op's own setup_context and backward around the same
    forward, without the custom op's per-call dispatch. (The ctx-in-forward style: with a
    separate setup_context, Function.apply cost ~24 us more per call, measured.)"""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, dilation, backend):
        setup_context(ctx, (x, weight, bias, padding, dilation, backend), None)
        return dispatch.forward(x, weight, bias, padding, dilation, backend)

    backward = staticmethod(backward)
