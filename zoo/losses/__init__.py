"""Training losses of the zoo's dense-prediction families (reusable outside their models)."""

from .bevanet import BEVANetLoss, boundary_targets
from .medseg import DeepSupervisionLoss, DiceBCELoss, StructureLoss, dice_bce_loss, structure_loss

__all__ = [
    "BEVANetLoss",
    "DeepSupervisionLoss",
    "DiceBCELoss",
    "StructureLoss",
    "boundary_targets",
    "dice_bce_loss",
    "structure_loss",
]
