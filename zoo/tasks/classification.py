"""Image classification with any timm or zoo model."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from ..errors import ConfigError
from .common import TimmTask, create_model_by_name


class ClassificationTask(TimmTask):
    """Supervised classification: cross-entropy with label smoothing, optional timm Mixup/CutMix
    (soft targets), top-1/top-5 accuracy (fraction of images, i.e. micro-averaged) and a
    validation confusion matrix (`self.confusion`,
    drawn by `zoo.tasks.TrainingFigures`).

    Args:
        model_name: any `timm.list_models()` name, the zoo's included (`unireplknet_a`, ...).
        num_classes: classifier outputs; must match the datamodule's classes. None (the default)
            is filled in by `train.py` from the datamodule (the class folders found under
            `--data.root`); in Python, give the number.
        pretrained_file: local checkpoint (official or ours) loaded through the family's filter.
        drop_path_rate: stochastic depth.
        model_kwargs: further keyword arguments for `timm.create_model`.
        opt, lr, weight_decay, momentum: `timm.optim.create_optimizer_v2` (no weight decay on
            norms and biases).
        sched, warmup_epochs, warmup_lr, min_lr, decay_rate: `timm.scheduler.create_scheduler_v2`,
            stepped per iteration.
        label_smoothing: applied to hard targets and to the Mixup targets.
        mixup_alpha, cutmix_alpha, mixup_prob: timm `Mixup` (off when both alphas are 0).
        grad_checkpointing: `model.set_grad_checkpointing(True)` (memory for compute).
        channels_last: model and inputs in channels_last memory format.
    """

    def __init__(
        self,
        model_name: str = "unireplknet_a",
        num_classes: int | None = None,
        pretrained_file: str | None = None,
        drop_path_rate: float = 0.0,
        model_kwargs: dict[str, Any] | None = None,
        opt: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        momentum: float = 0.9,
        sched: str = "cosine",
        warmup_epochs: float = 0.0,
        warmup_lr: float = 1e-6,
        min_lr: float = 1e-6,
        decay_rate: float = 0.1,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        grad_checkpointing: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if num_classes is None:
            raise ConfigError(
                "ClassificationTask needs num_classes (train.py takes it from the datamodule "
                "when it is not set)"
            )
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 for classification, got {num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.save_hyperparameters()
        self.model = create_model_by_name(
            model_name,
            pretrained_file=pretrained_file,
            num_classes=num_classes,
            drop_path_rate=drop_path_rate,
            **(model_kwargs or {}),
        )
        self._apply_switches(grad_checkpointing, channels_last)
        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            self.mixup = Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                prob=mixup_prob,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
            self.soft_ce = SoftTargetCrossEntropy()
        top5 = min(5, num_classes)
        self.train_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.confusion: torch.Tensor | None = None

    def setup(self, stage: str) -> None:
        self.check_num_classes(self.trainer.datamodule)
        self.use_example_input(self.trainer.datamodule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._format(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        if self.mixup is not None:
            x, soft = self.mixup(x, y)
            loss = self.soft_ce(self(x), soft)
        else:
            logits = self(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
            self.train_acc1(logits, y)
            self.log("train/acc1", self.train_acc1, on_step=False, on_epoch=True)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y), prog_bar=True, sync_dist=True)
        self.val_acc1(logits, y)
        self.val_acc5(logits, y)
        self.val_confusion(logits, y)
        self.log("val/acc1", self.val_acc1, prog_bar=True)
        self.log(f"val/acc{self.val_acc5.top_k}", self.val_acc5)

    def on_validation_epoch_end(self) -> None:
        self.confusion = self.val_confusion.compute().cpu()
        self.val_confusion.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.test_acc1(logits, y)
        self.log("test/acc1", self.test_acc1)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        probs = self(x).softmax(dim=-1)
        return {"probs": probs, "pred": probs.argmax(dim=-1)}
