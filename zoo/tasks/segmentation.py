"""Semantic segmentation (binary or multi-class) with any timm-registered dense model."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryJaccardIndex,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)

from zoo.losses import BEVANetLoss, CrossEntropyLoss, DiceBCELoss, StructureLoss

from ..errors import ConfigError
from .common import TimmTask, create_model_by_name
from .figures import save_overlays

# `loss=` names; `loss_kwargs` are the keyword arguments of the class
LOSSES: dict[str, type[torch.nn.Module]] = {
    "ce": CrossEntropyLoss,
    "dice_bce": DiceBCELoss,
    "structure": StructureLoss,
    "bevanet": BEVANetLoss,
}
BINARY_LOSSES = ("dice_bce", "structure")  # on one sigmoid logit; the others need 2+ classes
# set by the task from its own arguments (num_classes always, ignore_index unless given)
_TASK_LOSS_ARGS = ("num_classes", "ignore_index")


def _resize_heads(heads: dict[str, Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
    # heads below label resolution (BEVANet's 1/8) are compared at label resolution
    return {
        k: v
        if v.shape[-2:] == size
        else F.interpolate(v, size=size, mode="bilinear", align_corners=False)
        for k, v in heads.items()
    }


class SegmentationTask(TimmTask):
    """Binary (`num_classes=1`: one sigmoid logit) or multi-class (`num_classes=K`: softmax)
    segmentation. Validation logs `val/dice` and `val/miou` (torchmetrics; Dice is the F1 score
    of the pixel classification, foreground-only for binary, class-averaged otherwise; mIoU
    averages every class, background included) and saves input | prediction | ground-truth
    overlays to `<default_root_dir>/overlays/` each epoch; `predict` writes them to
    `<default_root_dir>/predictions/`.

    Args:
        model_name: a dense timm/zoo model (`mk_unet_t`, `bevanet_s`, ...).
        num_classes: 1 for binary, else the number of classes (background included).
        loss: `ce` (multi-class), `dice_bce` or `structure` (PraNet structure loss of the MK-UNet
            recipe; binary), `bevanet` (the BEVANet/PIDNet loss on its three heads) or `auto`:
            the model's `default_loss` (a family's own recipe: `structure` for MK-UNet,
            `bevanet` for BEVANet) when it fits binary / multi-class labels, otherwise
            `dice_bce` for binary and `ce` for multi-class.
        loss_kwargs: keyword arguments of the loss class (`LOSSES`: `zoo.losses.CrossEntropyLoss`
            `class_weights` (numbers or a name such as `cityscapes`), `label_smoothing`,
            `ignore_index`, head `weights`; `DiceBCELoss`, `StructureLoss`, `BEVANetLoss`); an
            unknown key is an error that lists the accepted ones.
        deep_supervision: train on every head of `model.forward_heads(x)` (summed) instead of
            the final output; `None` = on when the model has `forward_heads`. The `bevanet`
            loss always uses the heads.
        ignore_index: label value excluded from loss and metrics (multi-class).
        num_overlays: images per overlay figure (0 = none).
        Others: as in `ClassificationTask`.
    """

    def __init__(
        self,
        model_name: str = "mk_unet_t",
        num_classes: int = 1,
        pretrained_file: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        loss: str = "auto",
        loss_kwargs: dict[str, Any] | None = None,
        deep_supervision: bool | None = None,
        ignore_index: int = 255,
        opt: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        sched: str = "cosine",
        warmup_epochs: float = 0.0,
        warmup_lr: float = 1e-6,
        min_lr: float = 1e-6,
        decay_rate: float = 0.1,
        num_overlays: int = 4,
        grad_checkpointing: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (1 = binary), got {num_classes}")
        if loss != "auto" and loss not in LOSSES:
            raise ConfigError(f"loss must be 'auto' or one of {', '.join(LOSSES)}, got '{loss}'")
        self.save_hyperparameters()
        self.model = create_model_by_name(
            model_name,
            pretrained_file=pretrained_file,
            num_classes=num_classes,
            **(model_kwargs or {}),
        )
        self._apply_switches(grad_checkpointing, channels_last)
        self.binary = num_classes == 1
        self.criterion, self.use_heads = self._build_loss(loss, deep_supervision)
        n = 2 if self.binary else num_classes
        self.val_miou = MulticlassJaccardIndex(n, ignore_index=ignore_index, average="macro")
        if self.binary:
            self.val_dice = BinaryF1Score(ignore_index=ignore_index)
            self.val_iou_fg = BinaryJaccardIndex(ignore_index=ignore_index)
        else:
            self.val_dice = MulticlassF1Score(n, ignore_index=ignore_index, average="macro")
        self._overlay_batch: tuple[Tensor, Tensor, Tensor] | None = None

    def _build_loss(self, loss: str, deep_supervision: bool | None):
        name = self.hparams.model_name
        has_heads = hasattr(self.model, "forward_heads")
        loss = self._auto_loss() if loss == "auto" else loss
        self.loss_name = loss
        if self.binary and loss not in BINARY_LOSSES:
            raise ConfigError(
                f"loss='{loss}' needs num_classes >= 2; binary (num_classes=1) uses "
                f"{' or '.join(repr(b) for b in BINARY_LOSSES)}"
            )
        if not self.binary and loss in BINARY_LOSSES:
            raise ConfigError(
                f"loss='{loss}' is binary (num_classes=1), got "
                f"num_classes={self.hparams.num_classes}; use 'ce'"
            )
        if deep_supervision and not has_heads:
            raise ConfigError(f"deep_supervision=True but '{name}' has no forward_heads()")
        if loss == "bevanet" and not has_heads:
            raise ConfigError(f"loss='bevanet' needs the heads of a BEVANet, got '{name}'")
        criterion = LOSSES[loss](**self._loss_kwargs(loss))
        if loss == "bevanet":  # its terms are defined on the three heads
            return criterion, True
        return criterion, has_heads if deep_supervision is None else deep_supervision

    def _auto_loss(self) -> str:
        declared = getattr(self.model, "default_loss", None)
        if declared is not None and declared not in LOSSES:
            raise ConfigError(
                f"{type(self.model).__name__}.default_loss='{declared}' is not one of "
                f"{', '.join(LOSSES)}"
            )
        if declared is not None and (declared in BINARY_LOSSES) == self.binary:
            return declared
        return BINARY_LOSSES[0] if self.binary else "ce"

    def _loss_kwargs(self, loss: str) -> dict[str, Any]:
        params = inspect.signature(LOSSES[loss]).parameters
        accepted = [p for p in params if p != "num_classes"]
        given = dict(self.hparams.loss_kwargs or {})
        unknown = [k for k in given if k not in accepted]
        if unknown:
            raise ConfigError(
                f"loss_kwargs {', '.join(unknown)} are not options of loss='{loss}' "
                f"({LOSSES[loss].__name__}); it accepts: {', '.join(accepted) or 'none'}"
                + (" (num_classes is model.num_classes)" if "num_classes" in unknown else "")
            )
        for key in _TASK_LOSS_ARGS:  # num_classes is never in `given` (not accepted above)
            if key in params:
                given.setdefault(key, self.hparams[key])
        return given

    def setup(self, stage: str) -> None:
        self.check_num_classes(self.trainer.datamodule, binary_single_logit=True)
        self.use_example_input(self.trainer.datamodule)

    def forward(self, x: Tensor) -> Tensor:
        """Logits at input resolution."""
        out = self.model(self._format(x))
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def _target(self, mask: Tensor) -> Tensor:
        return mask.float() if self.binary else mask

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, mask = batch
        if self.use_heads:
            out = self.model.forward_heads(self._format(x))
            if self.loss_name != "bevanet":  # the BEVANet loss upsamples as its recipe does
                out = _resize_heads(out, tuple(mask.shape[-2:]))
        else:
            out = self(x)
        loss = self.criterion(out, self._target(mask))
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _predict_labels(self, logits: Tensor) -> Tensor:
        return (logits[:, 0] > 0).long() if self.binary else logits.argmax(dim=1)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, mask = batch
        logits = self(x)
        if self.binary:
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], mask.float())
        else:
            loss = F.cross_entropy(logits, mask, ignore_index=self.hparams.ignore_index)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        pred = self._predict_labels(logits)
        self.val_miou(pred, mask)
        self.val_dice(pred, mask)
        self.log("val/miou", self.val_miou, prog_bar=True)
        self.log("val/dice", self.val_dice, prog_bar=True)
        if self.binary:
            self.val_iou_fg(pred, mask)
            self.log("val/iou_fg", self.val_iou_fg)
        if batch_idx == 0 and self.hparams.num_overlays > 0:
            k = self.hparams.num_overlays
            self._overlay_batch = (x[:k].cpu(), pred[:k].cpu(), mask[:k].cpu())

    def on_validation_epoch_end(self) -> None:
        if self._overlay_batch is None or self.trainer.sanity_checking:
            return
        if self.trainer.is_global_zero:
            path = (
                Path(self.trainer.default_root_dir)
                / "overlays"
                / f"epoch_{self.current_epoch:03d}.png"
            )
            epoch, step = self.current_epoch + 1, self.global_step
            title = f"{self.hparams.model_name}: validation at epoch {epoch}, step {step}"
            self._save(self._overlay_batch, path, title)
        self._overlay_batch = None

    def _save(self, batch: tuple[Tensor, Tensor, Tensor | None], path: Path, title: str) -> None:
        x, pred, mask = batch
        save_overlays(
            x,
            pred,
            mask,
            path,
            num_classes=max(2, self.hparams.num_classes),
            ignore_index=self.hparams.ignore_index,
            title=title,
        )

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, mask = batch
        pred = self._predict_labels(self(x))
        self.val_miou(pred, mask)
        self.val_dice(pred, mask)
        self.log("test/miou", self.val_miou)
        self.log("test/dice", self.val_dice)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x, mask = (batch[0], batch[1]) if isinstance(batch, list | tuple) else (batch, None)
        logits = self(x)
        pred = self._predict_labels(logits)
        if self.hparams.num_overlays > 0:
            rank = self.trainer.global_rank
            path = (
                Path(self.trainer.default_root_dir)
                / "predictions"
                / f"batch_{batch_idx:04d}_rank{rank}.png"
            )
            batch = (x.cpu(), pred.cpu(), None if mask is None else mask.cpu())
            self._save(batch, path, f"{self.hparams.model_name}, predictions")
        return {"pred": pred}
