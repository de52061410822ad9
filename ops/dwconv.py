"""Public depthwise convolution op: validation, backend dispatch, custom-op registration.

`dwconv2d` is `F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)` computed by one
of several backends. It is registered as the custom op `zoo::dwconv2d` (with a fake
implementation and autograd through `zoo::dwconv2d_backward`), so torch.compile, torch.export,
fx tracing and meta-device construction all see a single opaque op.

This is the only module that chooses a backend; each backend file only computes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import dwconv_cpu, dwconv_fft, dwconv_native, dwconv_reference, dwconv_triton
from .layout import is_channels_last, memory_format

BACKENDS = ("auto", "torch", "fft", "triton")
# CPU policy of "auto" (fp32, 2 AVX-512 threads, measured with tools/benchmark_ops.py and
# recorded in benchmarks/ops_cpu.md): our own float32 kernels (dwconv_native) for every
# weight-gradient and for the forward and input-gradient in NCHW, and in channels_last where C
# is a multiple of 16 and the kernel >= 3 wide without dilation; oneDNN's fast kernels phrased
# as forward convolutions (dwconv_cpu) for the rest (float64, bfloat16, other channels_last
# shapes). Except:
# - F.conv2d's own autograd for channels_last input with a kernel at most this wide that fits
#   inside the map, no dilation: oneDNN's jit weight-gradient is fast there (2x64x56x56: 3x3
#   0.68 ms vs 1.53 ours, 13x1 0.79 vs 1.67; ours converts x and dY to NCHW for the
#   weight-gradient), while from 5 wide on it is 1.6-2x slower than ours;
CPU_NATIVE_AUTOGRAD_MAX_WIDTH = 3
#   and the same where our kernels do not apply, while oneDNN's jit weight-gradient exists;
CPU_JIT_WEIGHT_GRAD_MAX_WIDTH = 13
# - the weight-gradient by FFT where our kernels do not apply, for kernels of at least this many
#   live taps on maps of at least this many pixels (the FFT's cost hardly grows with the kernel).
CPU_FFT_WEIGHT_GRAD_MIN_TAPS = 400
CPU_FFT_WEIGHT_GRAD_MIN_PIXELS = 56 * 56

_backend = os.environ.get("ZOO_DWCONV_BACKEND", "auto")
if _backend not in BACKENDS:
    raise ValueError(f"ZOO_DWCONV_BACKEND={_backend!r} is not one of {BACKENDS}")


def set_backend(name: str) -> None:
    """Select the backend used by every `dwconv2d` call that does not pass `backend=`."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown dwconv backend {name!r}; expected one of {BACKENDS}")
    _backend = name


def get_backend() -> str:
    return _backend


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _resolve_geometry(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    dilation: int | Sequence[int],
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Validate the arguments and return (stride, padding, dilation) as pairs."""
    if x.dim() != 4:
        raise ValueError(
            f"dwconv2d expects x of shape (N, C, H, W), got {x.dim()}-D {tuple(x.shape)}"
        )
    if weight.dim() != 4 or weight.shape[1] != 1:
        raise ValueError(
            "dwconv2d expects a depthwise weight of shape (C, 1, kh, kw), "
            f"got {tuple(weight.shape)}"
        )
    channels = x.shape[1]
    if weight.shape[0] != channels:
        raise ValueError(
            f"channel mismatch: x has {channels} channels but weight has {weight.shape[0]} filters"
        )
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"bias must have shape ({channels},), got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if t.dtype != x.dtype:
            raise ValueError(f"dtype mismatch: x is {x.dtype} but {name} is {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"device mismatch: x is on {x.device} but {name} is on {t.device}")
    stride_hw = _pair(stride, "stride")
    dilation_hw = _pair(dilation, "dilation")
    if min(stride_hw) < 1:
        raise ValueError(f"stride must be >= 1, got {stride_hw}")
    if min(dilation_hw) < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation_hw}")
    kernel_hw = (weight.shape[2], weight.shape[3])
    if isinstance(padding, str):
        if padding != "same":
            raise ValueError(f"padding must be 'same', an int or a pair of ints, got {padding!r}")
        if kernel_hw[0] % 2 == 0 or kernel_hw[1] % 2 == 0:
            raise ValueError(
                f"padding='same' needs an odd kernel (symmetric padding), got {kernel_hw}; "
                "pass explicit padding instead"
            )
        if stride_hw != (1, 1):
            raise ValueError(f"padding='same' needs stride 1, got {stride_hw}")
        padding_hw = (
            dilation_hw[0] * (kernel_hw[0] - 1) // 2,
            dilation_hw[1] * (kernel_hw[1] - 1) // 2,
        )
    else:
        padding_hw = _pair(padding, "padding")
        if min(padding_hw) < 0:
            raise ValueError(f"padding must be >= 0, got {padding_hw}")
    for axis, size in enumerate(x.shape[2:]):
        extent = dilation_hw[axis] * (kernel_hw[axis] - 1) + 1
        if size + 2 * padding_hw[axis] < extent:
            raise ValueError(
                f"input {tuple(x.shape[2:])} padded by {padding_hw} is smaller than the dilated "
                f"kernel extent along dim {axis + 2} ({extent})"
            )
    return stride_hw, padding_hw, dilation_hw


def _output_hw(x: Tensor, weight: Tensor, padding: Sequence[int], dilation: Sequence[int]):
    return tuple(
        x.shape[2 + a] + 2 * padding[a] - dilation[a] * (weight.shape[2 + a] - 1) for a in (0, 1)
    )


# ----------------------------------------------------------------------------------------------
# Backend choice (per device, shape and direction)


def _concrete_backend(backend: str, x: Tensor) -> str:
    """Map a requested backend to one that can run on x; unsupported combinations -> torch.

    "auto" stays "auto" on CPU, where the choice is made per direction (see _cpu_*).
    """
    if backend == "triton":
        return "triton" if dwconv_triton.is_available(x) else "torch"
    if backend != "auto":
        return backend
    if x.device.type == "cuda":
        return "triton" if dwconv_triton.is_available(x) else "torch"
    return "auto" if x.device.type == "cpu" else "torch"


def _live_kernel_hw(x: Tensor, weight: Tensor, padding, dilation) -> tuple[int, int]:
    """Kernel size once the taps that only read padding are dropped."""
    out_hw = _output_hw(x, weight, padding, dilation)
    live, _ = dwconv_cpu.live_window(weight.shape[2:], x.shape[2:], out_hw, padding, dilation)
    return live[0].stop - live[0].start, live[1].stop - live[1].start


def _cpu_weight_grad_by_fft(x: Tensor, weight: Tensor, padding, dilation) -> bool:
    if dwconv_native.supports(x):
        return False
    if x.shape[2] * x.shape[3] < CPU_FFT_WEIGHT_GRAD_MIN_PIXELS:
        return False
    kh, kw = _live_kernel_hw(x, weight, padding, dilation)
    return kh * kw >= CPU_FFT_WEIGHT_GRAD_MIN_TAPS


def _cpu_native_autograd(x: Tensor, weight: Tensor, padding, dilation) -> bool:
    """Whether plain F.conv2d (with its own autograd) is already the best CPU choice."""
    if not is_channels_last(x) or tuple(dilation) != (1, 1):
        return False
    if not dwconv_native.supports(x):
        return weight.shape[3] <= CPU_JIT_WEIGHT_GRAD_MAX_WIDTH
    # A kernel taller or wider than the map also sends oneDNN's weight-gradient off its fast
    # path (31x1 on 8x128x28x28: 12.0 ms vs 3.9 ms ours).
    fits_map = weight.shape[2] <= x.shape[2] and weight.shape[3] <= x.shape[3]
    return weight.shape[3] <= CPU_NATIVE_AUTOGRAD_MAX_WIDTH and fits_map


def _cpu_backward(grad_out, x, weight, padding, dilation, need_x, need_w):
    grad_x = grad_w = None
    if need_x:
        grad_x = dwconv_cpu.input_grad(grad_out, weight, padding, dilation)
    if need_w:
        kernel_hw = (weight.shape[2], weight.shape[3])
        if _cpu_weight_grad_by_fft(x, weight, padding, dilation):
            grad_w = dwconv_fft.backward_weight(grad_out, x, kernel_hw, padding, dilation)
        else:
            grad_w = dwconv_cpu.weight_grad(grad_out, x, kernel_hw, padding, dilation)
    return grad_x, grad_w


def _forward_impl(x, weight, bias, padding, dilation, backend):
    padding, dilation = tuple(padding), tuple(dilation)
    kind = _concrete_backend(backend, x)
    if kind == "triton":
        return dwconv_triton.forward(x, weight, bias, padding, dilation)
    if kind == "fft":
        y = dwconv_fft.forward(x, weight, bias, padding, dilation)
    elif kind == "auto":
        y = dwconv_cpu.forward(x, weight, bias, padding, dilation)
    else:
        y = dwconv_reference.forward(x, weight, bias, (1, 1), padding, dilation)
    return y.contiguous(memory_format=memory_format(x))


def _backward_impl(grad_out, x, weight, padding, dilation, backend, output_mask):
    padding, dilation = tuple(padding), tuple(dilation)
    need_x, need_w, need_b = output_mask
    kind = _concrete_backend(backend, x)
    kernel_hw = (weight.shape[2], weight.shape[3])
    grad_x = grad_w = grad_b = None
    if kind == "triton":
        if need_x:
            grad_x = dwconv_triton.backward_input(grad_out, weight, x.shape[2:], padding, dilation)
        if need_w:
            grad_w = dwconv_triton.backward_weight(grad_out, x, kernel_hw, padding, dilation)
    elif kind == "fft":
        if need_x:
            grad_x = dwconv_fft.backward_input(grad_out, weight, x.shape[2:], padding, dilation)
        if need_w:
            grad_w = dwconv_fft.backward_weight(grad_out, x, kernel_hw, padding, dilation)
    elif kind == "auto":
        grad_x, grad_w = _cpu_backward(grad_out, x, weight, padding, dilation, need_x, need_w)
    else:
        grad_x, grad_w, _ = dwconv_reference.backward(
            grad_out, x, weight, (1, 1), padding, dilation, (need_x, need_w, False)
        )
    if need_b:
        accumulate = torch.float64 if grad_out.dtype == torch.float64 else torch.float32
        grad_b = grad_out.sum((0, 2, 3), dtype=accumulate).to(grad_out.dtype)
    if grad_x is not None:
        grad_x = grad_x.contiguous(memory_format=memory_format(x))
    if grad_w is not None:
        grad_w = grad_w.to(weight.dtype).contiguous()
    return grad_x, grad_w, grad_b


class _DwConv2dFunction(torch.autograd.Function):
    """Eager autograd: the same impls as the custom op, without its per-call dispatch cost."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, dilation, backend):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.geometry = (padding, dilation, backend)
        return _forward_impl(x, weight, bias, padding, dilation, backend)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        mask = (
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            ctx.has_bias and ctx.needs_input_grad[2],
        )
        grads = _backward_impl(grad_out, x, weight, *ctx.geometry, mask)
        return (*grads, None, None, None)


# ----------------------------------------------------------------------------------------------
# Custom op registration


@torch.library.custom_op("zoo::dwconv2d", mutates_args=())
def _dwconv2d_op(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    padding: list[int],
    dilation: list[int],
    backend: str,
) -> Tensor:
    return _forward_impl(x, weight, bias, padding, dilation, backend)


@_dwconv2d_op.register_fake
def _(x, weight, bias, padding, dilation, backend):
    ho, wo = _output_hw(x, weight, padding, dilation)
    out = x.new_empty((x.shape[0], x.shape[1], ho, wo))
    return out.contiguous(memory_format=memory_format(x))


@torch.library.custom_op("zoo::dwconv2d_backward", mutates_args=())
def _dwconv2d_backward_op(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor,
    padding: list[int],
    dilation: list[int],
    backend: str,
    output_mask: list[bool],
) -> tuple[Tensor, Tensor, Tensor]:
    grads = _backward_impl(grad_out, x, weight, padding, dilation, backend, output_mask)
    # custom ops cannot return None: grads that were not asked for come back empty
    return tuple(x.new_empty(0) if g is None else g for g in grads)


@_dwconv2d_backward_op.register_fake
def _(grad_out, x, weight, padding, dilation, backend, output_mask):
    empty = x.new_empty(0)
    grad_x = (
        x.new_empty(x.shape).contiguous(memory_format=memory_format(x)) if output_mask[0] else empty
    )
    grad_w = weight.new_empty(weight.shape) if output_mask[1] else empty
    grad_b = x.new_empty((x.shape[1],)) if output_mask[2] else empty
    return grad_x, grad_w, grad_b


def _setup_context(ctx, inputs, output):
    x, weight, bias, padding, dilation, backend = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None
    ctx.padding, ctx.dilation, ctx.backend = padding, dilation, backend


def _backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    mask = [
        ctx.needs_input_grad[0],
        ctx.needs_input_grad[1],
        ctx.has_bias and ctx.needs_input_grad[2],
    ]
    grad_x, grad_w, grad_b = _dwconv2d_backward_op(
        grad_out, x, weight, ctx.padding, ctx.dilation, ctx.backend, mask
    )
    return (
        grad_x if mask[0] else None,
        grad_w if mask[1] else None,
        grad_b if mask[2] else None,
        None,
        None,
        None,
    )


_dwconv2d_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------
# Public API


def _traced(x: Tensor) -> bool:
    """True under torch.compile / export / fake or meta tensors: there only the custom op works.

    Eager calls skip the custom op's dispatch (a measurable cost next to a small 3x3 conv).
    """
    return type(x) is not Tensor or x.device.type == "meta" or torch.compiler.is_compiling()


def _requires_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# Routes chosen per (shapes, strides, dtypes, device types, geometry, backend, needs-grad); see
# the key in dwconv2d.
PLAN_CACHE_SIZE = 1024
_plans: dict[tuple, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {}
_is_compiling = torch.compiler.is_compiling
_is_grad_enabled = torch.is_grad_enabled
_is_any_autocast_enabled = torch._C._is_any_autocast_enabled


def dwconv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = "same",
    dilation: int | Sequence[int] = 1,
    backend: str | None = None,
) -> Tensor:
    """Depthwise 2-D cross-correlation, equal to `F.conv2d(..., groups=C)`.

    x: (N, C, H, W) in NCHW or channels_last; weight: (C, 1, kh, kw); bias: (C,) or None.
    padding: "same" (odd kernels, stride 1), an int or a symmetric (ph, pw) pair.
    backend: None (the global choice, see `set_backend`), "auto", "torch", "fft" or "triton".
    The output keeps x's memory format and dtype.
    """
    if type(x) is Tensor and not _is_compiling():
        # Eager calls repeat the same few shapes: reuse the validated geometry and route. This
        # path touches as little Python state as it can: right after a large conv has flushed
        # the caches, every object it touches costs a cache miss (x.device, say, would build a
        # new object per call; the plans depend on the device type only).
        try:
            key = (
                x.shape,
                x.stride(),
                x.dtype,
                x.is_cpu,
                x.is_cuda,
                weight.shape,
                weight.dtype,
                weight.is_cpu,
                weight.is_cuda,
                None if bias is None else (bias.shape, bias.dtype, bias.is_cpu, bias.is_cuda),
                stride,
                padding,
                dilation,
                _backend if backend is None else backend,
                _is_grad_enabled()
                and (
                    x.requires_grad
                    or weight.requires_grad
                    or (bias is not None and bias.requires_grad)
                ),
            )
            plan = _plans.get(key)
        except TypeError:  # unhashable arguments (lists): no plan
            key = plan = None
        if plan is not None and not _is_any_autocast_enabled():
            return plan(x, weight, bias)
    else:
        key = None
    if backend is None:
        backend = _backend
    elif backend not in BACKENDS:
        raise ValueError(f"unknown dwconv backend {backend!r}; expected one of {BACKENDS}")
    if x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type):
        # A custom op is opaque to autocast; cast like F.conv2d would under autocast.
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        key = None
    stride_hw, padding_hw, dilation_hw = _resolve_geometry(
        x, weight, bias, stride, padding, dilation
    )
    if _traced(x) and stride_hw == (1, 1):
        return _dwconv2d_op(x, weight, bias, list(padding_hw), list(dilation_hw), backend)
    plan = _make_plan(x, weight, bias, stride_hw, padding_hw, dilation_hw, backend)
    if key is not None and not _traced(x):
        if len(_plans) >= PLAN_CACHE_SIZE:
            _plans.clear()
        _plans[key] = plan
    return plan(x, weight, bias)


def _make_plan(x, weight, bias, stride_hw, padding_hw, dilation_hw, backend):
    """The computation for validated arguments, as a function of (x, weight, bias)."""
    channels = x.shape[1]
    if stride_hw != (1, 1):
        # Strided depthwise convs are cheap downsamplers; every backend but torch is stride-1.
        return lambda x, w, b: F.conv2d(x, w, b, stride_hw, padding_hw, dilation_hw, channels)
    kind = _concrete_backend(backend, x)
    if kind == "torch" or (
        kind == "auto" and _cpu_native_autograd(x, weight, padding_hw, dilation_hw)
    ):
        return lambda x, w, b: F.conv2d(x, w, b, 1, padding_hw, dilation_hw, channels)
    if not _requires_grad(x, weight, bias):
        if kind == "auto":  # CPU: the route decided once, down to the kernel's arguments
            return dwconv_cpu.forward_plan(x, weight, padding_hw, dilation_hw)
        return lambda x, w, b: _forward_impl(x, w, b, padding_hw, dilation_hw, backend)
    return lambda x, w, b: _DwConv2dFunction.apply(x, w, b, padding_hw, dilation_hw, backend)


# fx symbolic tracing (timm's feature extraction, torchvision's create_feature_extractor) keeps
# dwconv2d as one call instead of tracing into its Python-level argument checks.
torch.fx.wrap("dwconv2d")


class DepthwiseConv2d(nn.Conv2d):
    """`nn.Conv2d(channels, channels, kernel_size, groups=channels)` computed by `dwconv2d`.

    Same parameters and state_dict keys as the nn.Conv2d it replaces, so checkpoints of models
    written with nn.Conv2d load unchanged. `padding="same"` is resolved to integers here.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = "same",
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
        backend: str | None = None,
        device=None,
        dtype=None,
    ) -> None:
        kernel_hw = _pair(kernel_size, "kernel_size")
        dilation_hw = _pair(dilation, "dilation")
        if isinstance(padding, str):
            if padding != "same":
                raise ValueError(f"padding must be 'same', an int or a pair, got {padding!r}")
            if kernel_hw[0] % 2 == 0 or kernel_hw[1] % 2 == 0:
                raise ValueError(f"padding='same' needs an odd kernel, got {kernel_hw}")
            padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation_hw, kernel_hw, strict=True))
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown dwconv backend {backend!r}; expected one of {BACKENDS}")
        super().__init__(
            channels,
            channels,
            kernel_hw,
            stride=stride,
            padding=padding,
            dilation=dilation_hw,
            groups=channels,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.backend = backend
        # TorchScript calls the registered op directly and needs plain typed attributes.
        self._padding_list: list[int] = [int(p) for p in self.padding]
        self._dilation_list: list[int] = [int(d) for d in self.dilation]
        self._strided: bool = tuple(self.stride) != (1, 1)
        self._script_backend: str = "auto" if backend is None else backend

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            if self._strided:
                return self._conv_forward(x, self.weight, self.bias)
            return torch.ops.zoo.dwconv2d(
                x,
                self.weight,
                self.bias,
                self._padding_list,
                self._dilation_list,
                self._script_backend,
            )
        return dwconv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.backend
        )

    def extra_repr(self) -> str:
        backend = "" if self.backend is None else f", backend={self.backend}"
        return super().extra_repr() + backend
