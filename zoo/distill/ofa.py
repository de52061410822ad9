"""OFA-KD (Hao et al., "One-for-All: Bridge the Gap Between Heterogeneous Architectures in
Knowledge Distillation", NeurIPS 2023, arXiv:2310.19444; official code Hao840/OFAKD).

Exit branches at the ends of the student's stages map each stage's feature to logits; each is
trained with the OFA loss to match the teacher's final logits, and so are the student's own
logits. Only logits meet, so any student (CNN, ViT, MLP) can learn from any teacher. The total
objective, as coded officially:

    gt_loss_weight  * criterion(student logits, target)                        -> "loss_gt"
  + kd_loss_weight  * ofa_loss(student logits, teacher logits, eps[-1])         -> "loss_kd"
  + ofa_loss_weight * sum_i ofa_loss(branch_i(stage_i feature), ..., eps[i])   -> "loss_ofa"

What differs from the official code: stage features come from timm's `forward_intermediates`
(any timm >= 1.0 or zoo model; see `stages.py`) instead of per-architecture monkey-patched
forwards; prefix tokens are counted by `num_prefix_tokens` (timm >= 0.9 dropped the `num_tokens`
the official code reads, which silently disables its class-token handling); the loss uses
`log_softmax` (see `losses.py`); the few shapes the official branches cannot take are handled
(see `branches.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..layers.input_check import model_name
from .branches import ConvBranch, TokenBranch, init_branch_weights
from .distillers import Criterion, Distiller
from .losses import ofa_loss, one_hot_target
from .stages import StudentLayout, resolve_stages

__all__ = ["OFA"]


def _final_dim(model: nn.Module, role: str) -> int:
    dim = getattr(model, "num_features", None)
    if not isinstance(dim, int):
        raise TypeError(
            f"the {role} {model_name(model)} has no integer num_features (the width of its final "
            "feature map, timm's attribute), which sets the OFA branch width"
        )
    return dim


class OFA(Distiller):
    """OFA-KD wrapper around a student and a frozen teacher.

    Args:
        student: a classifier with timm's `forward_intermediates` and `forward_head`.
        teacher: a trained classifier over the same `num_classes` (any model with logits and
            `num_features`); frozen here.
        num_classes: the label set.
        stages: student stages (1-4) that get an exit branch; `.branches` follows this order.
        eps: the OFA exponent (the paper's gamma): one value for every term, or
            `len(stages) + 1` values (the stages in order, then the final logits).
        temperature: softmax temperature of both models in every OFA term.
        gt_loss_weight, kd_loss_weight, ofa_loss_weight: weights of the three terms.
        criterion: ground-truth loss (default: cross-entropy on indices or soft targets).
        teacher_dtype: run the teacher in this dtype (e.g. torch.bfloat16).
        input_size: (C, H, W) the student trains at, which sets the token branches' merges;
            default: the image size its patch embedding fixes, else its pretrained_cfg's.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        num_classes: int,
        stages: Sequence[int] = (1, 2, 3, 4),
        eps: float | Sequence[float] = 1.0,
        temperature: float = 1.0,
        gt_loss_weight: float = 1.0,
        kd_loss_weight: float = 1.0,
        ofa_loss_weight: float = 1.0,
        criterion: Criterion | None = None,
        *,
        teacher_dtype: torch.dtype | None = None,
        input_size: tuple[int, int, int] | None = None,
    ) -> None:
        stages = tuple(int(s) for s in stages)
        eps_list = [float(eps)] * (len(stages) + 1) if isinstance(eps, int | float) else list(eps)
        if len(eps_list) != len(stages) + 1:
            raise ConfigError(
                f"eps needs one value, or len(stages) + 1 = {len(stages) + 1} values (stages "
                f"{list(stages)} in order, then the final logits); got {len(eps_list)}: {eps_list}"
            )
        if any(not e > 0 for e in eps_list):
            raise ConfigError(f"eps values must be > 0 (the paper uses >= 1), got {eps_list}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        super().__init__(
            student,
            teacher,
            num_classes,
            gt_loss_weight=gt_loss_weight,
            kd_loss_weight=kd_loss_weight,
            criterion=criterion,
            teacher_dtype=teacher_dtype,
        )
        self.layout: StudentLayout = resolve_stages(student, stages, input_size)
        self.stages, self.eps = stages, tuple(eps_list)
        self.temperature, self.ofa_loss_weight = temperature, ofa_loss_weight
        dim_s, dim_t = _final_dim(student, "student"), _final_dim(teacher, "teacher")
        self.branches = nn.ModuleList(
            self._branch(feature, dim_s, dim_t) for feature in self.layout.stages
        )
        self.branches.apply(init_branch_weights)
        # forward_intermediates indices, ascending (the order it returns them in)
        self._indices = sorted({f.index for f in self.layout.stages if f.index is not None})

    def _branch(self, feature, dim_s: int, dim_t: int) -> nn.Module:
        if self.layout.tokens:
            # the teacher's width never enters a token branch (official)
            return TokenBranch(
                feature.channels,
                feature.grid,
                dim_s,
                num_blocks=max(4 - feature.stage, 1),
                num_classes=self.num_classes,
                num_prefix_tokens=self.layout.num_prefix_tokens,
                class_token=self.layout.class_token,
            )
        return ConvBranch(feature.channels, 4 - feature.stage, max(dim_s, dim_t), self.num_classes)

    def student_features(self, x: Tensor) -> tuple[Tensor, list[tuple[Tensor, ...]]]:
        """Student logits and, per stage, the branch input: (map,) or (patch map, prefix)."""
        if not self._indices:
            final, feats = self.student.forward_features(x), []
        else:
            kwargs = {"return_prefix_tokens": True} if self.layout.num_prefix_tokens else {}
            final, feats = self.student.forward_intermediates(x, indices=self._indices, **kwargs)
        by_index = {
            i: f if isinstance(f, tuple) else (f,)
            for i, f in zip(self._indices, feats, strict=True)
        }
        inputs = [
            by_index[f.index] if f.index is not None else (final,) for f in self.layout.stages
        ]
        return self.student.forward_head(final), inputs

    def forward(self, x: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits_t = self.teacher_logits(x)
        logits, inputs = self.student_features(x)
        mask = one_hot_target(target, self.num_classes)
        T = self.temperature
        branch_losses = [
            ofa_loss(branch(*feature), logits_t, mask, eps, T)
            for branch, feature, eps in zip(self.branches, inputs, self.eps[:-1], strict=True)
        ]
        loss_ofa = torch.stack(branch_losses).sum() if branch_losses else logits.new_zeros(())
        return logits, {
            "loss_gt": self.gt_loss(logits, target),
            "loss_kd": self.kd_loss_weight * ofa_loss(logits, logits_t, mask, self.eps[-1], T),
            "loss_ofa": self.ofa_loss_weight * loss_ofa,
        }

    def branch_parameters(self) -> int:
        """Number of branch parameters (the official "extra" count; they exist only in
        training)."""
        return sum(p.numel() for p in self.branches.parameters())
