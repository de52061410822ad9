"""Our own CPU kernels (ops/csrc/dwconv_cpu.c): float32 direct depthwise conv, stride 1.

The C source is compiled on first use with the machine's C compiler (`$CC`, default gcc) and
`-march=native`, cached under `$ZOO_CACHE_DIR` (default `~/.cache/lkzoo`) by a hash of the
source, the compiler and the CPU, and loaded with ctypes. No compiler, a failed build or
`ZOO_DWCONV_NATIVE=0` leaves `available()` False, and `auto` uses oneDNN's kernels instead
(ops/dwconv_cpu.py) - slower, never wrong.

Scope: float32, dilation 1, kernel heights in `KERNEL_HEIGHTS` (compile-time constants in the C
code), any width, any padding (negative crops). Tensors are NCHW planes; callers convert.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("csrc") / "dwconv_cpu.c"
KERNEL_HEIGHTS = (1, 3, 5, 7, 9, 11, 13, 15)
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-std=gnu11", "-shared", "-fPIC"]

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failed = False


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def _cache_dir() -> Path:
    return Path(os.environ.get("ZOO_CACHE_DIR", Path.home() / ".cache" / "lkzoo"))


def _build() -> ctypes.CDLL:
    compiler = os.environ.get("CC", "gcc")
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True
    ).stdout
    key = hashlib.sha256(
        SOURCE.read_bytes() + " ".join([compiler, version, *_FLAGS, _cpu_signature()]).encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"dwconv_cpu-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Build beside the target, then rename: concurrent processes never load a partial file.
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            subprocess.run(
                [compiler, *_FLAGS, "-o", tmp, str(SOURCE)],
                capture_output=True,
                text=True,
                check=True,
            )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    library = ctypes.CDLL(str(target))
    ints = [ctypes.c_int] * 11
    pointer = ctypes.c_void_p
    library.dwconv_forward_f32.argtypes = [pointer] * 4 + ints
    library.dwconv_forward_f32.restype = ctypes.c_int
    library.dwconv_weight_grad_f32.argtypes = [pointer] * 3 + ints
    library.dwconv_weight_grad_f32.restype = ctypes.c_int
    return library


def _load() -> ctypes.CDLL | None:
    global _library, _failed
    if _library is not None or _failed:
        return _library
    with _lock:
        if _library is None and not _failed:
            if os.environ.get("ZOO_DWCONV_NATIVE", "1") == "0":
                _failed = True
                return None
            try:
                _library = _build()
            except (OSError, subprocess.CalledProcessError) as error:
                _failed = True
                detail = getattr(error, "stderr", "") or error
                warnings.warn(
                    f"ops: could not build the CPU depthwise kernels ({detail}); "
                    "using oneDNN's kernels instead",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return _library


def available() -> bool:
    return _load() is not None


def supports(x: Tensor, kernel_height: int, dilation) -> bool:
    """Whether these kernels can compute a conv of x with this (cropped) kernel height."""
    return (
        x.dtype == torch.float32
        and x.device.type == "cpu"
        and tuple(dilation) == (1, 1)
        and kernel_height in KERNEL_HEIGHTS
        and available()
    )


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"ops: CPU depthwise {what} kernel failed (status {status})")


def forward(x: Tensor, weight: Tensor, bias: Tensor | None, top: int, left: int, out_hw) -> Tensor:
    """y[n, c] = bias[c] + sum_ij weight[c, 0, i, j] * x[n, c, y - top + i, x - left + j]."""
    x = x.contiguous()
    weight = weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    y = x.new_empty((n, c, *out_hw))
    status = _library.dwconv_forward_f32(
        x.data_ptr(),
        weight.data_ptr(),
        None if bias is None else bias.data_ptr(),
        y.data_ptr(),
        n * c,
        c,
        h,
        w,
        kh,
        kw,
        top,
        left,
        out_hw[0],
        out_hw[1],
        torch.get_num_threads(),
    )
    _check(status, "forward")
    return y


def weight_grad(grad_out: Tensor, x: Tensor, kernel_hw, top: int, left: int) -> Tensor:
    """dW[c, 0, i, j] = sum_n sum_(y, x) x[n, c, y - top + i, x - left + j] * dY[n, c, y, x]."""
    x = x.contiguous()
    grad_out = grad_out.contiguous()
    n, c, h, w = x.shape
    grad_w = x.new_empty((c, 1, *kernel_hw))
    status = _library.dwconv_weight_grad_f32(
        x.data_ptr(),
        grad_out.data_ptr(),
        grad_w.data_ptr(),
        n,
        c,
        h,
        w,
        kernel_hw[0],
        kernel_hw[1],
        top,
        left,
        grad_out.shape[2],
        grad_out.shape[3],
        torch.get_num_threads(),
    )
    _check(status, "weight-gradient")
    return grad_w
