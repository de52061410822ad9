"""fvcore's `FlopCountAnalysis` counts our ops out of the box (`zoo::dwconv2d` 1 per
multiply-add, as it counts `aten::_convolution`; `zoo::selective_scan` by its stated formula):
their handles join fvcore's default handles on import. Without them fvcore skips the ops with
an "unsupported operator" warning, so a model's count would depend on which backend ran."""

from __future__ import annotations

from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

from ops import FVCORE_HANDLES

_DEFAULT_SUPPORTED_OPS.update(FVCORE_HANDLES)
