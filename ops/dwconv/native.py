"""Our own CPU kernels (csrc/dwconv_cpu.c): float32 direct depthwise conv, stride 1.

Compiled on first use through ops/_build.py; `ZOO_DWCONV_NATIVE=0` turns them off, and then
(or without a compiler) `available()` is False and the dispatcher routes to oneDNN (cpu.py).

Two kernel families, both any kernel size and padding (negative crops):
- NCHW (`channels_last=False`): forward with any dilation, weight-gradient with any dilation;
  channels_last tensors are converted.
- channels_last (`channels_last=True`): 16 channels per vector, so C must be a multiple of 16;
  the forward has no dilation, the weight-gradient any.
Which family runs, and whether these kernels run at all, is the dispatcher's choice.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .._build import CompiledLibrary
from .._geometry import embed_live_taps, live_window, output_hw, rotated_padding
from .._layout import is_channels_last

SOURCE = Path(__file__).with_name("csrc") / "dwconv_cpu.c"
# The channels_last kernels vectorise over this many channels.
CHANNELS_LAST_VECTOR = 16


class Geometry(ctypes.Structure):
    """Mirror of `dwconv_geometry` in csrc/dwconv_cpu.c (same fields, same order)."""

    _fields_ = [
        (name, ctypes.c_int)
        for name in (
            "batch", "channels", "height", "width", "kernel_h", "kernel_w", "top", "left",
            "dilation_h", "dilation_w", "out_h", "out_w", "threads",
        )
    ]  # fmt: skip


def _declare(library: ctypes.CDLL) -> None:
    library.dwconv_geometry_size.restype = ctypes.c_int
    if library.dwconv_geometry_size() != ctypes.sizeof(Geometry):
        raise OSError("dwconv_cpu.c's dwconv_geometry does not match native.Geometry")
    pointer, geometry = ctypes.c_void_p, ctypes.POINTER(Geometry)
    for name in ("dwconv_forward_f32", "dwconv_forward_nhwc_f32"):
        getattr(library, name).argtypes = [pointer] * 4 + [geometry]
        getattr(library, name).restype = ctypes.c_int
    for name in ("dwconv_weight_grad_f32", "dwconv_weight_grad_nhwc_f32"):
        getattr(library, name).argtypes = [pointer] * 3 + [geometry]
        getattr(library, name).restype = ctypes.c_int


LIBRARY = CompiledLibrary(SOURCE, "ZOO_DWCONV_NATIVE", _declare)


def available() -> bool:
    return LIBRARY.available()


def supports(x: Tensor) -> bool:
    """Whether the NCHW kernels can compute a depthwise conv of x (float32 on the CPU)."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and LIBRARY.available()


def supports_channels_last(x: Tensor) -> bool:
    """Whether the channels_last kernels can read x in place (the forward also needs dilation 1)."""
    return is_channels_last(x) and x.shape[1] % CHANNELS_LAST_VECTOR == 0 and supports(x)


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"ops: CPU depthwise {what} kernel failed (status {status})")


def _layout(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def kernel_forward_plan(
    x_shape, kernel_hw, top: int, left: int, out_hw, dilation=(1, 1), channels_last=False
) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """The C forward for one geometry, as a function of (x, weight, bias): output (y, x) reads
    input (y - top + i dh, x - left + j dw) for tap (i, j); top/left may be negative (crop).
    Everything but the data pointers is fixed once (this sits on the per-layer hot path)."""
    n, c, h, w = x_shape
    library = LIBRARY.require()
    kernel = library.dwconv_forward_nhwc_f32 if channels_last else library.dwconv_forward_f32
    layout = _layout(channels_last)
    out_shape = (n, c, *out_hw)
    geometry = Geometry(n, c, h, w, *kernel_hw, top, left, *dilation, *out_hw, 0)

    def run(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        x, weight = x.contiguous(memory_format=layout), weight.contiguous()
        y = torch.empty(out_shape, dtype=x.dtype, device=x.device, memory_format=layout)
        geometry.threads = torch.get_num_threads()
        status = kernel(
            x.data_ptr(),
            weight.data_ptr(),
            None if bias is None else bias.contiguous().data_ptr(),
            y.data_ptr(),
            ctypes.byref(geometry),
        )
        _check(status, "forward")
        return y

    return run


def kernel_weight_grad(
    grad_out: Tensor, x: Tensor, kernel_hw, top: int, left: int, dilation=(1, 1),
    channels_last: bool = False,
) -> Tensor:  # fmt: skip
    """The C weight-gradient: dW[c, 0, i, j] = sum_n sum_(y, x) x[n, c, y - top + i dh,
    x - left + j dw] dY[n, c, y, x]."""
    layout = _layout(channels_last)
    x = x.contiguous(memory_format=layout)
    grad_out = grad_out.contiguous(memory_format=layout)
    n, c, h, w = x.shape
    grad_w = x.new_empty((c, 1, *kernel_hw))
    library = LIBRARY.require()
    kernel = (
        library.dwconv_weight_grad_nhwc_f32 if channels_last else library.dwconv_weight_grad_f32
    )
    geometry = Geometry(
        n, c, h, w, *kernel_hw, top, left, *dilation, *grad_out.shape[2:], torch.get_num_threads()
    )
    status = kernel(x.data_ptr(), grad_out.data_ptr(), grad_w.data_ptr(), ctypes.byref(geometry))
    _check(status, "weight-gradient")
    return grad_w


def forward_plan(
    x: Tensor, weight: Tensor, padding, dilation, channels_last: bool = False
) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """The forward for tensors shaped and laid out like x and weight, as a function of
    (x, weight, bias); taps that only read padding are cropped from the kernel."""
    full_hw = tuple(weight.shape[2:])
    out_hw = output_hw(x.shape[2:], full_hw, padding, dilation)
    (rows, cols), (top, _, left, _) = live_window(full_hw, x.shape[2:], out_hw, padding, dilation)
    live_hw = (rows.stop - rows.start, cols.stop - cols.start)
    run = kernel_forward_plan(
        tuple(x.shape), live_hw, top, left, out_hw, tuple(dilation), channels_last
    )
    if live_hw == full_hw:
        return run
    return lambda x, w, b: run(x, w[:, :, rows, cols], b)


def forward(
    x: Tensor, weight: Tensor, bias: Tensor | None, padding, dilation, channels_last: bool = False
) -> Tensor:
    """Planned for this one call (the dispatcher keeps plans per route)."""
    return forward_plan(x, weight, padding, dilation, channels_last)(x, weight, bias)


def backward_input(
    grad_out: Tensor, weight: Tensor, input_hw, padding, dilation, channels_last: bool = False
) -> Tensor:
    """dX: the forward of grad_out with the kernel rotated by 180 degrees."""
    reach = rotated_padding(weight.shape[2:], padding, dilation)
    return forward(grad_out, weight.flip(2, 3), None, reach, dilation, channels_last)


def backward_weight(
    grad_out: Tensor, x: Tensor, kernel_hw, padding, dilation, channels_last: bool = False
) -> Tensor:
    """dW (C, 1, kh, kw); only the live taps are computed (the others are zero)."""
    live, (top, _, left, _) = live_window(
        kernel_hw, x.shape[2:], grad_out.shape[2:], padding, dilation
    )
    live_hw = (live[0].stop - live[0].start, live[1].stop - live[1].start)
    grad_w = kernel_weight_grad(grad_out, x, live_hw, top, left, tuple(dilation), channels_last)
    return embed_live_taps(grad_w, kernel_hw, live)
