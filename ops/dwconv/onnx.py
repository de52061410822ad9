"""ONNX translations of `zoo::dwconv2d`: the standard `Conv` with `group=C`, so any runtime runs it.

The op is a depthwise cross-correlation with symmetric padding (ph, pw), dilation (dh, dw) and
stride 1 (strided depthwise convs never reach the op: `DepthwiseConv2d` calls `F.conv2d` for
them), which is exactly ONNX `Conv(x, W, B, group=C, pads=[ph, pw, ph, pw], dilations=[dh, dw])`
with W of shape (C, 1, kh, kw). Both torch.onnx exporters are covered:

- `translation_table()`: for `torch.onnx.export(..., dynamo=True)` (torch's default), passed as
  `custom_translation_table=`; an onnxscript function traced by the exporter.
- `register_torchscript_symbolic()`: for the legacy `torch.onnx.export(..., dynamo=False)`,
  which traces with `torch.jit` (where `DepthwiseConv2d` calls the registered op).

onnxscript (and the legacy symbolic helpers) are imported inside the functions: `ops` imports
only torch and triton when it loads.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# The first ONNX opset whose Conv has every attribute used here (opset 11 changed pads/auto_pad);
# the exporters default to newer ones.
MIN_OPSET = 11


def _group(weight_shape, what: str) -> int:
    channels = weight_shape[0]
    if not isinstance(channels, int):
        raise ValueError(
            f"zoo::dwconv2d needs a static channel count for ONNX Conv's `group`; the {what} "
            f"has shape {tuple(weight_shape)}"
        )
    return channels


def translation_table() -> dict[Callable, Callable]:
    """`{torch.ops.zoo.dwconv2d.default: fn}` for `torch.onnx.export(custom_translation_table=)`."""
    from onnxscript import opset18 as op

    def dwconv2d(x, weight, bias=None, padding=(0, 0), dilation=(1, 1), backend="auto"):
        # `backend` only picks the eager kernel; ONNX has one Conv
        ph, pw = padding
        shape = tuple(weight.shape)
        group = _group(shape, "weight")
        inputs = (x, weight) if bias is None else (x, weight, bias)
        return op.Conv(
            *inputs,
            group=group,
            kernel_shape=[int(k) for k in shape[2:]],
            pads=[ph, pw, ph, pw],
            dilations=list(dilation),
            strides=[1, 1],
        )

    return {torch.ops.zoo.dwconv2d.default: dwconv2d}


_registered_opsets: set[int] = set()


def register_torchscript_symbolic(opset_version: int = 17) -> None:
    """Register the `Conv` symbolic of `zoo::dwconv2d` for the legacy TorchScript exporter.

    Registered for `opset_version` and later opsets (the exporter picks the newest registration
    not above its target opset); calling it again is a no-op.
    """
    if opset_version < MIN_OPSET:
        raise ValueError(f"opset_version must be >= {MIN_OPSET}, got {opset_version}")
    if opset_version in _registered_opsets:
        return
    from torch.onnx import symbolic_helper as sym

    def dwconv2d(g, x, weight, bias, padding, dilation, backend):
        sizes = sym._get_tensor_sizes(weight)
        if sizes is None or any(s is None for s in sizes):
            raise ValueError(f"zoo::dwconv2d needs a static weight shape, got {sizes}")
        group = _group(tuple(sizes), "weight")
        ph, pw = sym._maybe_get_const(padding, "is")
        inputs = [x, weight] if sym._is_none(bias) else [x, weight, bias]
        return g.op(
            "Conv",
            *inputs,
            group_i=group,
            kernel_shape_i=list(sizes[2:]),
            pads_i=[ph, pw, ph, pw],
            dilations_i=list(sym._maybe_get_const(dilation, "is")),
            strides_i=[1, 1],
        )

    torch.onnx.register_custom_op_symbolic("zoo::dwconv2d", dwconv2d, opset_version)
    _registered_opsets.add(opset_version)
