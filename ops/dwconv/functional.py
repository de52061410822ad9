"""`dwconv2d`, the public function: validation where the arguments enter, then the computation
the dispatcher chose, through the custom op wherever the call is traced or observed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._geometry import extent, pair
from .._tracing import traced
from . import dispatch
from .autograd import DwConv2dFunction, dwconv2d_op


def resolve_geometry(
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
    stride_hw = pair(stride, "stride")
    dilation_hw = pair(dilation, "dilation")
    if min(stride_hw) < 1:
        raise ValueError(f"stride must be >= 1, got {stride_hw}")
    if min(dilation_hw) < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation_hw}")
    kernel_hw = (weight.shape[2], weight.shape[3])
    if isinstance(padding, str):
        padding_hw = same_padding(kernel_hw, dilation_hw, padding)
        if stride_hw != (1, 1):
            raise ValueError(f"padding='same' needs stride 1, got {stride_hw}")
    else:
        padding_hw = pair(padding, "padding")
        if min(padding_hw) < 0:
            raise ValueError(f"padding must be >= 0, got {padding_hw}")
    for axis, size in enumerate(x.shape[2:]):
        reach = extent(kernel_hw[axis], dilation_hw[axis])
        if size + 2 * padding_hw[axis] < reach:
            raise ValueError(
                f"input {tuple(x.shape[2:])} padded by {padding_hw} is smaller than the dilated "
                f"kernel extent along dim {axis + 2} ({reach})"
            )
    return stride_hw, padding_hw, dilation_hw


def same_padding(kernel_hw, dilation_hw, padding: str = "same") -> tuple[int, int]:
    """The symmetric padding that keeps the map's size (odd kernels only)."""
    if padding != "same":
        raise ValueError(f"padding must be 'same', an int or a pair of ints, got {padding!r}")
    if kernel_hw[0] % 2 == 0 or kernel_hw[1] % 2 == 0:
        raise ValueError(
            f"padding='same' needs an odd kernel (symmetric padding), got {tuple(kernel_hw)}; "
            "pass explicit padding instead"
        )
    return (dilation_hw[0] * (kernel_hw[0] - 1) // 2, dilation_hw[1] * (kernel_hw[1] - 1) // 2)


# Eager calls repeat the same few shapes: their validated geometry and computation are kept per
# (shapes, strides, dtypes, device types, geometry, backend, needs-grad); see the key below.
PLAN_CACHE_SIZE = 1024
_plans: dict[tuple, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {}
_is_compiling = torch.compiler.is_compiling
_is_tracing = torch._C._is_tracing  # torch.jit.is_tracing without its Python frame
_is_grad_enabled = torch.is_grad_enabled
_is_any_autocast_enabled = torch._C._is_any_autocast_enabled
_dispatch_modes = torch._C._len_torch_dispatch_stack


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
    key = None
    if type(x) is Tensor and not (_is_compiling() or _is_tracing() or _dispatch_modes()):
        # This path touches as little Python state as it can: right after a large conv has
        # flushed the caches, every object it touches costs a cache miss (x.device, say, would
        # build a new object per call; the plans depend on the device type only).
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
                dispatch.CHOICE.current if backend is None else backend,
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
    if backend is None:
        backend = dispatch.get_backend()
    else:
        dispatch.check_backend(backend)
    if x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type):
        # A custom op is opaque to autocast; cast like F.conv2d would under autocast.
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        key = None
    stride_hw, padding_hw, dilation_hw = resolve_geometry(
        x, weight, bias, stride, padding, dilation
    )
    if stride_hw != (1, 1):
        # Strided depthwise convs are cheap downsamplers; every backend but torch is stride-1.
        plan = _strided_plan(stride_hw, padding_hw, dilation_hw, x.shape[1])
    elif traced(x):
        return dwconv2d_op(x, weight, bias, list(padding_hw), list(dilation_hw), backend)
    else:
        plan = _plan(x, weight, bias, padding_hw, dilation_hw, backend)
    if key is not None:
        if len(_plans) >= PLAN_CACHE_SIZE:
            _plans.clear()
        _plans[key] = plan
    return plan(x, weight, bias)


def _strided_plan(stride_hw, padding_hw, dilation_hw, channels: int) -> Callable:
    return lambda x, w, b: F.conv2d(x, w, b, stride_hw, padding_hw, dilation_hw, channels)


def _plan(x, weight, bias, padding_hw, dilation_hw, backend) -> Callable:
    """The eager computation for validated stride-1 arguments, as a function of (x, w, b)."""
    route = dispatch.route(x, weight, padding_hw, dilation_hw, backend)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias)
    )
    if route.conv2d_autograd or not needs_grad:
        return route.forward
    return lambda x, w, b: DwConv2dFunction.apply(x, w, b, padding_hw, dilation_hw, backend)
