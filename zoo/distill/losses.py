"""Distillation losses on logits: OFA (One-for-All KD), classic KD, and DKD (decoupled KD).

`ofa_loss` and `kd_loss` give the values and gradients of the official OFA-KD functions
(Hao840/OFAKD `distillers/ofa.py::ofa_loss`, `distillers/utils.py::kd_loss`); `dkd_loss` those
of its `distillers/dkd.py::dkd_loss` (the mdistiller formulation, without mdistiller's warm-up).

One deliberate difference: the official `ofa_loss` and DKD take `torch.log(softmax(z))`, which is
-inf once a student probability underflows (the NaNs of OFAKD issue #36). Here the student's
log-probabilities come from `log_softmax`, so the loss is finite there and equal to the official
value (to float rounding) wherever that one is finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["dkd_loss", "kd_loss", "ofa_loss", "one_hot_target", "target_cross_entropy"]


def one_hot_target(target: Tensor, num_classes: int) -> Tensor:
    """One-hot (B, num_classes) int64 mask of the target class. Soft (B, C) targets from
    Mixup/CutMix/label smoothing mark their largest entry, as the official code does."""
    index = target.argmax(dim=-1) if target.ndim == 2 else target
    return F.one_hot(index, num_classes)


def ofa_loss(
    logits_student: Tensor,
    logits_teacher: Tensor,
    target_mask: Tensor,
    eps: float,
    temperature: float = 1.0,
) -> Tensor:
    """The OFA loss as the official code computes it (not the paper's Eq. when eps != 1):

    `mean_batch( -sum_c w_c * log p_s,c )` with `p = softmax(z / T)` for both models and
    `w = (p_t + m)^eps - m` for the one-hot target mask `m`, i.e. `(1 + p_t)^eps - 1` on the
    target class and `p_t^eps` on the others. No T^2 factor; at eps = 1 it is the soft
    cross-entropy `-sum p_t log p_s` (KD's gradient at T=1).
    """
    log_p_student = F.log_softmax(logits_student.float() / temperature, dim=1)
    p_teacher = F.softmax(logits_teacher.float() / temperature, dim=1)
    weight = (p_teacher + target_mask) ** eps - target_mask
    return -(weight * log_p_student).sum(dim=-1).mean()


def kd_loss(logits_student: Tensor, logits_teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Hinton KD: `T^2 * KL(p_t || p_s)` at temperature T, averaged over the batch."""
    log_p_student = F.log_softmax(logits_student.float() / temperature, dim=1)
    p_teacher = F.softmax(logits_teacher.float() / temperature, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * temperature**2


def dkd_loss(
    logits_student: Tensor,
    logits_teacher: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 2.0,
    temperature: float = 1.0,
) -> Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): `alpha * TCKD + beta * NCKD`, both `T^2 * KL`.

    TCKD compares the binary (target, rest) probabilities; NCKD the distributions over the
    non-target classes, the target logit pushed out of the softmax by subtracting 1000 (the
    reference code's way; a finite shift keeps `kl_div` free of inf - inf). `target` holds class
    indices, or soft targets whose argmax is taken. The defaults are OFAKD's (alpha 1, beta 2,
    T 1; mdistiller's CIFAR recipe uses beta 8, T 4).
    """
    zs, zt = logits_student.float() / temperature, logits_teacher.float() / temperature
    gt = one_hot_target(target, zs.shape[1]).bool()
    log_ps, log_pt = F.log_softmax(zs, dim=1), F.log_softmax(zt, dim=1)

    def binary(log_p: Tensor) -> Tensor:  # (B, 2) log-probabilities of (target, the rest)
        target_part = log_p.masked_fill(~gt, float("-inf")).logsumexp(dim=1)
        rest = log_p.masked_fill(gt, float("-inf")).logsumexp(dim=1)
        return torch.stack([target_part, rest], dim=1)

    tckd = F.kl_div(binary(log_ps), binary(log_pt).exp(), reduction="batchmean")
    shift = 1000.0 * gt
    nckd = F.kl_div(
        F.log_softmax(zs - shift, dim=1), F.softmax(zt - shift, dim=1), reduction="batchmean"
    )
    return (alpha * tckd + beta * nckd) * temperature**2


def target_cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy with class indices (optionally label-smoothed) or with soft (B, C)
    targets, which Mixup/CutMix have already smoothed (timm's `SoftTargetCrossEntropy`)."""
    if target.ndim == 2:
        return F.cross_entropy(logits, target)
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)
