"""Training losses of the zoo's dense-prediction families (reusable outside their models)."""

from .bevanet import BEVANetLoss, boundary_targets
from .cross_entropy import CITYSCAPES_CLASS_WEIGHTS, CrossEntropyLoss, class_weights_tensor
from .medseg import DeepSupervisionLoss, DiceBCELoss, StructureLoss, dice_bce_loss, structure_loss
from .restoration import DeepRFTv2Loss, fourier_l1, l1_fourier_loss

__all__ = [
    "BEVANetLoss",
    "CITYSCAPES_CLASS_WEIGHTS",
    "CrossEntropyLoss",
    "DeepRFTv2Loss",
    "DeepSupervisionLoss",
    "DiceBCELoss",
    "StructureLoss",
    "boundary_targets",
    "class_weights_tensor",
    "dice_bce_loss",
    "fourier_l1",
    "l1_fourier_loss",
    "structure_loss",
]
