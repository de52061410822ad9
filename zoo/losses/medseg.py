"""Losses for binary (or multi-label) medical segmentation, with optional deep supervision.

- `structure_loss`: PraNet's structure loss (Fan et al., MICCAI 2020,
  https://github.com/DengPingFan/PraNet): boundary-weighted BCE + weighted IoU. It is the loss of
  the released MK-UNet polyp training script, applied to the full-resolution head.
- `dice_bce_loss`: BCE + soft Dice.
- `DeepSupervisionLoss` (and its `StructureLoss` / `DiceBCELoss` forms) takes either one logits
  tensor or a dict of heads such as `MKUNet.forward_heads(x)`, and sums per-head losses with
  per-head weights.

Every loss takes raw logits (the sigmoid is applied inside) and a {0, 1} (or soft) mask of the
same shape, (N, C, H, W); for single-channel logits an (N, H, W) mask is accepted too. Losses
are computed per image and channel, then averaged over both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DeepSupervisionLoss",
    "DiceBCELoss",
    "StructureLoss",
    "dice_bce_loss",
    "structure_loss",
]


def _match_target(logits: Tensor, target: Tensor) -> Tensor:
    if logits.dim() != 4:
        raise ValueError(f"expected logits of shape (N, C, H, W), got {tuple(logits.shape)}")
    if target.dim() == 3 and logits.shape[1] == 1:
        target = target.unsqueeze(1)
    if target.shape != logits.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits shape "
            f"{tuple(logits.shape)} (an (N, H, W) target is accepted for 1-channel logits)"
        )
    return target.to(logits.dtype)


def structure_loss(logits: Tensor, target: Tensor) -> Tensor:
    """PraNet structure loss: weighted BCE + weighted IoU, each weighted by 1 + 5|avg31(m) - m|.

    The weight is large near mask boundaries, where the 31x31 local mean (zero-padded, pad
    counted) differs from the mask. The IoU term is 1 - (inter + 1) / (union - inter + 1).
    """
    target = _match_target(logits, target)
    weight = 1 + 5 * (F.avg_pool2d(target, kernel_size=31, stride=1, padding=15) - target).abs()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    wbce = (weight * bce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))

    prob = torch.sigmoid(logits)
    inter = (prob * target * weight).sum(dim=(2, 3))
    union = ((prob + target) * weight).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def dice_bce_loss(
    logits: Tensor,
    target: Tensor,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    smooth: float = 1.0,
) -> Tensor:
    """bce_weight * BCE (mean over pixels) + dice_weight * (1 - soft Dice per image/channel).

    Soft Dice = (2 sum(p m) + smooth) / (sum(p) + sum(m) + smooth), p = sigmoid(logits); the
    smoothing keeps empty masks (no foreground, nothing predicted) at Dice 1.
    """
    target = _match_target(logits, target)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(2, 3))
    denom = prob.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    dice = (2 * inter + smooth) / (denom + smooth)
    return bce_weight * bce + dice_weight * (1 - dice).mean()


class DeepSupervisionLoss(nn.Module):
    """`loss(logits_or_heads, target) -> scalar` for one logits tensor or a dict of heads.

    A tensor gets `loss_fn(tensor, target)`. A dict (e.g. `forward_heads`) gets
    sum_k weights[k] * loss_fn(heads[k], target); every head must be at the target's
    resolution. With `weights=None` every head has weight 1; otherwise `weights` must name
    exactly the dict's heads (give a head weight 0 to leave it out), so a renamed or missing
    head is an error rather than silently unsupervised.
    """

    def __init__(
        self,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.loss_fn = loss_fn
        self.weights = None if weights is None else dict(weights)

    def forward(self, logits: Tensor | Mapping[str, Tensor], target: Tensor) -> Tensor:
        if isinstance(logits, Tensor):
            return self.loss_fn(logits, target)
        if not isinstance(logits, Mapping):
            raise TypeError(
                f"expected a logits tensor or a dict of heads, got {type(logits).__name__}"
            )
        if not logits:
            raise ValueError("got an empty dict of heads")
        weights = self.weights if self.weights is not None else dict.fromkeys(logits, 1.0)
        if set(weights) != set(logits):
            raise ValueError(
                f"loss weights are given for heads {sorted(weights)} but the model returned "
                f"heads {sorted(logits)}"
            )
        total = logits[next(iter(logits))].new_zeros(())
        for name, head in logits.items():
            if weights[name] != 0:
                total = total + weights[name] * self.loss_fn(head, target)
        return total

    def extra_repr(self) -> str:
        return f"loss_fn={getattr(self.loss_fn, '__name__', self.loss_fn)}, weights={self.weights}"


class StructureLoss(DeepSupervisionLoss):
    """`structure_loss` on a logits tensor or (weighted, summed) on a dict of heads."""

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        super().__init__(structure_loss, weights)


class DiceBCELoss(DeepSupervisionLoss):
    """`dice_bce_loss` on a logits tensor or (weighted, summed) on a dict of heads."""

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        loss_fn = partial(
            dice_bce_loss, bce_weight=bce_weight, dice_weight=dice_weight, smooth=smooth
        )
        super().__init__(loss_fn, weights)
