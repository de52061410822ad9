"""Multi-class segmentation cross-entropy, and per-class weights that configs name.

- `CrossEntropyLoss`: `F.cross_entropy` (class weights, label smoothing, an ignored label) on one
  logits tensor (N, K, H, W) against labels (N, H, W), or summed over a dict of heads such as
  `model.forward_heads(x)` with per-head weights, like `DeepSupervisionLoss`.
- `class_weights_tensor`: per-class weights given as numbers or by name (`"cityscapes"`), so a
  config says `class_weights: cityscapes` and the numbers live here only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .medseg import DeepSupervisionLoss

__all__ = ["CITYSCAPES_CLASS_WEIGHTS", "NAMED_CLASS_WEIGHTS", "CrossEntropyLoss",
           "class_weights_tensor"]  # fmt: skip

# The fixed class weights the official BEVANet/PIDNet code uses for Cityscapes
# (`datasets/cityscapes.py`); CamVid and ADE20k train without class weights.
CITYSCAPES_CLASS_WEIGHTS = (
    0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
    0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507,
)  # fmt: skip
NAMED_CLASS_WEIGHTS = {"cityscapes": CITYSCAPES_CLASS_WEIGHTS}


def class_weights_tensor(
    weights: str | Sequence[float] | Tensor | None, num_classes: int | None = None
) -> Tensor | None:
    """A float vector of per-class weights from numbers or a name in `NAMED_CLASS_WEIGHTS`;
    None stays None. Raises when it is not a vector of `num_classes` values (when given)."""
    if weights is None:
        return None
    if isinstance(weights, str):
        if weights not in NAMED_CLASS_WEIGHTS:
            raise ConfigError(
                f"unknown class_weights '{weights}'; named sets: "
                f"{', '.join(NAMED_CLASS_WEIGHTS)} (or give one number per class)"
            )
        weights = NAMED_CLASS_WEIGHTS[weights]
    out = torch.as_tensor(weights).float()
    if out.ndim != 1 or (num_classes and len(out) != num_classes):
        raise ConfigError(
            f"class_weights must be a vector of num_classes={num_classes} values, got shape "
            f"{tuple(out.shape)}"
        )
    return out


class CrossEntropyLoss(DeepSupervisionLoss):
    """`F.cross_entropy(logits, labels, weight, ignore_index, label_smoothing)` on a logits tensor,
    or (weighted, summed) on a dict of heads; see `DeepSupervisionLoss` for `weights`."""

    def __init__(
        self,
        class_weights: str | Sequence[float] | Tensor | None = None,
        ignore_index: int = 255,
        label_smoothing: float = 0.0,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        super().__init__(self._cross_entropy, weights)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self.register_buffer("class_weights", class_weights_tensor(class_weights), persistent=False)

    def _cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(
            logits,
            labels,
            weight=self.class_weights,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )
