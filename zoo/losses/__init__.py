"""Training losses of the zoo's dense-prediction families (reusable outside their models)."""

from .medseg import DeepSupervisionLoss, DiceBCELoss, StructureLoss, dice_bce_loss, structure_loss

__all__ = [
    "DeepSupervisionLoss",
    "DiceBCELoss",
    "StructureLoss",
    "dice_bce_loss",
    "structure_loss",
]
