"""`zoo.reparameterize(model)`: convert any zoo model, in place, to its deploy form.

Every module that has a deploy form defines a `reparameterize()` method that converts it
(merging its branches, folding BatchNorm) and does nothing once converted. A method that needs
a child converted first converts it itself, and no model keeps a conversion at its root: so
the walk order does not matter, and timm's own `timm.utils.reparameterize_model` (parents
before children, root skipped) gives the same deploy form as this children-first walk.
Models without a deploy form are returned unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def reparameterize(model: nn.Module) -> nn.Module:
    # reversed pre-order visits every module after all of its descendants
    for module in reversed(list(model.modules())):
        convert = getattr(module, "reparameterize", None)
        if callable(convert):
            convert()
    return model
