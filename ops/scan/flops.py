"""FLOP counts of the op, so counters see the same FLOPs whatever backend computes the scan.

The count is VMamba's `flops_selective_scan_fn` (its op-by-op count of mamba's
`selective_scan_ref`, the convention Mamba-based vision models report), in multiply-adds:

    9 * batch * dim * L * N    (discretisation, state update and read-out, per state and step)
    + batch * dim * L          with D (the skip term D u)
    + batch * dim * L          with z (the gate)

`torch.utils.flop_counter.FlopCounterMode` (and Lightning's model summary) gets formulas for
`zoo::selective_scan` and its backward: 2 FLOPs per multiply-add, as PyTorch counts matmuls, and
the backward twice the forward (as for a matmul's two gradients). fvcore counts 1 per
multiply-add and takes handles by op name: `FVCORE_HANDLES` (pass it to
`FlopCountAnalysis(...).set_op_handle(**FVCORE_HANDLES)`).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from . import autograd  # noqa: F401  (the ops must exist before formulas attach to them)


def multiply_adds(u_shape, dstate: int, has_D: bool, has_z: bool) -> int:
    batch, dim, length = u_shape
    per_step = batch * dim * length
    return 9 * per_step * dstate + per_step * (int(has_D) + int(has_z))


@register_flop_formula(torch.ops.zoo.selective_scan)
def _forward_flops(u_shape, delta_shape, A_shape, B_shape, C_shape, D_shape, z_shape,
                   bias_shape, delta_softplus, backend, *, out_shape, **_):  # fmt: skip
    return 2 * multiply_adds(u_shape, A_shape[1], D_shape is not None, z_shape is not None)


@register_flop_formula(torch.ops.zoo.selective_scan_backward)
def _backward_flops(grad_shape, u_shape, delta_shape, A_shape, B_shape, C_shape, D_shape,
                    z_shape, bias_shape, states_shape, delta_softplus, backend, output_mask,
                    *, out_shape, **_):  # fmt: skip
    return 4 * multiply_adds(u_shape, A_shape[1], D_shape is not None, z_shape is not None)


def _fvcore_selective_scan(inputs, outputs) -> int:
    """fvcore handle for `zoo::selective_scan` nodes of a jit trace (u, delta, A, B, C, D, z,
    ...); absent optional tensors are None constants there."""

    def given(value) -> bool:
        return isinstance(value.type(), torch._C.TensorType)

    u_shape = inputs[0].type().sizes()
    dstate = inputs[2].type().sizes()[1]
    return multiply_adds(u_shape, dstate, given(inputs[5]), given(inputs[6]))


FVCORE_HANDLES = {"zoo::selective_scan": _fvcore_selective_scan}
