"""Kernels for the zoo: depthwise large-kernel convolution with Triton, FFT and torch backends.

`ops` imports only torch (and triton, lazily); no model code lives here.
"""

from .dwconv import BACKENDS, DepthwiseConv2d, dwconv2d, get_backend, set_backend

__all__ = ["BACKENDS", "DepthwiseConv2d", "dwconv2d", "get_backend", "set_backend"]
