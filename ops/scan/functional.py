"""`selective_scan`, the public function: validation where the arguments enter, then the
computation the dispatcher chose, through the custom op wherever the call is traced or
observed, and through `SelectiveScanFunction` (same backward, less per-call overhead) in eager
mode when a gradient is needed."""

from __future__ import annotations

import torch
from torch import Tensor

from .._tracing import traced
from . import dispatch
from .autograd import SelectiveScanFunction, selective_scan_op

STORAGE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_tensor(name: str, t, expected: str, shapes: tuple[tuple[int, ...], ...]) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"selective_scan: {name} must be a tensor, got {type(t).__name__}")
    if t.dtype not in STORAGE_DTYPES:
        kind = "complex A is not supported (real A only)" if t.is_complex() else "unsupported"
        raise ValueError(
            f"selective_scan: {name} is {t.dtype} ({kind}); expected one of "
            f"{', '.join(str(d).replace('torch.', '') for d in STORAGE_DTYPES)}"
        )
    if _shape(t) not in shapes:
        raise ValueError(f"selective_scan: {name} has shape {_shape(t)}, expected {expected}")


def _check_BC(name: str, t, batch: int, dim: int, n: int, length: int) -> None:
    if isinstance(t, Tensor) and t.dim() == 4 and t.shape[1] > 0 and dim % t.shape[1] == 0:
        allowed = ((batch, t.shape[1], n, length),)
    else:
        allowed = ((dim, n), (batch, n, length))
    expected = (
        f"(dim, N) = {(dim, n)}, (batch, N, L) = {(batch, n, length)} or "
        f"(batch, groups, N, L) = {(batch, 'groups', n, length)} with groups dividing dim = {dim}"
    )
    _check_tensor(name, t, expected, allowed)


def check_arguments(u, delta, A, B, C, D, z, delta_bias) -> None:
    """ValueError (or TypeError) naming the argument, its shape and the expected shape."""
    if not isinstance(u, Tensor) or u.dim() != 3:
        got = _shape(u) if isinstance(u, Tensor) else type(u).__name__
        raise ValueError(f"selective_scan: u has shape {got}, expected (batch, dim, L)")
    batch, dim, length = u.shape
    if length < 1:
        raise ValueError(f"selective_scan: u has shape {_shape(u)}: the sequence is empty (L = 0)")
    like_u = f"(batch, dim, L) = {(batch, dim, length)} like u"
    _check_tensor("u", u, like_u, ((batch, dim, length),))
    _check_tensor("delta", delta, like_u, ((batch, dim, length),))
    if not isinstance(A, Tensor) or A.dim() != 2 or A.shape[0] != dim or A.shape[1] < 1:
        got = _shape(A) if isinstance(A, Tensor) else type(A).__name__
        raise ValueError(f"selective_scan: A has shape {got}, expected (dim, N) = ({dim}, N)")
    n = A.shape[1]
    _check_tensor("A", A, f"(dim, N) = {(dim, n)}", ((dim, n),))
    _check_BC("B", B, batch, dim, n, length)
    _check_BC("C", C, batch, dim, n, length)
    groups = [1 if t.dim() == 3 else t.shape[1] for t in (B, C) if t.dim() >= 3]
    if len(groups) == 2 and groups[0] != groups[1]:
        raise ValueError(
            f"selective_scan: B has shape {_shape(B)} and C {_shape(C)}: variable B and C "
            f"must have the same number of groups (as in mamba), got {groups[0]} and {groups[1]}"
        )
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _check_tensor(name, t, f"(dim,) = ({dim},)", ((dim,),))
    if z is not None:
        _check_tensor("z", z, like_u, ((batch, dim, length),))
    named = (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
             ("delta_bias", delta_bias))  # fmt: skip
    for name, t in named:
        if t is not None and t.device != u.device:
            raise ValueError(f"selective_scan: u is on {u.device} but {name} is on {t.device}")
    for name, t in (("delta", delta), ("z", z)):
        if t is not None and t.dtype != u.dtype:
            raise ValueError(
                f"selective_scan: u is {u.dtype} but {name} is {t.dtype} "
                "(u, delta and z share one dtype)"
            )


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The selective scan of mamba_ssm's `selective_scan_fn`, same arguments and results.

    u, delta, z: (batch, dim, L), one dtype (float16, bfloat16, float32, float64); A: (dim, N)
    real; B, C: (dim, N), (batch, N, L) or (batch, groups, N, L) (channel d reads group
    d // (dim // groups)); D, delta_bias: (dim,). With delta' = softplus(delta + delta_bias)
    (softplus only if delta_softplus) and x_{-1} = 0:

        x_l = exp(delta'_l A) x_{l-1} + delta'_l B_l u_l,   y_l = sum_n x_l C_l,
        out = (y + D u) * silu(z)

    in float32 (float64 for float64 input); out has u's dtype. With return_last_state,
    returns (out, x_{L-1}) with the state (batch, dim, N) in float32 (float64); its gradient
    is not considered, as in mamba. backend: None (the global choice, see `set_backend`),
    "auto", "reference", "chunked", "native" or "triton".
    """
    if backend is None:
        backend = dispatch.get_backend()
    else:
        dispatch.check_backend(backend)
    check_arguments(u, delta, A, B, C, D, z, delta_bias)
    # mamba's (batch, N, L) is one group
    B = B.unsqueeze(1) if B.dim() == 3 else B
    C = C.unsqueeze(1) if C.dim() == 3 else C
    args = (u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), backend)
    if traced(u):
        out, states = selective_scan_op(*args)
    elif torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args[:8]):
        out, states = SelectiveScanFunction.apply(*args)
    else:
        out, states = dispatch.forward(*args)
    if return_last_state:
        return out, states[:, :, -1].contiguous()
    return out
