"""The op's registration and its one backward.

`zoo::selective_scan` (and `zoo::selective_scan_backward`) are `torch.library` custom ops with
fake implementations, so torch.compile, torch.export, fx and the meta device see one opaque op.
The forward returns (out, states): `states` holds the state at the end of every chunk of
`dispatch.CHUNK` steps; the backward restarts from them, and its last entry is the final
state `return_last_state` reports (not differentiable, as in mamba). Eager calls skip the custom
op's dispatch and run `SelectiveScanFunction`, an autograd.Function made of the same
`setup_context` and `backward` as the custom op's autograd: one backward path, whichever way
the forward went.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._tracing import traced
from . import dispatch
from .reference import compute_dtype


@torch.library.custom_op("zoo::selective_scan", mutates_args=())
def selective_scan_op(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    backend: str,
) -> tuple[Tensor, Tensor]:
    return dispatch.forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend)


@selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend):
    batch, dim, length = u.shape
    chunks = -(-length // dispatch.CHUNK)
    states = u.new_empty((batch, dim, chunks, A.shape[1]), dtype=compute_dtype(u.dtype))
    return u.new_empty(u.shape), states


@torch.library.custom_op("zoo::selective_scan_backward", mutates_args=())
def selective_scan_backward_op(
    grad_out: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    states: Tensor,
    delta_softplus: bool,
    backend: str,
    output_mask: list[bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    grads = dispatch.backward(grad_out, u, delta, A, B, C, D, z, delta_bias, states,
                              delta_softplus, backend, output_mask)  # fmt: skip
    # custom ops cannot return None: grads that were not asked for come back empty
    return tuple(u.new_empty(0) if g is None else g for g in grads)


@selective_scan_backward_op.register_fake
def _(grad_out, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, backend,
      output_mask):  # fmt: skip
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    # like the real op: a separate empty tensor per gradient not asked for (no aliasing)
    return tuple(
        t.new_empty(t.shape) if t is not None and need else u.new_empty(0)
        for t, need in zip(inputs, output_mask, strict=True)
    )


def setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend = inputs
    _, states = output
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
    ctx.options = (delta_softplus, backend)
    ctx.mark_non_differentiable(states)


def backward(ctx, grad_out: Tensor, grad_states: Tensor | None):
    """Gradients of the op's inputs (the final state's gradient is not considered)."""
    u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    mask = [t is not None and ctx.needs_input_grad[i] for i, t in enumerate(inputs)]
    if grad_out is None:
        grad_out = torch.zeros_like(u)
    if traced(grad_out):
        grads = selective_scan_backward_op(grad_out, *inputs, states, *ctx.options, mask)
    else:
        grads = dispatch.backward(grad_out, *inputs, states, *ctx.options, mask)
    return (*(g if need else None for g, need in zip(grads, mask, strict=True)), None, None)


selective_scan_op.register_autograd(backward, setup_context=setup_context)


class SelectiveScanFunction(torch.autograd.Function):
    """The eager autograd: the custom op's own setup_context and backward around the same
    forward, without the custom op's per-call dispatch (ctx-in-forward style, as
    ops/dwconv/autograd.py measured cheaper per call)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend):
        inputs = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend)
        output = dispatch.forward(*inputs)
        setup_context(ctx, inputs, output)
        return output

    backward = staticmethod(backward)
