"""Semantic segmentation (binary or multi-class) with any timm-registered dense model."""

from __future__ import annotations

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

from zoo.losses import DiceBCELoss, StructureLoss
from zoo.losses.bevanet import BEVANetLoss

from ..errors import ConfigError
from .common import TimmTask, create_model_by_name
from .figures import save_overlays

LOSSES = ("auto", "ce", "dice_bce", "structure", "bevanet")


def _resize_heads(heads: dict[str, Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
    # heads below label resolution (BEVANet's 1/8) are compared at label resolution
    return {
        k: v
        if v.shape[-2:] == size
        else F.interpolate(v, size=size, mode="bilinear", align_corners=False)
        for k, v in heads.items()
    }


class _CrossEntropyHeads(torch.nn.Module):
    """Cross-entropy (ignoring `ignore_index`) on one logits tensor or summed over a head dict."""

    def __init__(self, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor | dict[str, Tensor], target: Tensor) -> Tensor:
        heads = logits if isinstance(logits, dict) else {"out": logits}
        return sum(
            F.cross_entropy(h, target, ignore_index=self.ignore_index) for h in heads.values()
        )


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
            recipe; binary), `bevanet` (the BEVANet/PIDNet loss on its three heads) or `auto`
            (the family's own loss: `structure` for binary MK-UNet, `bevanet` for BEVANet,
            otherwise `dice_bce` for binary and `ce` for multi-class).
        loss_kwargs: keyword arguments of the loss class (`zoo.losses.StructureLoss`,
            `DiceBCELoss`, `zoo.losses.bevanet.BEVANetLoss`, e.g. `class_weights`).
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
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got '{loss}'")
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
        if loss == "auto":
            if name.startswith("bevanet"):
                loss = "bevanet"
            elif self.binary:
                loss = "structure" if name.startswith("mk_unet") else "dice_bce"
            else:
                loss = "ce"
        self.loss_name = loss
        if self.binary and loss == "ce":
            raise ConfigError(
                "loss='ce' needs num_classes >= 2; binary (num_classes=1) uses "
                "'dice_bce' or 'structure'"
            )
        if not self.binary and loss in ("dice_bce", "structure"):
            raise ConfigError(
                f"loss='{loss}' is binary (num_classes=1), got "
                f"num_classes={self.hparams.num_classes}; use 'ce'"
            )
        if deep_supervision and not has_heads:
            raise ConfigError(f"deep_supervision=True but '{name}' has no forward_heads()")
        kwargs = dict(self.hparams.loss_kwargs or {})
        if loss == "bevanet":
            if not has_heads:
                raise ConfigError(f"loss='bevanet' needs the heads of a BEVANet, got '{name}'")
            kwargs.setdefault("ignore_index", self.hparams.ignore_index)
            return BEVANetLoss(num_classes=self.hparams.num_classes, **kwargs), True
        use_heads = has_heads if deep_supervision is None else deep_supervision
        if loss == "structure":
            return StructureLoss(**kwargs), use_heads
        if loss == "dice_bce":
            return DiceBCELoss(**kwargs), use_heads
        return _CrossEntropyHeads(self.hparams.ignore_index, **kwargs), use_heads

    def setup(self, stage: str) -> None:
        self.check_num_classes(self.trainer.datamodule, binary_single_logit=True)

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
            self._save(self._overlay_batch, path)
        self._overlay_batch = None

    def _save(self, batch: tuple[Tensor, Tensor, Tensor | None], path: Path) -> None:
        x, pred, mask = batch
        save_overlays(
            x,
            pred,
            mask,
            path,
            num_classes=max(2, self.hparams.num_classes),
            ignore_index=self.hparams.ignore_index,
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
            self._save((x.cpu(), pred.cpu(), None if mask is None else mask.cpu()), path)
        return {"pred": pred}
