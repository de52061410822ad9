"""Our own CPU kernels (csrc/selective_scan_cpu.c): the selective scan's forward and backward.

Compiled on first use through ops/_build.py; `ZOO_SCAN_NATIVE=0` turns them off, and then (or
without a compiler) `available()` is False and the dispatcher routes elsewhere. The kernels
compute in float32 (float64 for float64 input): other storage dtypes are converted around
the call. The forward returns the state at the end of every chunk; the backward recomputes
each chunk's states from the one before it (see the C file's header).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import Tensor

from .._build import CompiledLibrary
from .reference import compute_dtype

SOURCE = Path(__file__).with_name("csrc") / "selective_scan_cpu.c"

_SIZES = ("batch", "dim", "length", "dstate", "groups", "chunk")
_FLAGS = ("variable_B", "variable_C", "softplus", "threads")
_INPUTS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
_OUTPUTS = ("out", "states", "dout", "du", "ddelta", "dz", "dA", "dD", "ddelta_bias", "dB", "dC")


class ScanArgs(ctypes.Structure):
    """Mirror of `scan_args` in csrc/selective_scan_cpu.c (same fields, same order)."""

    _fields_ = (
        [(name, ctypes.c_int64) for name in _SIZES]
        + [(name, ctypes.c_int32) for name in _FLAGS]
        + [(name, ctypes.c_void_p) for name in _INPUTS + _OUTPUTS]
    )


_KERNELS = ("scan_forward_f32", "scan_forward_f64", "scan_backward_f32", "scan_backward_f64")


def _declare(library: ctypes.CDLL) -> None:
    library.scan_args_size.restype = ctypes.c_int
    if library.scan_args_size() != ctypes.sizeof(ScanArgs):
        raise OSError("selective_scan_cpu.c's scan_args does not match native.ScanArgs")
    for name in _KERNELS:
        getattr(library, name).argtypes = [ctypes.POINTER(ScanArgs)]
        getattr(library, name).restype = ctypes.c_int


LIBRARY = CompiledLibrary(SOURCE, "ZOO_SCAN_NATIVE", _declare)


def available() -> bool:
    return LIBRARY.available()


def supports(u: Tensor) -> bool:
    """Whether the kernels can scan u (a CPU tensor, the library built)."""
    return u.device.type == "cpu" and LIBRARY.available()


def _pointer(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _call(direction: str, dtype: torch.dtype, tensors: dict, u, A, B, C, softplus, chunk):
    batch, dim, length = u.shape
    variable_B, variable_C = B.dim() == 4, C.dim() == 4
    groups = B.shape[1] if variable_B else C.shape[1] if variable_C else 1
    args = ScanArgs(
        batch, dim, length, A.shape[1], groups, chunk,
        variable_B, variable_C, softplus, torch.get_num_threads(),
        **{name: _pointer(t) for name, t in tensors.items()},
    )  # fmt: skip
    suffix = "f64" if dtype == torch.float64 else "f32"
    status = getattr(LIBRARY.require(), f"scan_{direction}_{suffix}")(ctypes.byref(args))
    if status != 0:
        raise RuntimeError(f"ops: CPU selective-scan {direction} kernel failed (status {status})")


def _inputs(dtype, u, delta, A, B, C, D, z, delta_bias) -> dict:
    """The inputs in the compute dtype, contiguous, by their C names."""
    values = (u, delta, A, B, C, D, z, delta_bias)
    return {
        name: None if t is None else t.to(dtype).contiguous()
        for name, t in zip(_INPUTS, values, strict=True)
    }


def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, chunk: int):
    """(out in u's dtype, states (batch, dim, ceil(L / chunk), N) in the compute dtype)."""
    dtype = compute_dtype(u.dtype)
    tensors = _inputs(dtype, u, delta, A, B, C, D, z, delta_bias)
    batch, dim, length = u.shape
    out = torch.empty((batch, dim, length), dtype=dtype)
    states = torch.empty((batch, dim, -(-length // chunk), A.shape[1]), dtype=dtype)
    _call("forward", dtype, dict(tensors, out=out, states=states), u, A, B, C, delta_softplus,
          chunk)  # fmt: skip
    return out.to(u.dtype), states


def backward(grad_out, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, chunk,
             output_mask):  # fmt: skip
    """Gradients of (u, delta, A, B, C, D, z, delta_bias) in their dtypes; None where
    output_mask says so or the input is None. The kernel computes them all at once."""
    dtype = compute_dtype(u.dtype)
    tensors = _inputs(dtype, u, delta, A, B, C, D, z, delta_bias)
    batch, dim, length = u.shape
    n = A.shape[1]

    def parameter_grad(BC: Tensor) -> Tensor:
        # variable: summed over a group's channels in place; fixed: one partial per batch element
        if BC.dim() == 4:
            return torch.zeros(BC.shape, dtype=dtype)
        return torch.empty((batch, dim, n), dtype=dtype)

    per_batch = {
        "du": torch.empty((batch, dim, length), dtype=dtype),
        "ddelta": torch.empty((batch, dim, length), dtype=dtype),
        "dz": None if z is None else torch.empty((batch, dim, length), dtype=dtype),
        "dA": torch.empty((batch, dim, n), dtype=dtype),
        "dB": parameter_grad(B),
        "dC": parameter_grad(C),
        "dD": None if D is None else torch.empty((batch, dim), dtype=dtype),
        "ddelta_bias": None if delta_bias is None else torch.empty((batch, dim), dtype=dtype),
    }
    tensors.update(per_batch, dout=grad_out.to(dtype).contiguous(),
                   states=states.to(dtype).contiguous())  # fmt: skip
    _call("backward", dtype, tensors, u, A, B, C, delta_softplus, chunk)
    grads = []
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    names = ("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias")
    for name, t, need in zip(names, inputs, output_mask, strict=True):
        if t is None or not need:
            grads.append(None)
            continue
        g = tensors[name]
        if g.shape != t.shape:  # a per-batch partial sum of a parameter's gradient
            g = g.sum(0)
        grads.append(g.to(t.dtype))
    return tuple(grads)
