"""Kernels for the zoo, one package per op (imports torch and triton only, nothing of zoo).

- `ops.dwconv`: depthwise 2-D convolution (`dwconv2d`, `DepthwiseConv2d`, `set_backend`).
- `ops.scan`: mamba's selective scan (`selective_scan`, `ops.scan.set_backend`).

Shared: `_geometry` (output sizes, live taps), `_layout` (memory formats), `_build` (our C
sources compiled on first use). Triton is imported with the op's triton backend; without it
that backend reports itself unavailable.
"""

from . import dwconv, scan
from .dwconv import BACKENDS, DepthwiseConv2d, dwconv2d, get_backend, set_backend
from .scan import selective_scan

# fvcore handles of every op (`zoo::dwconv2d`, `zoo::selective_scan`), by op name.
FVCORE_HANDLES = {**dwconv.FVCORE_HANDLES, **scan.FVCORE_HANDLES}

__all__ = [
    "BACKENDS",
    "FVCORE_HANDLES",
    "DepthwiseConv2d",
    "dwconv2d",
    "get_backend",
    "selective_scan",
    "set_backend",
]
