"""Large-kernel convnet zoo: importing it registers every model family with timm."""

from . import (
    bevanet,  # noqa: F401  (registers with timm)
    inceptionnext,  # noqa: F401  (registers with timm)
    layers,  # noqa: F401  (makes ops.DepthwiseConv2d an fx leaf for timm's feature extraction)
    mkunet,  # noqa: F401  (registers with timm)
    unireplknet,  # noqa: F401  (registers with timm)
)
from .reparam import reparameterize

__all__ = ["reparameterize"]
