"""Teacher wrappers: a student, a frozen teacher, and the losses that bind them.

Every distiller is an `nn.Module` whose `forward(x, target)` returns
`(student_logits, {"loss_gt", ...})`, the contract of the official OFAKD distillers: the training
loss is the sum of the dict's values, each already multiplied by its weight. `target` is class
indices or soft (B, C) targets (Mixup/CutMix); `criterion(logits, target)` is the ground-truth
loss (default: `target_cross_entropy`, which takes both).

The teacher is frozen at construction (`requires_grad_(False)`), stays in eval mode when the
wrapper is put in train mode, and runs under `no_grad`, optionally in a lower precision. The
student's own weights are `student_state_dict()`: what gets saved, never the branches or the
teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..layers.input_check import model_name
from .losses import dkd_loss, kd_loss, target_cross_entropy
from .teacher import freeze_teacher

__all__ = ["DKD", "KD", "Distiller", "Vanilla"]

Criterion = Callable[[Tensor, Tensor], Tensor]


def _check_num_classes(model: nn.Module, num_classes: int, role: str) -> None:
    found = getattr(model, "num_classes", None)
    if found is not None and found != num_classes:
        raise ConfigError(
            f"the {role} {model_name(model)} predicts {found} classes but num_classes="
            f"{num_classes}; teacher and student must share one label set"
            + (" (fine-tune the teacher on it first)" if role == "teacher" else "")
        )


class Distiller(nn.Module):
    """Base: holds `student`, the frozen `teacher` and the ground-truth term.

    Args:
        student: any classifier (trained).
        teacher: a trained classifier over the same classes, or None (for `Vanilla`).
        num_classes: the label set of both.
        gt_loss_weight, kd_loss_weight: weights of the ground-truth and distillation terms.
        criterion: ground-truth loss `(logits, target) -> scalar`.
        teacher_dtype: run the teacher in this dtype (its weights are cast once, here).
    """

    uses_teacher = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        num_classes: int,
        gt_loss_weight: float = 1.0,
        kd_loss_weight: float = 1.0,
        criterion: Criterion | None = None,
        teacher_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if self.uses_teacher and teacher is None:
            raise ConfigError(f"{type(self).__name__} distils from a teacher; got teacher=None")
        _check_num_classes(student, num_classes, "student")
        if teacher is not None:
            _check_num_classes(teacher, num_classes, "teacher")
            freeze_teacher(teacher, teacher_dtype)
        self.student, self.teacher = student, teacher
        self.num_classes = num_classes
        self.teacher_dtype = teacher_dtype
        self.gt_loss_weight, self.kd_loss_weight = gt_loss_weight, kd_loss_weight
        self.criterion = criterion if criterion is not None else target_cross_entropy

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # dropout off and BatchNorm statistics fixed, always
        return self

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        """The teacher's logits for the (same, possibly mixed) batch, as float32."""
        self.teacher.eval()
        logits = self.teacher(x if self.teacher_dtype is None else x.to(self.teacher_dtype))
        if logits.shape != (x.shape[0], self.num_classes):
            raise ValueError(
                f"the teacher returned logits of shape {tuple(logits.shape)}, expected "
                f"({x.shape[0]}, {self.num_classes})"
            )
        return logits.float()

    def gt_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.gt_loss_weight * self.criterion(logits, target)

    def student_state_dict(self) -> dict[str, Tensor]:
        """The bare student's state_dict: loads into `timm.create_model(student_name)`."""
        return self.student.state_dict()

    def no_weight_decay(self) -> set[str]:
        # timm's optimizer factory reads this: the student's own exemptions (pos_embed,
        # cls_token, ...), under this wrapper's attribute name
        own = getattr(self.student, "no_weight_decay", None)
        return {f"student.{name}" for name in (own() if callable(own) else ())}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.student.set_grad_checkpointing(enable)

    def forward(self, x: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError


class Vanilla(Distiller):
    """No distillation: the ground-truth loss alone (the baseline)."""

    uses_teacher = False

    def forward(self, x: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        return logits, {"loss_gt": self.gt_loss(logits, target)}


class KD(Distiller):
    """Hinton KD: `loss_kd = kd_loss_weight * kd_loss(student, teacher, temperature)`."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        num_classes: int,
        temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, num_classes, **kwargs)
        self.temperature = temperature

    def forward(self, x: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits_t = self.teacher_logits(x)
        logits = self.student(x)
        return logits, {
            "loss_gt": self.gt_loss(logits, target),
            "loss_kd": self.kd_loss_weight * kd_loss(logits, logits_t, self.temperature),
        }


class DKD(Distiller):
    """Decoupled KD: `loss_kd = kd_loss_weight * dkd_loss(..., alpha, beta, temperature)`,
    with OFAKD's defaults (alpha 1, beta 2, T 1)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        num_classes: int,
        alpha: float = 1.0,
        beta: float = 2.0,
        temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, num_classes, **kwargs)
        self.alpha, self.beta, self.temperature = alpha, beta, temperature

    def forward(self, x: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits_t = self.teacher_logits(x)
        logits = self.student(x)
        kd = dkd_loss(logits, logits_t, target, self.alpha, self.beta, self.temperature)
        return logits, {
            "loss_gt": self.gt_loss(logits, target),
            "loss_kd": self.kd_loss_weight * kd,
        }
