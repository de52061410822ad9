"""Public depthwise convolution op: validation, backend dispatch, custom-op registration.

`dwconv2d` is `F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)` computed by one
of several backends. It is registered as the custom op `zoo::dwconv2d` (with a fake
implementation and autograd through `zoo::dwconv2d_backward`), so torch.compile, torch.export,
fx tracing and meta-device construction all see a single opaque op.

This is the only module that chooses a backend; each backend file only computes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from . import dwconv_fft, dwconv_reference, dwconv_triton
from .layout import is_channels_last, memory_format

BACKENDS = ("auto", "torch", "fft", "triton")
# oneDNN's weight-gradient (and NCHW forward) for depthwise kernels this wide or wider is
# im2col + GEMM on CPU; FFT is 5-25x faster there (specs/dwconv_kernels.md, section 4.3).
CPU_GEMM_KERNEL_WIDTH = 15
# Below that width, the FFT weight-gradient still wins for kernels of at least 81 taps once
# kh * kw * H * W exceeds 100k (2 AVX-512 threads, fp32: 13x13 at 56x56 FFT 3.1 ms vs 6.7 ms,
# at 28x28 1.3 vs 2.1 ms; 9x9 at 56x56 2.4 vs 3.6 ms; but 7x7 at 56x56 2.9 vs 2.7 ms and
# 13x13 at 14x14 7.1 vs 5.4 ms (8x128 channels) stay direct).
CPU_FFT_WEIGHT_GRAD_MIN_TAPS = 81
CPU_FFT_WEIGHT_GRAD_WORK = 100_000

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


def _kernel_width(weight: Tensor, dilation: Sequence[int]) -> int:
    return dilation[1] * (weight.shape[3] - 1) + 1


def _cpu_weight_grad_by_fft(x: Tensor, weight: Tensor, dilation: Sequence[int]) -> bool:
    """FFT weight-gradient where it beats oneDNN (measured, specs/dwconv_kernels.md 4.3 and
    tools/benchmark_ops.py): always once oneDNN falls back to GEMM (kernel width >= 15), and for
    narrower kernels with many taps on large maps (e.g. 13x13 at 28x28), since the FFT cost
    hardly grows with the kernel while the direct cost grows with every tap."""
    if _kernel_width(weight, dilation) >= CPU_GEMM_KERNEL_WIDTH:
        return True
    taps = weight.shape[2] * weight.shape[3]
    return (
        taps >= CPU_FFT_WEIGHT_GRAD_MIN_TAPS
        and taps * x.shape[2] * x.shape[3] >= CPU_FFT_WEIGHT_GRAD_WORK
    )


def _cpu_native_autograd(x: Tensor, weight: Tensor, dilation: Sequence[int]) -> bool:
    """Whether plain F.conv2d (with its own autograd) is already the best CPU choice.

    channels_last: oneDNN's jit kernels serve all three directions while the kernel is narrow.
    NCHW: only 3x3 and smaller get a jit weight-gradient; anything larger is im2col + GEMM.
    """
    if _cpu_weight_grad_by_fft(x, weight, dilation):
        return False
    if is_channels_last(x):
        return True
    return weight.shape[2] * weight.shape[3] <= 9


def _cpu_forward(x, weight, bias, padding, dilation) -> Tensor:
    # Forward: oneDNN jit kernels in either layout, except NCHW with a wide kernel (GEMM).
    if is_channels_last(x) or _kernel_width(weight, dilation) < CPU_GEMM_KERNEL_WIDTH:
        return dwconv_reference.forward(x, weight, bias, (1, 1), padding, dilation)
    y = dwconv_reference.forward(
        x.contiguous(memory_format=torch.channels_last), weight, bias, (1, 1), padding, dilation
    )
    return y.contiguous()


def _cpu_backward(grad_out, x, weight, padding, dilation, need_x, need_w):
    grad_x = grad_w = None
    if need_x:  # input-gradient: jit_dw in both layouts, for every kernel size
        grad_x, _, _ = dwconv_reference.backward(
            grad_out, x, weight, (1, 1), padding, dilation, (True, False, False)
        )
    if need_w:
        if _cpu_weight_grad_by_fft(x, weight, dilation):
            kernel_hw = (weight.shape[2], weight.shape[3])
            grad_w = dwconv_fft.backward_weight(grad_out, x, kernel_hw, padding, dilation)
        else:  # the jit weight-gradient exists only in channels_last
            cl = torch.channels_last
            _, grad_w, _ = dwconv_reference.backward(
                grad_out.contiguous(memory_format=cl),
                x.contiguous(memory_format=cl),
                weight,
                (1, 1),
                padding,
                dilation,
                (False, True, False),
            )
    return grad_x, grad_w


def _forward_impl(x, weight, bias, padding, dilation, backend):
    padding, dilation = tuple(padding), tuple(dilation)
    kind = _concrete_backend(backend, x)
    if kind == "triton":
        return dwconv_triton.forward(x, weight, bias, padding, dilation)
    if kind == "fft":
        y = dwconv_fft.forward(x, weight, bias, padding, dilation)
    elif kind == "auto":
        y = _cpu_forward(x, weight, bias, padding, dilation)
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
    if backend is None:
        backend = _backend
    elif backend not in BACKENDS:
        raise ValueError(f"unknown dwconv backend {backend!r}; expected one of {BACKENDS}")
    if x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type):
        # A custom op is opaque to autocast; cast like F.conv2d would under autocast.
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    stride_hw, padding_hw, dilation_hw = _resolve_geometry(
        x, weight, bias, stride, padding, dilation
    )
    if stride_hw != (1, 1):
        # Strided depthwise convs are cheap downsamplers; every backend but torch is stride-1.
        return dwconv_reference.forward(x, weight, bias, stride_hw, padding_hw, dilation_hw)
    if _traced(x):
        return _dwconv2d_op(x, weight, bias, list(padding_hw), list(dilation_hw), backend)
    kind = _concrete_backend(backend, x)
    if kind == "torch" or (kind == "auto" and _cpu_native_autograd(x, weight, dilation_hw)):
        return dwconv_reference.forward(x, weight, bias, (1, 1), padding_hw, dilation_hw)
    if not _requires_grad(x, weight, bias):
        return _forward_impl(x, weight, bias, padding_hw, dilation_hw, backend)
    return _DwConv2dFunction.apply(x, weight, bias, padding_hw, dilation_hw, backend)


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
