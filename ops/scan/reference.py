"""Reference selective scan: the plain sequential definition of mamba's `selective_scan_ref`.

The ground truth every other backend is tested against. Arguments as the backends receive them
from the dispatcher: u, delta, z (batch, dim, L); A (dim, N); B and C either fixed (dim, N) or
variable (batch, groups, N, L), channel d reading group d // (dim // groups); D, delta_bias
(dim,). Arithmetic is float32 (float64 for float64 input), whatever the storage dtype:

    delta' = softplus(delta + delta_bias)            (softplus only with delta_softplus)
    x_l    = exp(delta'_l A) * x_{l-1} + delta'_l B_l u_l      x_{-1} = 0, state (batch, dim, N)
    y_l    = sum_n x_l[n] C_l[n]
    out    = (y + D u) * silu(z)                     (each factor only where given)

Besides `out` (u's dtype) the forward returns `states` (batch, dim, ceil(L / chunk), N): the
state at the end of every chunk of `chunk` steps, the last one being the final state.

The backward is the adjoint written out (autograd cannot run inside a custom op's
implementation): with h_l the gradient of x_l, h_l = dy_l C_l + a_{l+1} h_{l+1}, the same kind
of linear recurrence run backwards. Both recurrences go through a `solve(log_decay, drive)`
that returns every x_l of x_l = exp(log_decay_l) x_{l-1} + drive_l: here the sequential loop;
chunked.py passes its chunked solver to the same forward and backward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Solver = Callable[[Tensor, Tensor], Tensor]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The arithmetic (and state) dtype for a storage dtype: float64 stays, the rest is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def sequential(log_decay: Tensor, drive: Tensor) -> Tensor:
    """x_l = exp(log_decay_l) x_{l-1} + drive_l along dim 2 of (batch, dim, L, N), x_{-1} = 0:
    every x_l, one step at a time."""
    decay = torch.exp(log_decay)
    x = torch.zeros_like(drive[:, :, 0])
    history = []
    for step in range(drive.shape[2]):
        x = decay[:, :, step] * x + drive[:, :, step]
        history.append(x)
    return torch.stack(history, dim=2)


def per_channel(BC: Tensor, dim: int) -> Tensor:
    """Variable B or C (batch, groups, N, L) as (batch, dim, N, L): group g serves channels
    g * dim // groups to (g + 1) * dim // groups - 1, as mamba's `repeat(B, "B G N L -> B (G H)
    N L")`."""
    return BC.repeat_interleave(dim // BC.shape[1], dim=1)


def per_step(BC: Tensor, dim: int, dtype) -> Tensor:
    """B or C as a (dim, 1, N) or (batch, dim, L, N) tensor that broadcasts against the state
    history (batch, dim, L, N)."""
    BC = BC.to(dtype)
    return BC[:, None, :] if BC.dim() == 2 else per_channel(BC, dim).transpose(2, 3)


def sum_like(BC: Tensor, grad: Tensor) -> Tensor:
    """A (batch, dim, L, N) gradient of `per_step(BC)` summed back to BC's shape."""
    if BC.dim() == 2:
        return grad.sum((0, 2))
    batch, groups, n, length = BC.shape
    return grad.view(batch, groups, -1, length, n).sum(2).transpose(2, 3)


def softplus_slope(x: Tensor) -> Tensor:
    """The derivative torch's softplus_backward uses (1 above its threshold of 20)."""
    return torch.where(x > 20, torch.ones_like(x), torch.sigmoid(x))


def chunk_states(history: Tensor, chunk: int) -> Tensor:
    """The states at the end of every chunk (and the last), from the (batch, dim, L, N) history."""
    length = history.shape[2]
    ends = list(range(chunk - 1, length, chunk))
    if not ends or ends[-1] != length - 1:
        ends.append(length - 1)
    return history[:, :, ends]


def _terms(u, delta, A, B, C, delta_bias, delta_softplus):
    """(delta + bias, delta', u, log decay, drive, B, C per step) in the compute dtype."""
    dtype = compute_dtype(u.dtype)
    dim = u.shape[1]
    raw = delta.to(dtype)
    if delta_bias is not None:
        raw = raw + delta_bias.to(dtype)[:, None]
    dt = F.softplus(raw) if delta_softplus else raw
    uf = u.to(dtype)
    log_decay = dt[..., None] * A.to(dtype)[:, None, :]  # (batch, dim, L, N)
    Bs, Cs = per_step(B, dim, dtype), per_step(C, dim, dtype)
    return raw, dt, uf, log_decay, (dt * uf)[..., None] * Bs, Bs, Cs


def scan_with(solve: Solver, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk):
    """(out, states) with the recurrence solved by `solve`."""
    _, _, uf, log_decay, drive, _, Cs = _terms(u, delta, A, B, C, delta_bias, delta_softplus)
    history = solve(log_decay, drive)
    y = (history * Cs).sum(-1)
    if D is not None:
        y = y + uf * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(u.dtype), chunk_states(history, chunk)


def backward_with(solve: Solver, grad_out, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                  output_mask):  # fmt: skip
    """Gradients of (u, delta, A, B, C, D, z, delta_bias) in their dtypes (None where the input
    is None or not asked for), both recurrences solved by `solve`."""
    raw, dt, uf, log_decay, drive, Bs, Cs = _terms(u, delta, A, B, C, delta_bias, delta_softplus)
    history = solve(log_decay, drive)  # recomputed: cheaper than keeping (batch, dim, L, N)
    dtype = dt.dtype
    go = grad_out.to(dtype)
    Df = None if D is None else D.to(dtype)[:, None]
    dy, dz = go, None
    if z is not None:
        zf = z.to(dtype)
        sig = torch.sigmoid(zf)
        dy = go * zf * sig
        y = (history * Cs).sum(-1) + (0 if Df is None else uf * Df)
        dz = go * y * sig * (1 + zf * (1 - sig))
    # h_l = dy_l C_l + a_{l+1} h_{l+1}: the forward recurrence, reversed, with a shifted decay
    next_log_decay = F.pad(log_decay[:, :, 1:], (0, 0, 0, 1))
    h = solve(next_log_decay.flip(2), (dy[..., None] * Cs).flip(2)).flip(2)
    x_prev = F.pad(history[:, :, :-1], (0, 0, 1, 0))
    w = h * torch.exp(log_decay) * x_prev  # the gradient of delta'_l A
    hB = (h * Bs).sum(-1)
    d_dt = (w * A.to(dtype)[:, None, :]).sum(-1) + hB * uf
    du = hB * dt + (0 if Df is None else dy * Df)
    ddelta = d_dt * softplus_slope(raw) if delta_softplus else d_dt
    grads = (
        du,
        ddelta,
        (w * dt[..., None]).sum((0, 2)),
        sum_like(B, h * (dt * uf)[..., None]),
        sum_like(C, dy[..., None] * history),
        None if D is None else (dy * uf).sum((0, 2)),
        dz,
        None if delta_bias is None else ddelta.sum((0, 2)),
    )
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    return tuple(
        None if t is None or not need else g.to(t.dtype)
        for g, t, need in zip(grads, inputs, output_mask, strict=True)
    )


def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, chunk: int):
    """(out, states); see the module docstring."""
    return scan_with(sequential, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk)


def backward(grad_out, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, chunk,
             output_mask):  # fmt: skip
    """The adjoint, sequential (the saved states are not needed)."""
    return backward_with(sequential, grad_out, u, delta, A, B, C, D, z, delta_bias,
                         delta_softplus, output_mask)  # fmt: skip
