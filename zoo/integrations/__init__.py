"""Glue to other libraries. `fvcore` is registered by `import zoo` (a dependency); `mm`
(OpenMMLab registries) only when imported explicitly."""

from . import fvcore  # noqa: F401  (fvcore counts the depthwise op)
