"""Our own CPU kernels (ops/csrc/dwconv_cpu.c): float32 direct depthwise conv, stride 1.

The C source is compiled on first use with the machine's C compiler (`$CC`, default gcc) and
`-march=native` (`$ZOO_DWCONV_MARCH` overrides), cached under `$ZOO_CACHE_DIR` (default
`~/.cache/lkzoo`) by a hash of the source, the compiler, the flags and the CPU, and loaded with
ctypes. No compiler, a failed build or `ZOO_DWCONV_NATIVE=0` leaves `available()` False, and
`auto` uses oneDNN's kernels instead (ops/dwconv_cpu.py): slower, never wrong.

Scope: float32, dilation 1, any kernel, any padding (negative crops). Tensors are NCHW planes;
callers convert.
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

from .layout import is_channels_last

SOURCE = Path(__file__).with_name("csrc") / "dwconv_cpu.c"
# ZOO_DWCONV_MARCH picks another target than this CPU (tests build x86-64-v3, i.e. AVX2).
_FLAGS = ["-O3", "-fopenmp", "-std=gnu11", "-shared", "-fPIC"]

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
    flags = [*_FLAGS, f"-march={os.environ.get('ZOO_DWCONV_MARCH', 'native')}"]
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True
    ).stdout
    key = hashlib.sha256(
        SOURCE.read_bytes() + " ".join([compiler, version, *flags, _cpu_signature()]).encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"dwconv_cpu-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Build beside the target, then rename: concurrent processes never load a partial file.
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            subprocess.run(
                [compiler, *flags, "-o", tmp, str(SOURCE)],
                capture_output=True,
                text=True,
                check=True,
            )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    library = ctypes.CDLL(str(target))
    pointer, ints = ctypes.c_void_p, [ctypes.c_int] * 11
    dilation = [ctypes.c_int] * 2
    library.dwconv_forward_f32.argtypes = [pointer] * 4 + ints[:8] + dilation + ints[8:]
    library.dwconv_forward_f32.restype = ctypes.c_int
    library.dwconv_forward_nhwc_f32.argtypes = [pointer] * 4 + ints
    library.dwconv_forward_nhwc_f32.restype = ctypes.c_int
    library.dwconv_weight_grad_f32.argtypes = [pointer] * 3 + ints[:8] + dilation + ints[8:]
    library.dwconv_weight_grad_f32.restype = ctypes.c_int
    library.dwconv_weight_grad_nhwc_f32.argtypes = library.dwconv_weight_grad_f32.argtypes
    library.dwconv_weight_grad_nhwc_f32.restype = ctypes.c_int
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


def supports(x: Tensor) -> bool:
    """Whether these kernels can compute a depthwise conv of x (NCHW kernels; any dilation)."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and available()


# The channels_last forward vectorizes over 16 channels; below 3 kernel columns it is slower
# than oneDNN's brdgmm_dw (see ops/csrc/dwconv_cpu.c).
CHANNELS_LAST_MIN_KERNEL_WIDTH = 3


# The channels_last weight-gradient streams the whole map once per kernel row: it beats the
# NCHW kernel (plus the two conversions to NCHW) for short kernels only (2x64x56x56: 3x3 0.42 vs
# 0.85 ms, 7x7 0.87 vs 1.00, 1x31 0.55 vs 1.29; 13x13 2.5 vs 1.4, 11x1 1.08 vs 0.79).
CHANNELS_LAST_WEIGHT_GRAD_MAX_HEIGHT = 7


def _whole_vectors_in_channels_last(x: Tensor) -> bool:
    """The channels_last kernels vectorize over 16 channels at a time."""
    return is_channels_last(x) and x.shape[1] % 16 == 0 and supports(x)


def supports_channels_last(x: Tensor, kernel_width: int, dilation) -> bool:
    """Whether the channels_last forward applies (and beats oneDNN) for x and this kernel."""
    return (
        kernel_width >= CHANNELS_LAST_MIN_KERNEL_WIDTH
        and tuple(dilation) == (1, 1)
        and _whole_vectors_in_channels_last(x)
    )


def supports_channels_last_weight_grad(x: Tensor, kernel_height: int) -> bool:
    """Whether the weight-gradient should read channels_last x in place (any dilation)."""
    return (
        kernel_height <= CHANNELS_LAST_WEIGHT_GRAD_MAX_HEIGHT and _whole_vectors_in_channels_last(x)
    )


def _library_or_raise() -> ctypes.CDLL:
    library = _load()
    if library is None:
        raise RuntimeError("ops: the CPU depthwise kernels are not available (see available())")
    return library


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"ops: CPU depthwise {what} kernel failed (status {status})")


def forward_plan(
    x_shape, kernel_hw, top: int, left: int, out_hw, dilation=(1, 1), channels_last=False
):
    """forward() for one geometry, as a function of (x, weight, bias): everything but the data
    pointers is fixed once (this call sits on the per-layer hot path). channels_last: the
    channels_last kernel (x and y channels_last, C a multiple of 16, no dilation) instead of
    the NCHW one."""
    n, c, h, w = x_shape
    kh, kw = kernel_hw
    library = _library_or_raise()
    kernel = library.dwconv_forward_nhwc_f32 if channels_last else library.dwconv_forward_f32
    layout = torch.channels_last if channels_last else torch.contiguous_format
    out_shape = (n, c, *out_hw)
    units = (n, c) if channels_last else (n * c, c)
    window = (top, left) if channels_last else (top, left, *dilation)

    def run(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        x, weight = x.contiguous(memory_format=layout), weight.contiguous()
        y = torch.empty(out_shape, dtype=x.dtype, device=x.device, memory_format=layout)
        status = kernel(
            x.data_ptr(),
            weight.data_ptr(),
            None if bias is None else bias.contiguous().data_ptr(),
            y.data_ptr(),
            *units,
            h,
            w,
            kh,
            kw,
            *window,
            out_hw[0],
            out_hw[1],
            torch.get_num_threads(),
        )
        _check(status, "forward")
        return y

    return run


def forward(
    x: Tensor, weight: Tensor, bias: Tensor | None, top: int, left: int, out_hw, dilation=(1, 1)
) -> Tensor:
    """y[n, c] = bias[c] + sum_ij weight[c, 0, i, j] * x[n, c, y - top + i dh, x - left + j dw]."""
    run = forward_plan(tuple(x.shape), tuple(weight.shape[2:]), top, left, out_hw, dilation)
    return run(x, weight, bias)


def weight_grad(
    grad_out: Tensor,
    x: Tensor,
    kernel_hw,
    top: int,
    left: int,
    dilation=(1, 1),
    channels_last: bool = False,
) -> Tensor:
    """dW[c, 0, i, j] = sum_n sum_(y, x) x[n, c, y - top + i dh, x - left + j dw] dY[n, c, y, x].

    channels_last: the kernel that reads channels_last x and dY (C a multiple of 16) in place."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=layout)
    grad_out = grad_out.contiguous(memory_format=layout)
    n, c, h, w = x.shape
    grad_w = x.new_empty((c, 1, *kernel_hw))
    library = _library_or_raise()
    kernel = (
        library.dwconv_weight_grad_nhwc_f32 if channels_last else library.dwconv_weight_grad_f32
    )
    status = kernel(
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
        *dilation,
        grad_out.shape[2],
        grad_out.shape[3],
        torch.get_num_threads(),
    )
    _check(status, "weight-gradient")
    return grad_w
