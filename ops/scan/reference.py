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
state at the end of every chunk of `chunk` steps, the last one being the final state. The
backward is PyTorch's autograd through the same definition.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The arithmetic (and state) dtype for a storage dtype: float64 stays, the rest is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


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


def discretised_delta(delta: Tensor, delta_bias: Tensor | None, softplus: bool, dtype) -> Tensor:
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    return F.softplus(delta) if softplus else delta


def finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """out = (y + D u) * silu(z) in y's dtype, returned in u's."""
    if D is not None:
        y = y + u.to(y.dtype) * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(u.dtype)


def chunk_states(history: Tensor, chunk: int) -> Tensor:
    """The states at the end of every chunk (and the last), from the (batch, dim, L, N) history."""
    length = history.shape[2]
    ends = list(range(chunk - 1, length, chunk))
    if not ends or ends[-1] != length - 1:
        ends.append(length - 1)
    return history[:, :, ends]


def _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk):
    dtype = compute_dtype(u.dtype)
    batch, dim, length = u.shape
    dt = discretised_delta(delta, delta_bias, delta_softplus, dtype)
    # (batch, dim, L, N), precomputed as in selective_scan_ref; only the recurrence is a loop
    decay = torch.exp(dt[..., None] * A.to(dtype)[:, None, :])
    drive = (dt * u.to(dtype))[..., None] * per_step(B, dim, dtype)
    C = per_step(C, dim, dtype).expand(*drive.shape)
    x = drive.new_zeros((batch, dim, A.shape[1]))
    ys, states = [], []
    for step in range(length):
        x = decay[:, :, step] * x + drive[:, :, step]
        ys.append((x * C[:, :, step]).sum(-1))
        if (step + 1) % chunk == 0 or step == length - 1:
            states.append(x)
    return finish(torch.stack(ys, dim=2), u, D, z), torch.stack(states, dim=2)


def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, chunk: int):
    """(out, states); see the module docstring."""
    with torch.no_grad():
        return _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk)


def autograd_backward(scan: Callable, grad_out, inputs, delta_softplus, chunk, output_mask):
    """Gradients of `inputs` (u, delta, A, B, C, D, z, delta_bias) by PyTorch's autograd through
    `scan(*inputs, delta_softplus, chunk) -> (out, states)`; None where the input is None or
    output_mask says so."""
    wanted = [t is not None and need for t, need in zip(inputs, output_mask, strict=True)]
    leaves = [
        None if t is None else t.detach().requires_grad_(need)
        for t, need in zip(inputs, wanted, strict=True)
    ]
    chosen = [t for t, need in zip(leaves, wanted, strict=True) if need]
    with torch.enable_grad():
        out, _ = scan(*leaves, delta_softplus, chunk)
        grads = torch.autograd.grad(out, chosen, grad_out, allow_unused=True) if chosen else ()
    grads = iter(grads)
    result = []
    for t, need in zip(leaves, wanted, strict=True):
        g = next(grads) if need else None
        result.append(torch.zeros_like(t) if need and g is None else g)
    return tuple(result)


def backward(grad_out, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, chunk,
             output_mask):  # fmt: skip
    """Gradients of (u, delta, A, B, C, D, z, delta_bias): autograd through the definition
    (the saved states are not needed)."""
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    return autograd_backward(_scan, grad_out, inputs, delta_softplus, chunk, output_mask)
