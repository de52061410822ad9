"""Triton selective-scan kernels (forward and backward) for CUDA tensors.

One program per item: BLOCK_D channels of one group of one batch element (the channels of a
group share variable B and C) with all N states, as a [BLOCK_D, BLOCK_N] register tile. The
program walks the sequence chunk by chunk (CHUNK steps, the dispatcher's saved-state chunk);
inside a chunk the recurrence x_l = a_l x_{l-1} + b_l is a `tl.associative_scan` over the
[BLOCK_D, BLOCK_N, CHUNK] tile with the combine (a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2),
started from the state the previous chunk ended with.

The backward walks the chunks in reverse. It recomputes each chunk's states from the stored
state before it, and runs the adjoint h_l = dy_l C_l + a_{l+1} h_{l+1} as a reverse
associative scan. Triton has no shift along an axis, so the neighbours a_{l+1} and x_{l-1} are
recomputed from the inputs loaded one step later / earlier (two more exps per element, cheap
on a GPU) instead of being shifted out of registers.

Reductions are deterministic (no atomics): dA, fixed dB/dC, dD and d(delta_bias) are written per
batch element, variable dB/dC per channel block, and summed afterwards. Arithmetic is fp32
(fp64 for fp64 input), every load upcast before use; outputs are stored in their tensors'
dtypes. Block sizes were not timed (no GPU was available when this was written); the tests
run the kernels under TRITON_INTERPRET=1 and compile them for sm_90.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._triton import INTERPRETED as _INTERPRETED
from .._triton import (
    is_available,  # noqa: F401  (the backend's own check, for the dispatcher)
    tl,
    triton,
)
from .._triton import jit as _jit
from .reference import compute_dtype

# ----------------------------------------------------------------------------------------------
# Kernels


@_jit
def _combine(a1, b1, a2, b2):
    return a1 * a2, b1 * a2 + b2


@_jit
def _discretise(raw, bias, SOFTPLUS: tl.constexpr):
    """delta' = softplus(delta + bias) (the identity above 20, like F.softplus) and its
    derivative (1 above 20, like softplus_backward)."""
    x = raw + bias
    if SOFTPLUS:
        t = tl.exp(-tl.abs(x))
        value = tl.where(x > 20.0, x, tl.maximum(x, 0.0) + tl.log(1.0 + t))
        slope = tl.where(x > 20.0, 1.0, tl.where(x >= 0.0, 1.0 / (1.0 + t), t / (1.0 + t)))
    else:
        value = x
        slope = x * 0.0 + 1.0
    return value, slope


@_jit
def _load_BC(ptr, fixed, n, n_ok, pos, pos_ok, L, VARIABLE: tl.constexpr, ACC: tl.constexpr):
    """B or C at steps `pos`, broadcastable to [BLOCK_D, BLOCK_N, CHUNK] (0 past the end)."""
    if VARIABLE:  # (a constexpr branch with one return: the compiler types every return)
        value = tl.load(ptr + n[:, None] * L + pos[None, :], mask=n_ok[:, None] & pos_ok[None, :],
                        other=0.0).to(ACC)[None, :, :]  # fmt: skip
    else:
        value = fixed[:, :, None]
    return value


@_jit
def _step_terms(
    delta_ptr, u_ptr, B_ptr, row, pos, pos_ok, n, n_ok, A, bias, B_fixed, L,
    VAR_B: tl.constexpr, SOFTPLUS: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """For steps `pos` [CHUNK] of channels `row` [BLOCK_D, 1]: the decay a and drive b
    [BLOCK_D, BLOCK_N, CHUNK] (a = 1, b = 0 outside the sequence: the state passes through),
    and delta', its slope and u [BLOCK_D, CHUNK]."""
    ok = pos_ok[None, :] & (row >= 0)
    raw = tl.load(delta_ptr + row * L + pos[None, :], mask=ok, other=0.0).to(ACC)
    dl, slope = _discretise(raw, bias[:, None], SOFTPLUS)
    dl = tl.where(ok, dl, 0.0)
    uu = tl.load(u_ptr + row * L + pos[None, :], mask=ok, other=0.0).to(ACC)
    a = tl.exp(dl[:, None, :] * A[:, :, None])
    b = (dl * uu)[:, None, :] * _load_BC(B_ptr, B_fixed, n, n_ok, pos, pos_ok, L, VAR_B, ACC)
    return a, b, dl, slope, uu


@_jit
def _program(
    A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, DIM, L, N, PER_GROUP, GROUPS, BLOCKS,
    VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """This program's item (batch element b, group g, channel block j): its channel rows
    b * DIM + d [BLOCK_D, 1] (-1 for lanes past the group, never touched), state indices,
    per-channel parameters and the group's variable B / C rows."""
    pid = tl.program_id(0).to(tl.int64)
    pair = pid // BLOCKS  # b * GROUPS + g
    lane = (pid % BLOCKS) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = lane < PER_GROUP
    d = (pair % GROUPS) * PER_GROUP + lane
    row = tl.where(d_ok, (pair // GROUPS) * DIM + d, -1)[:, None]
    n = tl.arange(0, BLOCK_N)
    n_ok = n < N
    dn = d[:, None] * N + n[None, :]
    dn_ok = d_ok[:, None] & n_ok[None, :]
    A = tl.load(A_ptr + dn, mask=dn_ok, other=0.0).to(ACC)
    B_fixed = A * 0.0
    C_fixed = A * 0.0
    if not VAR_B:
        B_fixed = tl.load(B_ptr + dn, mask=dn_ok, other=0.0).to(ACC)
    if not VAR_C:
        C_fixed = tl.load(C_ptr + dn, mask=dn_ok, other=0.0).to(ACC)
    Dv = tl.zeros_like(d).to(ACC)
    bias = tl.zeros_like(d).to(ACC)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=d_ok, other=0.0).to(ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=d_ok, other=0.0).to(ACC)
    B_rows = B_ptr + pair * N * L
    C_rows = C_ptr + pair * N * L
    return pid, row, n, n_ok, A, B_fixed, C_fixed, Dv, bias, B_rows, C_rows


@_jit
def _forward_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, states_ptr,
    DIM, L, N, PER_GROUP, GROUPS, BLOCKS, CHUNKS,
    VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ACC: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    pid, row, n, n_ok, A, B_fixed, C_fixed, Dv, bias, B_rows, C_rows = _program(
        A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, DIM, L, N, PER_GROUP, GROUPS, BLOCKS,
        VAR_B, VAR_C, HAS_D, HAS_BIAS, ACC, BLOCK_D, BLOCK_N,
    )  # fmt: skip
    t = tl.arange(0, CHUNK)
    x = A * 0.0
    for c in range(0, CHUNKS):
        pos = c * CHUNK + t
        pos_ok = pos < L
        a, drive, dl, _, uu = _step_terms(
            delta_ptr, u_ptr, B_rows, row, pos, pos_ok, n, n_ok, A, bias, B_fixed, L,
            VAR_B, SOFTPLUS, ACC,
        )  # fmt: skip
        decay, local = tl.associative_scan((a, drive), axis=2, combine_fn=_combine)
        xs = local + decay * x[:, :, None]
        y = tl.sum(xs * _load_BC(C_rows, C_fixed, n, n_ok, pos, pos_ok, L, VAR_C, ACC), axis=1)
        y += Dv[:, None] * uu
        ok = pos_ok[None, :] & (row >= 0)
        if HAS_Z:
            zz = tl.load(z_ptr + row * L + pos[None, :], mask=ok, other=0.0).to(ACC)
            y = y * zz / (1.0 + tl.exp(-zz))
        tl.store(out_ptr + row * L + pos[None, :], y.to(out_ptr.dtype.element_ty), mask=ok)
        # padded steps keep the state, so the last column is the chunk's final state
        x = tl.sum(tl.where(t[None, None, :] == CHUNK - 1, xs, 0.0), axis=2)
        state_off = (row * CHUNKS + c) * N + n[None, :]
        tl.store(states_ptr + state_off, x, mask=(row >= 0) & n_ok[None, :])


@_jit
def _backward_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, dout_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
    DIM, L, N, PER_GROUP, GROUPS, BLOCKS, CHUNKS,
    VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ACC: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    pid, row, n, n_ok, A, B_fixed, C_fixed, Dv, bias, B_rows, C_rows = _program(
        A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, DIM, L, N, PER_GROUP, GROUPS, BLOCKS,
        VAR_B, VAR_C, HAS_D, HAS_BIAS, ACC, BLOCK_D, BLOCK_N,
    )  # fmt: skip
    # variable dB/dC: this channel block's partial sums, (pid, N, L)
    dB_rows = dB_ptr + pid * N * L
    dC_rows = dC_ptr + pid * N * L
    t = tl.arange(0, CHUNK)
    dn_ok = (row >= 0) & n_ok[None, :]
    q = A * 0.0  # a_{l+1} h_{l+1} carried in from the chunk after
    dA = A * 0.0
    dB_fixed = A * 0.0
    dC_fixed = A * 0.0
    dD = Dv * 0.0
    dbias = Dv * 0.0
    for i in range(0, CHUNKS):
        c = CHUNKS - 1 - i
        pos = c * CHUNK + t
        pos_ok = pos < L
        ok = pos_ok[None, :] & (row >= 0)
        a, drive, dl, slope, uu = _step_terms(
            delta_ptr, u_ptr, B_rows, row, pos, pos_ok, n, n_ok, A, bias, B_fixed, L,
            VAR_B, SOFTPLUS, ACC,
        )  # fmt: skip
        # the same terms one step earlier (identity before the chunk) and later (identity past
        # the chunk, whose state enters through q)
        first = t[None, None, :] == 0
        a_prev, drive_prev, _, _, _ = _step_terms(
            delta_ptr, u_ptr, B_rows, row, pos - 1, pos_ok & (t > 0), n, n_ok, A, bias, B_fixed,
            L, VAR_B, SOFTPLUS, ACC,
        )  # fmt: skip
        a_next, _, _, _, _ = _step_terms(
            delta_ptr, u_ptr, B_rows, row, pos + 1, (pos + 1 < L) & (t < CHUNK - 1), n, n_ok, A,
            bias, B_fixed, L, VAR_B, SOFTPLUS, ACC,
        )  # fmt: skip
        start_off = (row * CHUNKS + c - 1) * N + n[None, :]
        x0 = tl.load(states_ptr + start_off, mask=dn_ok & (c > 0), other=0.0).to(ACC)
        decay, local = tl.associative_scan((a_prev, drive_prev), axis=2, combine_fn=_combine)
        x_prev = local + decay * x0[:, :, None]
        xs = a * x_prev + drive
        go = tl.load(dout_ptr + row * L + pos[None, :], mask=ok, other=0.0).to(ACC)
        dy = go
        if HAS_Z:
            zz = tl.load(z_ptr + row * L + pos[None, :], mask=ok, other=0.0).to(ACC)
            sig = 1.0 / (1.0 + tl.exp(-zz))
            dy = go * zz * sig
        Ct = _load_BC(C_rows, C_fixed, n, n_ok, pos, pos_ok, L, VAR_C, ACC)
        if HAS_Z:
            y = tl.sum(xs * Ct, axis=1) + Dv[:, None] * uu
            dz = go * y * sig * (1.0 + zz * (1.0 - sig))
            tl.store(dz_ptr + row * L + pos[None, :], dz.to(dz_ptr.dtype.element_ty), mask=ok)
        # h_l = dy_l C_l + a_{l+1} h_{l+1}, the last step taking q from the next chunk
        beta = dy[:, None, :] * Ct + tl.where(t[None, None, :] == CHUNK - 1, q[:, :, None], 0.0)
        _, h = tl.associative_scan((a_next, beta), axis=2, combine_fn=_combine, reverse=True)
        w = h * a * x_prev  # the gradient of delta'_l A at every step
        q = tl.sum(tl.where(first, h * a, 0.0), axis=2)
        hB = h * _load_BC(B_rows, B_fixed, n, n_ok, pos, pos_ok, L, VAR_B, ACC)
        ddl = tl.sum(w * A[:, :, None] + hB * uu[:, None, :], axis=1)
        du = tl.sum(hB, axis=1) * dl + Dv[:, None] * dy
        dA += tl.sum(w * dl[:, None, :], axis=2)
        dD += tl.sum(dy * uu, axis=1)
        d_drive = h * (dl * uu)[:, None, :]
        d_read = dy[:, None, :] * xs
        npos_ok = n_ok[:, None] & pos_ok[None, :]
        nl = n[:, None] * L + pos[None, :]
        if VAR_B:
            tl.store(dB_rows + nl, tl.sum(tl.where(ok[:, None, :], d_drive, 0.0), axis=0),
                     mask=npos_ok)  # fmt: skip
        else:
            dB_fixed += tl.sum(d_drive, axis=2)
        if VAR_C:
            tl.store(dC_rows + nl, tl.sum(tl.where(ok[:, None, :], d_read, 0.0), axis=0),
                     mask=npos_ok)  # fmt: skip
        else:
            dC_fixed += tl.sum(d_read, axis=2)
        ddl = tl.where(ok, ddl * slope, 0.0)
        dbias += tl.sum(ddl, axis=1)
        tl.store(ddelta_ptr + row * L + pos[None, :], ddl.to(ddelta_ptr.dtype.element_ty), mask=ok)
        tl.store(du_ptr + row * L + pos[None, :], du.to(du_ptr.dtype.element_ty), mask=ok)
    dn = row * N + n[None, :]
    tl.store(dA_ptr + dn, dA, mask=dn_ok)
    if not VAR_B:
        tl.store(dB_ptr + dn, dB_fixed, mask=dn_ok)
    if not VAR_C:
        tl.store(dC_ptr + dn, dC_fixed, mask=dn_ok)
    if HAS_D:
        tl.store(dD_ptr + row, dD[:, None], mask=row >= 0)
    if HAS_BIAS:
        tl.store(dbias_ptr + row, dbias[:, None], mask=row >= 0)


# ----------------------------------------------------------------------------------------------
# Launchers

# Channels per program: few on a GPU (the [BLOCK_D, BLOCK_N, CHUNK] tiles live in registers
# and programs are few); the interpreter's cost is per tl op, so it takes a whole group.
_GPU_BLOCK_D = 4
_INTERPRETER_BLOCK_D = 16


def _launch_shape(u: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[dict, int, int]:
    """(the kernels' size arguments, the number of programs, BLOCK_D)."""
    batch, dim, length = u.shape
    groups = B.shape[1] if B.dim() == 4 else C.shape[1] if C.dim() == 4 else 1
    per_group = dim // groups
    most = _INTERPRETER_BLOCK_D if _INTERPRETED else _GPU_BLOCK_D
    block_d = min(triton.next_power_of_2(per_group), most)
    blocks = triton.cdiv(per_group, block_d)
    sizes = dict(DIM=dim, L=length, N=A.shape[1], PER_GROUP=per_group, GROUPS=groups,
                 BLOCKS=blocks)  # fmt: skip
    return sizes, batch * groups * blocks, block_d


def _flags(B, C, D, z, delta_bias, delta_softplus, dtype, block_d, n, chunk) -> dict:
    return dict(
        VAR_B=B.dim() == 4, VAR_C=C.dim() == 4, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
        ACC=tl.float64 if dtype == torch.float64 else tl.float32,
        BLOCK_D=block_d, BLOCK_N=triton.next_power_of_2(n), CHUNK=chunk,
    )  # fmt: skip


def _contiguous(*tensors):
    return [None if t is None else t.contiguous() for t in tensors]


def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, chunk: int):
    u, delta, A, B, C, D, z, delta_bias = _contiguous(u, delta, A, B, C, D, z, delta_bias)
    dtype = compute_dtype(u.dtype)
    sizes, programs, block_d = _launch_shape(u, A, B, C)
    chunks = triton.cdiv(sizes["L"], chunk)
    out = torch.empty_like(u)
    states = torch.empty((u.shape[0], u.shape[1], chunks, A.shape[1]), dtype=dtype,
                         device=u.device)  # fmt: skip
    if programs == 0:
        return out, states
    _forward_kernel[(programs,)](
        u, delta, A, B, C, u if D is None else D, u if z is None else z,
        u if delta_bias is None else delta_bias, out, states,
        **sizes, CHUNKS=chunks,
        **_flags(B, C, D, z, delta_bias, delta_softplus, dtype, block_d, A.shape[1], chunk),
    )  # fmt: skip
    return out, states


def backward(grad_out, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, chunk,
             output_mask):  # fmt: skip
    """Gradients in the inputs' dtypes; the kernel computes all of them at once."""
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    grad_out, states, *contiguous = _contiguous(grad_out, states, *inputs)
    u, delta, A, B, C, D, z, delta_bias = contiguous
    dtype = compute_dtype(u.dtype)
    sizes, programs, block_d = _launch_shape(u, A, B, C)
    batch, dim, length = u.shape
    n = A.shape[1]
    chunks = triton.cdiv(length, chunk)

    def new(*shape):
        return torch.zeros(shape, dtype=dtype, device=u.device)

    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    dA = new(batch, dim, n)
    dB = new(programs, n, length) if B.dim() == 4 else new(batch, dim, n)
    dC = new(programs, n, length) if C.dim() == 4 else new(batch, dim, n)
    dD, dbias = new(batch, dim), new(batch, dim)
    if programs > 0:
        _backward_kernel[(programs,)](
            u, delta, A, B, C, u if D is None else D, u if z is None else z,
            u if delta_bias is None else delta_bias, states.to(dtype), grad_out,
            du, ddelta, du if dz is None else dz, dA, dB, dC, dD, dbias,
            **sizes, CHUNKS=chunks,
            **_flags(B, C, D, z, delta_bias, delta_softplus, dtype, block_d, n, chunk),
        )  # fmt: skip

    def per_group(g: Tensor, like: Tensor) -> Tensor:
        # (programs, N, L) -> (batch, groups, N, L): the sum over each group's channel blocks
        return g.view(*like.shape[:2], -1, n, length).sum(2)

    grads = (
        du, ddelta, dA.sum(0),
        per_group(dB, B) if B.dim() == 4 else dB.sum(0),
        per_group(dC, C) if C.dim() == 4 else dC.sum(0),
        dD.sum(0), dz, dbias.sum(0),
    )  # fmt: skip
    return tuple(
        None if t is None or not need else g.to(t.dtype)
        for g, t, need in zip(grads, inputs, output_mask, strict=True)
    )
