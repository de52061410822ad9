"""The only place that chooses how a selective scan is computed: backend state, the route
tables, and the chunk length every backend's saved states use.

Every backend module exposes the same two functions on validated, normalised arguments (B and
C either fixed (dim, N) or variable (batch, groups, N, L)):
`forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk) -> (out, states)` and
`backward(grad_out, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, chunk,
output_mask) -> 8 gradients`. `states` (batch, dim, ceil(L / chunk), N), in float32 (float64
for float64 input), holds the state at the end of every chunk: the forward's by-product the
backward restarts from, and the final state `return_last_state` reports.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .._backend import BackendChoice
from . import chunked, native, reference, triton

BACKENDS = ("auto", "reference", "chunked", "native", "triton")

# Steps between saved states: the backward keeps one chunk's states in scratch, and the saved
# states cost N / CHUNK of u's memory (1/8 at N = 8).
CHUNK = 64

_choice = BackendChoice("selective_scan", BACKENDS, "ZOO_SCAN_BACKEND")
check_backend = _choice.check


def set_backend(name: str) -> None:
    """Select the backend used by every `selective_scan` call that does not pass `backend=`."""
    _choice.set(name)


def get_backend() -> str:
    return _choice.current


IMPLEMENTATIONS = {
    "reference": reference,
    "chunked": chunked,
    "native": native,
    "triton": triton,
}


def _always(u: Tensor) -> bool:
    return True


# Candidates in order of preference, the first whose condition holds on u runs. Measured with
# tools/benchmark_scan.py (benchmarks/scan_cpu.md): on the CPU our C kernels beat the chunked
# formulation by far, and the chunked formulation beats the sequential reference, so each
# falls back to the next. "reference" always runs as asked.
ROUTES: dict[str, tuple[tuple[str, Callable[[Tensor], bool]], ...]] = {
    "auto_cpu": (("native", native.supports), ("chunked", _always)),
    "auto_cuda": (("triton", triton.is_available), ("chunked", _always)),
    "auto_other": (("chunked", _always),),
    "native": (("native", native.supports), ("chunked", _always)),
    "triton": (("triton", triton.is_available), ("chunked", _always)),
    "chunked": (("chunked", _always),),
    "reference": (("reference", _always),),
}


def choose(u: Tensor, backend: str) -> str:
    """The backend that computes a scan of u when `backend` is asked for."""
    if backend == "auto":
        device = u.device.type
        backend = f"auto_{device}" if device in ("cpu", "cuda") else "auto_other"
    return next(name for name, applies in ROUTES[backend] if applies(u))


def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, backend: str):
    """(out, states) for validated, normalised arguments."""
    chosen = IMPLEMENTATIONS[choose(u, backend)]
    return chosen.forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, CHUNK)


def backward(grad_out, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus: bool,
             backend: str, output_mask) -> tuple[Tensor | None, ...]:  # fmt: skip
    """Gradients of (u, delta, A, B, C, D, z, delta_bias) in their dtypes, contiguous like the
    fake implementation's; None for inputs that are None or not asked for in output_mask."""
    chosen = IMPLEMENTATIONS[choose(u, backend)]
    grads = chosen.backward(grad_out, u, delta, A, B, C, D, z, delta_bias, states,
                            delta_softplus, CHUNK, output_mask)  # fmt: skip
    return tuple(None if g is None else g.contiguous() for g in grads)
