"""fvcore's `FlopCountAnalysis` counts `zoo::dwconv2d` out of the box (1 per multiply-add, as
it counts `aten::_convolution`): the op's handle joins fvcore's default handles on import.
Without it fvcore skips the op with an "unsupported operator" warning, so a model's count
would depend on which backend computed its depthwise convs."""

from __future__ import annotations

from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

from ops.dwconv import FVCORE_HANDLES

_DEFAULT_SUPPORTED_OPS.update(FVCORE_HANDLES)
