"""Triton, imported once for every op's Triton backend: the module and its language (None
without triton), a `jit` that leaves functions plain without it, and whether kernels run in
Triton's CPU interpreter (TRITON_INTERPRET=1, read by triton at import)."""

from __future__ import annotations

from torch import Tensor

try:
    import triton
    import triton.language as tl

    jit = triton.jit
except ImportError:  # the Triton backends then report themselves unavailable
    triton = tl = None

    def jit(fn):
        return fn


@jit
def _probe():
    pass


# under the interpreter, triton.jit returns an InterpretedFunction instead of a JITFunction
INTERPRETED = triton is not None and not isinstance(_probe, triton.runtime.JITFunction)


def is_available(x: Tensor) -> bool:
    """CUDA tensors when triton imports; CPU tensors only under TRITON_INTERPRET=1."""
    if triton is None:
        return False
    if x.device.type == "cuda":
        return True
    return x.device.type == "cpu" and INTERPRETED
