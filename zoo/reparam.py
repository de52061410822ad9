"""`zoo.reparameterize(model)`: convert any zoo model, in place, to its deploy form.

Every module that has a deploy form defines a `reparameterize()` method that converts itself
only (merging its branches, folding BatchNorm), not its children. This walks the model
children-first, so a parent always sees its children already converted. Models without a deploy
form are returned unchanged.
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
