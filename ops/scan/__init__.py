"""Selective scan (mamba's `selective_scan_fn`): `selective_scan` and the backend switch.

Layout: `dispatch` chooses (backends, routes, the saved-state chunk); `autograd` registers the
custom op and its one backward; `functional` validates and runs; one file per backend
(`reference`, `chunked`, `native` + csrc/ (our C kernels), `triton`); `flops` for counters.
"""

from . import flops  # noqa: F401  (registers the op's FLOP formulas)
from .dispatch import BACKENDS, get_backend, set_backend
from .flops import FVCORE_HANDLES
from .functional import selective_scan

__all__ = ["BACKENDS", "FVCORE_HANDLES", "get_backend", "selective_scan", "set_backend"]
