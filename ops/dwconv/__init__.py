"""Depthwise 2-D convolution: `dwconv2d`, `DepthwiseConv2d`, and the backend switch.

Layout: `dispatch` chooses (backends, CPU thresholds, routes); `autograd` registers the custom
op and its one backward; `functional` validates and runs; one file per backend (`reference`,
`cpu` (oneDNN), `native` + csrc/ (our C kernels), `fft`, `triton`); `flops` for counters.
"""

from . import flops  # noqa: F401  (registers the op's FLOP formulas)
from .dispatch import BACKENDS, get_backend, set_backend
from .flops import FVCORE_HANDLES
from .functional import dwconv2d
from .module import DepthwiseConv2d

__all__ = [
    "BACKENDS",
    "FVCORE_HANDLES",
    "DepthwiseConv2d",
    "dwconv2d",
    "get_backend",
    "set_backend",
]
