"""Large-kernel convnet zoo: importing it registers every model family with timm."""

from . import (
    integrations,  # noqa: F401
    layers,  # noqa: F401  (makes ops.DepthwiseConv2d an fx leaf for timm's feature extraction)
    models,  # noqa: F401  (registers every family with timm)
)
from .reparam import reparameterize

__all__ = ["reparameterize"]
