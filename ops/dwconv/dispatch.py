"""The only place that chooses how a depthwise conv is computed: backend state, the route tables
and the CPU thresholds they use, and the routes cached per geometry.

Every backend module exposes the same three functions, stride 1, symmetric padding pairs:
`forward(x, weight, bias, padding, dilation)`, `backward_input(grad_out, weight, input_hw,
padding, dilation)` and `backward_weight(grad_out, x, kernel_hw, padding, dilation)`; some also
offer `forward_plan(x, weight, padding, dilation) -> fn(x, weight, bias)`, the forward decided
once for a geometry. A `Route` names the backend of each direction for one geometry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._backend import BackendChoice
from .._geometry import live_window, output_hw, rotated_padding
from .._layout import is_channels_last, memory_format
from . import cpu, fft, native, reference, triton

BACKENDS = ("auto", "torch", "fft", "triton")

CHOICE = BackendChoice("dwconv", BACKENDS, "ZOO_DWCONV_BACKEND")
check_backend = CHOICE.check


def set_backend(name: str) -> None:
    """Select the backend used by every `dwconv2d` call that does not pass `backend=`."""
    CHOICE.set(name)


def get_backend() -> str:
    return CHOICE.current


# ----------------------------------------------------------------------------------------------
# Implementations: a name per (module, kernel family)


class Implementation:
    """A backend module's three functions (and its forward_plan, where it has one), called with
    fixed keyword options; looked up on the module at each call, so tests can replace them."""

    def __init__(self, module, **options) -> None:
        self.module, self.options = module, options
        self.has_plan = hasattr(module, "forward_plan")

    def forward(self, x, weight, bias, padding, dilation):
        return self.module.forward(x, weight, bias, padding, dilation, **self.options)

    def backward_input(self, grad_out, weight, input_hw, padding, dilation):
        return self.module.backward_input(grad_out, weight, input_hw, padding, dilation,
                                          **self.options)  # fmt: skip

    def backward_weight(self, grad_out, x, kernel_hw, padding, dilation):
        return self.module.backward_weight(grad_out, x, kernel_hw, padding, dilation,
                                           **self.options)  # fmt: skip

    def forward_plan(self, x, weight, padding, dilation):
        return self.module.forward_plan(x, weight, padding, dilation, **self.options)


IMPLEMENTATIONS = {
    "torch": Implementation(reference),
    "fft": Implementation(fft),
    "triton": Implementation(triton),
    "onednn": Implementation(cpu),  # oneDNN's fast kernels, phrased as forward convolutions
    "native": Implementation(native),  # our C kernels on NCHW planes
    "native_channels_last": Implementation(native, channels_last=True),
}


# ----------------------------------------------------------------------------------------------
# The CPU policy of "auto" (fp32, 2 AVX-512 threads, measured with tools/benchmark_ops.py and
# recorded in benchmarks/ops_cpu.md): our float32 kernels for every weight-gradient and for the
# forward and input-gradient in NCHW, and in channels_last where C is a multiple of 16 and the
# kernel at least this wide without dilation (below, oneDNN's brdgmm_dw is faster: 31x1 0.31 vs
# 0.44 ms);
CPU_NATIVE_CHANNELS_LAST_MIN_WIDTH = 3
# the channels_last weight-gradient kernel streams the map once per kernel row, so it beats the
# NCHW one (plus the two conversions to NCHW) for kernels up to this many rows only
# (2x64x56x56: 3x3 0.42 vs 0.85 ms, 7x7 0.87 vs 1.00, 1x31 0.55 vs 1.29; 13x13 2.5 vs 1.4);
CPU_NATIVE_CHANNELS_LAST_WEIGHT_GRAD_MAX_HEIGHT = 7
# oneDNN for everything else (float64, bfloat16, other channels_last shapes). Except:
# - F.conv2d's own autograd for channels_last input with a kernel at most this wide that fits
#   inside the map, no dilation: oneDNN's jit weight-gradient is fast there (2x64x56x56: 3x3
#   0.68 ms vs 1.53 ours, 13x1 0.79 vs 1.67), while from 5 wide on it is 1.6-2x slower than ours;
CPU_CONV2D_AUTOGRAD_MAX_WIDTH = 3
#   and the same where our kernels do not apply, while oneDNN's jit weight-gradient exists;
CPU_JIT_WEIGHT_GRAD_MAX_WIDTH = 13
# - the weight-gradient by FFT where our kernels do not apply, for kernels of at least this many
#   live taps on maps of at least this many pixels (the FFT's cost hardly grows with the kernel).
CPU_FFT_WEIGHT_GRAD_MIN_TAPS = 400
CPU_FFT_WEIGHT_GRAD_MIN_PIXELS = 56 * 56


class Problem(NamedTuple):
    """What the CPU policy looks at, for one direction (the input-gradient is a forward of
    grad_out with the rotated kernel, so it gets its own Problem)."""

    native: bool  # our float32 kernels can run (float32 CPU tensors, the library built)
    channels_last: bool
    whole_vectors: bool  # channels_last with C a multiple of the kernels' 16-channel vector
    kernel_hw: tuple[int, int]  # the full kernel
    live_hw: tuple[int, int]  # once the taps that only read padding are dropped
    map_hw: tuple[int, int]
    dilation: tuple[int, int]


def _problem(x: Tensor, in_hw, kernel_hw, padding, dilation) -> Problem:
    """The Problem of a correlation of an (N, C, *in_hw) map laid out and typed like x."""
    live, _ = live_window(kernel_hw, in_hw, output_hw(in_hw, kernel_hw, padding, dilation),
                          padding, dilation)  # fmt: skip
    return Problem(
        native=native.supports(x),
        channels_last=is_channels_last(x),
        whole_vectors=native.supports_channels_last(x),
        kernel_hw=tuple(kernel_hw),
        live_hw=(live[0].stop - live[0].start, live[1].stop - live[1].start),
        map_hw=tuple(in_hw),
        dilation=tuple(dilation),
    )


def _always(p: Problem) -> bool:
    return True


# Each direction's candidates in order of preference: the first whose condition holds runs.
CPU_FORWARD = (
    (
        "native_channels_last",
        lambda p: (
            p.whole_vectors
            and p.dilation == (1, 1)
            and p.live_hw[1] >= CPU_NATIVE_CHANNELS_LAST_MIN_WIDTH
        ),
    ),
    ("native", lambda p: p.native and not p.channels_last),
    ("onednn", _always),
)
CPU_WEIGHT_GRAD = (
    (
        "native_channels_last",
        lambda p: (
            p.whole_vectors and p.live_hw[0] <= CPU_NATIVE_CHANNELS_LAST_WEIGHT_GRAD_MAX_HEIGHT
        ),
    ),
    ("native", lambda p: p.native),
    (
        "fft",
        lambda p: (
            p.map_hw[0] * p.map_hw[1] >= CPU_FFT_WEIGHT_GRAD_MIN_PIXELS
            and p.live_hw[0] * p.live_hw[1] >= CPU_FFT_WEIGHT_GRAD_MIN_TAPS
        ),
    ),
    ("onednn", _always),
)


def _cpu_conv2d_autograd(p: Problem) -> bool:
    """Whether plain F.conv2d with its own autograd is already the best CPU choice."""
    if not p.channels_last or p.dilation != (1, 1):
        return False
    if not p.native:
        return p.kernel_hw[1] <= CPU_JIT_WEIGHT_GRAD_MAX_WIDTH
    # A kernel taller or wider than the map also sends oneDNN's weight-gradient off its fast
    # path (31x1 on 8x128x28x28: 12.0 ms vs 3.9 ms ours).
    fits_map = p.kernel_hw[0] <= p.map_hw[0] and p.kernel_hw[1] <= p.map_hw[1]
    return p.kernel_hw[1] <= CPU_CONV2D_AUTOGRAD_MAX_WIDTH and fits_map


def _first(table, problem: Problem) -> str:
    return next(name for name, applies in table if applies(problem))


def _device_backend(backend: str, x: Tensor) -> str:
    """A requested backend mapped to one that runs on x's device ("auto" stays "auto" on CPU,
    where the choice is made per direction); unsupported combinations get "torch"."""
    if backend == "triton" or (backend == "auto" and x.device.type == "cuda"):
        return "triton" if triton.is_available(x) else "torch"
    if backend == "auto" and x.device.type != "cpu":
        return "torch"
    return backend


# ----------------------------------------------------------------------------------------------
# Routes


@dataclass(frozen=True)
class Route:
    """How one geometry is computed: `forward(x, w, b)` (in x's memory format),
    `backward_input(grad_out, w)`,
    `backward_weight(grad_out, x)`, and the backend name of each direction (`names`).
    `conv2d_autograd`: the whole op is F.conv2d with PyTorch's own autograd."""

    names: tuple[str, str, str]
    forward: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    backward_input: Callable[[Tensor, Tensor], Tensor]
    backward_weight: Callable[[Tensor, Tensor], Tensor]
    conv2d_autograd: bool = False


def _build_route(x: Tensor, weight: Tensor, padding, dilation, backend: str) -> Route:
    kernel_hw = (weight.shape[2], weight.shape[3])
    in_hw = (x.shape[2], x.shape[3])
    kind = _device_backend(backend, x)
    conv2d_autograd = kind == "torch"
    if kind == "auto":
        forward_problem = _problem(x, in_hw, kernel_hw, padding, dilation)
        # the input-gradient: grad_out (the output's size, x's layout) with the rotated kernel
        out_hw = output_hw(in_hw, kernel_hw, padding, dilation)
        reach = rotated_padding(kernel_hw, padding, dilation)
        input_grad_problem = _problem(x, out_hw, kernel_hw, reach, dilation)
        names = (
            _first(CPU_FORWARD, forward_problem),
            _first(CPU_FORWARD, input_grad_problem),
            _first(CPU_WEIGHT_GRAD, forward_problem),
        )
        conv2d_autograd = _cpu_conv2d_autograd(forward_problem)
    else:
        names = (kind, kind, kind)
    if conv2d_autograd:
        channels = x.shape[1]
        pad, dil = tuple(padding), tuple(dilation)
        # a closure, not a partial: this route is F.conv2d plus as little Python as possible
        conv = lambda x, w, b: F.conv2d(x, w, b, 1, pad, dil, channels)  # noqa: E731
        names = ("torch", "torch", "torch")
    forward_impl, input_impl, weight_impl = (IMPLEMENTATIONS[n] for n in names)
    if forward_impl.has_plan:
        forward = forward_impl.forward_plan(x, weight, padding, dilation)
    else:
        forward = partial(_forward_with, forward_impl.forward, padding=padding, dilation=dilation)
    return Route(
        names=names,
        forward=conv if conv2d_autograd else forward,
        backward_input=(
            _PlannedInputGrad(input_impl, kernel_hw, padding, dilation)
            if input_impl.has_plan
            else partial(_backward_input_with, input_impl.backward_input, in_hw, padding, dilation)
        ),
        backward_weight=partial(
            _backward_weight_with, weight_impl.backward_weight, kernel_hw, padding, dilation
        ),
        conv2d_autograd=conv2d_autograd,
    )


def _forward_with(fn, x, weight, bias, padding, dilation):
    return fn(x, weight, bias, padding, dilation).contiguous(memory_format=memory_format(x))


class _PlannedInputGrad:
    """dX as the forward of grad_out with the kernel rotated by 180 degrees, through the
    backend's forward plan, made on the first call (grad_out's layout is known only then) and
    kept with the route, so a backward does no planning and no cache lookup."""

    def __init__(self, impl: Implementation, kernel_hw, padding, dilation) -> None:
        self.impl, self.dilation = impl, dilation
        self.reach = rotated_padding(kernel_hw, padding, dilation)
        self.run: Callable | None = None

    def __call__(self, grad_out: Tensor, weight: Tensor) -> Tensor:
        rotated = weight.flip(2, 3)
        if self.run is None:
            self.run = self.impl.forward_plan(grad_out, rotated, self.reach, self.dilation)
        return self.run(grad_out, rotated, None)


def _backward_input_with(fn, in_hw, padding, dilation, grad_out, weight):
    return fn(grad_out, weight, in_hw, padding, dilation)


def _backward_weight_with(fn, kernel_hw, padding, dilation, grad_out, x):
    return fn(grad_out, x, kernel_hw, padding, dilation)


ROUTE_CACHE_SIZE = 1024
_routes: dict[tuple, Route] = {}


def route(x: Tensor, weight: Tensor, padding, dilation, backend: str) -> Route:
    """The Route for x and weight (validated, stride 1, symmetric padding), cached per geometry."""
    key = (
        x.shape,
        x.stride(),
        x.dtype,
        x.device.type,
        weight.shape,
        weight.dtype,
        tuple(padding),
        tuple(dilation),
        backend,
    )
    found = _routes.get(key)
    if found is None:
        if len(_routes) >= ROUTE_CACHE_SIZE:
            _routes.clear()
        found = _routes[key] = _build_route(x, weight, tuple(padding), tuple(dilation), backend)
    return found


def forward(x: Tensor, weight: Tensor, bias: Tensor | None, padding, dilation, backend: str):
    """The op's forward; the output keeps x's memory format and dtype (every Route's does)."""
    return route(x, weight, padding, dilation, backend).forward(x, weight, bias)


def backward(grad_out: Tensor, x: Tensor, weight: Tensor, padding, dilation, backend: str,
             output_mask) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # fmt: skip
    """(grad_x, grad_weight, grad_bias); those not asked for in output_mask are None."""
    need_x, need_w, need_b = output_mask
    chosen = route(x, weight, padding, dilation, backend)
    grad_x = grad_w = grad_b = None
    if need_x:
        grad_x = chosen.backward_input(grad_out, weight)
        grad_x = grad_x.contiguous(memory_format=memory_format(x))
    if need_w:
        grad_w = chosen.backward_weight(grad_out, x).to(weight.dtype).contiguous()
    if need_b:
        accumulate = torch.float64 if grad_out.dtype == torch.float64 else torch.float32
        grad_b = grad_out.sum((0, 2, 3), dtype=accumulate).to(grad_out.dtype)
    return grad_x, grad_w, grad_b
