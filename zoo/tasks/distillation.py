"""Knowledge distillation with any timm or zoo student and teacher (`zoo.distill`)."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.utilities import rank_zero_warn
from timm.utils import ModelEmaV3
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ..distill import DISTILLERS, Distiller, load_teacher, target_cross_entropy
from ..distill.teacher import BARE_STATE_DICT_KEY
from ..errors import ConfigError
from .classification import ClassificationTask

__all__ = ["DistillationTask"]

TEACHER_PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
# checkpoint entries besides the bare student's `state_dict`
BRANCHES_KEY, EMA_KEY = "distill_branches", "state_dict_ema"


class DistillationTask(ClassificationTask):
    """Classification of `model_name` (the student) distilled from a frozen teacher.

    Everything of `ClassificationTask` applies to the student (optimiser, schedule, label
    smoothing, Mixup/CutMix, metrics, validation on the student alone). The training loss is
    the sum of the distiller's terms, each logged as `train/loss_gt`, `train/loss_kd`,
    `train/loss_ofa` next to their sum `train/loss`.

    Checkpoints hold the bare student: `state_dict` loads into
    `timm.create_model(model_name, num_classes=num_classes)` as it is, `state_dict_ema` holds
    its EMA when `ema_decay` is set (timm's loaders prefer it, by their convention). The teacher
    is never saved (it is rebuilt from `teacher_file`); the OFA branches ride along under
    `distill_branches` only so that `fit --ckpt_path last` resumes them. Lightning's warning
    that modules are in eval mode at the start of training is about the teacher, on purpose.

    Args:
        distiller: `ofa` (OFA-KD), `kd` (Hinton KD), `dkd` (decoupled KD) or `none` (the
            student's cross-entropy alone, the baseline).
        teacher_name: timm or zoo model name of the teacher.
        teacher_file: its trained weights (timm/official checkpoint, or a `train.py` one),
            loaded through the family's filter; required unless `distiller: none`.
        teacher_use_ema: take the file's EMA weights.
        teacher_precision: `32`, `bf16` or `16`: the dtype the teacher runs in.
        teacher_kwargs: further `timm.create_model` arguments for the teacher.
        stages: OFA: student stages (1-4) with an exit branch.
        eps: OFA: the exponent, one value or `len(stages) + 1` (stages, then final logits).
        temperature: softmax temperature of the OFA / KD / DKD terms.
        gt_loss_weight, kd_loss_weight, ofa_loss_weight: weights of the ground-truth,
            final-logit distillation and OFA-branch terms.
        dkd_alpha, dkd_beta: DKD's TCKD / NCKD weights.
        decay_epochs: epochs between decays of `sched: step` (the official ImageNet CNN
            recipe: 30).
        ema_decay: keep an EMA of the student alone (official ViT/MLP recipe: 0.99996),
            validated as `val/acc1_ema`. Lightning's `EMAWeightAveraging` is refused here: it
            would average the teacher and the branches too.
        **kwargs: `ClassificationTask`'s arguments (`model_name`, `num_classes`, `opt`, `lr`,
            `sched`, `label_smoothing`, `mixup_alpha`, ...).
    """

    def __init__(
        self,
        distiller: str = "ofa",
        teacher_name: str = "resnet18",
        teacher_file: str | None = None,
        teacher_use_ema: bool = False,
        teacher_precision: str = "32",
        teacher_kwargs: dict[str, Any] | None = None,
        stages: tuple[int, ...] = (1, 2, 3, 4),
        eps: float | list[float] = 1.0,
        temperature: float = 1.0,
        gt_loss_weight: float = 1.0,
        kd_loss_weight: float = 1.0,
        ofa_loss_weight: float = 1.0,
        dkd_alpha: float = 1.0,
        dkd_beta: float = 2.0,
        decay_epochs: float = 90.0,
        ema_decay: float | None = None,
        **kwargs: Any,
    ) -> None:
        if distiller not in DISTILLERS:
            raise ConfigError(
                f"distiller must be one of {', '.join(DISTILLERS)}, got '{distiller}'"
            )
        if teacher_precision not in TEACHER_PRECISIONS:
            raise ConfigError(
                f"teacher_precision must be one of {', '.join(TEACHER_PRECISIONS)}, "
                f"got '{teacher_precision}'"
            )
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in (0, 1), got {ema_decay}")
        super().__init__(**kwargs)
        hp = self.hparams
        student = self.model
        teacher = None
        if DISTILLERS[distiller].uses_teacher:
            if teacher_file is None:
                raise ConfigError(
                    f"distiller='{distiller}' needs a trained teacher: set model.teacher_file "
                    f"to a checkpoint of {teacher_name} trained on these {hp.num_classes} classes"
                )
            teacher = load_teacher(
                teacher_name,
                teacher_file,
                num_classes=hp.num_classes,
                use_ema=teacher_use_ema,
                **(teacher_kwargs or {}),
            )
            teacher.to(memory_format=self.memory_format)
        options = dict(
            gt_loss_weight=gt_loss_weight,
            kd_loss_weight=kd_loss_weight,
            criterion=functools.partial(target_cross_entropy, label_smoothing=hp.label_smoothing),
            teacher_dtype=TEACHER_PRECISIONS[teacher_precision],
        )
        if distiller == "ofa":
            options.update(
                stages=stages, eps=eps, temperature=temperature, ofa_loss_weight=ofa_loss_weight
            )
        elif distiller == "kd":
            options.update(temperature=temperature)
        elif distiller == "dkd":
            options.update(alpha=dkd_alpha, beta=dkd_beta, temperature=temperature)
        # `self.model` is the whole distiller, so that TimmTask's optimizer covers the student
        # and the branches (the frozen teacher's parameters are skipped by timm's factory)
        self.model: Distiller = DISTILLERS[distiller](student, teacher, hp.num_classes, **options)
        # a list keeps the EMA copy out of the module tree: out of `state_dict`, `.train()`,
        # the optimizer and Lightning's device moves (done by hand, `_ema_to_device`)
        self._ema: list[ModelEmaV3] = [] if ema_decay is None else [ModelEmaV3(student, ema_decay)]
        self._ema_step = -1
        if self._ema:
            self.val_acc1_ema = MulticlassAccuracy(hp.num_classes, top_k=1, average="micro")

    @property
    def student(self) -> torch.nn.Module:
        return self.model.student

    @property
    def student_ema(self) -> torch.nn.Module | None:
        return self._ema[0].module if self._ema else None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        averaging = [
            type(cb).__name__ for cb in self.trainer.callbacks if isinstance(cb, WeightAveraging)
        ]
        if averaging:
            raise ConfigError(
                f"{averaging[0]} averages the whole DistillationTask (teacher and branches "
                "included); remove it and set model.ema_decay (e.g. 0.99996) for an EMA of the "
                "student alone"
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.student(self._format(x))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        x, target = self.mixup(x, y) if self.mixup is not None else (x, y)
        logits, losses = self.model(self._format(x), target)
        loss = torch.stack(list(losses.values())).sum()
        for name, value in losses.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=True)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        if self.mixup is None:
            self.train_acc1(logits, y)
            self.log("train/acc1", self.train_acc1, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> dict:
        config = super().configure_optimizers()
        if self.hparams.sched == "step":
            # TimmTask leaves decay_epochs at timm's default (90); the schedule counts updates
            scheduler = config["lr_scheduler"]["scheduler"]
            total = int(self.trainer.estimated_stepping_batches)
            epochs = self.trainer.max_epochs if self.trainer.max_epochs not in (None, -1) else 1
            per_epoch = max(1, math.ceil(total / max(1, epochs)))
            scheduler.decay_t = max(1, round(self.hparams.decay_epochs * per_epoch))
        return config

    # --- student EMA ---------------------------------------------------------------------

    def _ema_to_device(self) -> None:
        if self._ema:
            self._ema[0].module.to(self.device)

    def on_fit_start(self) -> None:
        self._ema_to_device()

    def on_validation_start(self) -> None:  # `validate` runs without on_fit_start
        self._ema_to_device()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # once per optimizer step (gradient accumulation runs several batches per step)
        if self._ema and self.global_step != self._ema_step:
            self._ema_step = self.global_step
            self._ema[0].update(self.student, step=self.global_step)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if self._ema:
            x, y = batch
            self.val_acc1_ema(self.student_ema(self._format(x)), y)
            self.log("val/acc1_ema", self.val_acc1_ema)

    # --- checkpoints: the bare student ---------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        full = checkpoint["state_dict"]
        checkpoint["state_dict"] = {
            k.removeprefix("model.student."): v
            for k, v in full.items()
            if k.startswith("model.student.")
        }
        branches = {
            k.removeprefix("model."): v for k, v in full.items() if k.startswith("model.branches.")
        }
        if branches:
            checkpoint[BRANCHES_KEY] = branches
        if self._ema:
            checkpoint[EMA_KEY] = self.student_ema.state_dict()
        checkpoint[BARE_STATE_DICT_KEY] = True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not checkpoint.get(BARE_STATE_DICT_KEY):
            return  # a full task state_dict: Lightning loads it as it is
        own, student = self.state_dict(), checkpoint["state_dict"]
        full = {f"model.student.{k}": v for k, v in student.items()}
        # the teacher comes from teacher_file, not from the checkpoint
        full.update({k: v for k, v in own.items() if k.startswith("model.teacher.")})
        own_branches = {k: v for k, v in own.items() if k.startswith("model.branches.")}
        saved = checkpoint.get(BRANCHES_KEY)
        if own_branches and saved is None:
            rank_zero_warn("the checkpoint holds no OFA branches; they keep their initialisation")
        saved = {f"model.{k}": v for k, v in (saved or {}).items()}
        full.update({k: saved.get(k, v) for k, v in own_branches.items()})
        checkpoint["state_dict"] = full
        if self._ema:  # a checkpoint saved without an EMA starts it from the student
            self.student_ema.load_state_dict(checkpoint.get(EMA_KEY, student))
