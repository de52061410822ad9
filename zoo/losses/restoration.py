"""Restoration losses: the DeepRFTv2 recipe (L1 + 0.01 x Fourier on every image head, plus the
same pair of terms on the half-resolution heads against the half-scale ground truth).

Facts from the official basicsr code (INVOKERer/DeepRFTv2 at 512587be, `losses.py` and the
model's `loss_deblur`): the L1 term of a list of predictions is the mean of the per-image L1
means; the Fourier term is `mean |rfft2(pred) - rfft2(gt)|` (unnormalised FFT, mean over the
complex half spectrum), weighted per image and then averaged over the list; the mid-scale terms
use the same two losses on the four half-resolution images against kornia's pyramid of the
ground truth and are added to the full-resolution terms with weight 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# forward_heads() names: the full-resolution images in the official order, then the mid ones
FULL_HEADS = ("spatial1", "fke1", "spatial2", "fke2")
MID_SUFFIX = "_mid"


def fourier_l1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference of the two unnormalised half spectra, `rfft2` over (H, W)."""
    return (torch.fft.rfft2(pred.float()) - torch.fft.rfft2(target.float())).abs().mean()


def _list_mean(preds: Sequence[Tensor], target: Tensor, fn: Callable[[Tensor, Tensor], Tensor]):
    return sum(fn(p, target) for p in preds) / len(preds)


def l1_fourier_loss(preds: Sequence[Tensor], target: Tensor, fft_weight: float = 0.01) -> Tensor:
    """`mean_i L1(pred_i, target) + fft_weight * mean_i fourier_l1(pred_i, target)`."""
    if not preds:
        raise ValueError("l1_fourier_loss needs at least one prediction, got none")
    for p in preds:
        if p.shape != target.shape:
            raise ValueError(
                f"prediction of shape {tuple(p.shape)} does not match the target's "
                f"{tuple(target.shape)}"
            )
    l1 = _list_mean(preds, target, lambda p, t: F.l1_loss(p.float(), t.float()))
    return l1 + fft_weight * _list_mean(preds, target, fourier_l1)


def _default_downsample(x: Tensor) -> Tensor:
    from zoo.models.deeprftv2 import pyramid_down  # kornia's pyrdown, exactly

    return pyramid_down(x)


class DeepRFTv2Loss(nn.Module):
    """The DeepRFTv2 training loss on `model.forward_heads(x)`.

    `heads` maps names to images: the full-resolution ones (`spatial1`, `fke1`, `spatial2`,
    `fke2`, or any names without the `_mid` suffix) are compared with `target`; the `*_mid` ones
    with `downsample(target)` (kornia's pyramid level 1). A plain tensor (a model without
    heads) gets the full-resolution term alone.

    Returns the total; `last_terms` keeps the two parts (`full`, `mid`) for logging.
    """

    def __init__(
        self,
        fft_weight: float = 0.01,
        mid_weight: float = 1.0,
        downsample: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if fft_weight < 0 or mid_weight < 0:
            raise ValueError(
                f"loss weights must be >= 0, got fft_weight={fft_weight}, mid_weight={mid_weight}"
            )
        self.fft_weight, self.mid_weight = fft_weight, mid_weight
        self.downsample = downsample or _default_downsample
        self.last_terms: dict[str, Tensor] = {}

    def forward(self, heads: Mapping[str, Tensor] | Tensor, target: Tensor) -> Tensor:
        if isinstance(heads, Tensor):
            heads = {"out": heads}
        full = [v for k, v in heads.items() if not k.endswith(MID_SUFFIX)]
        mid = [v for k, v in heads.items() if k.endswith(MID_SUFFIX)]
        loss = l1_fourier_loss(full, target, self.fft_weight)
        self.last_terms = {"full": loss.detach()}
        if mid and self.mid_weight:
            mid_loss = l1_fourier_loss(mid, self.downsample(target), self.fft_weight)
            self.last_terms["mid"] = mid_loss.detach()
            loss = loss + self.mid_weight * mid_loss
        return loss
