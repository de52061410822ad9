"""Image restoration (deblurring) with any timm-registered image-to-image model; DeepRFTv2's
recipe by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from zoo.losses import DeepRFTv2Loss
from zoo.models.deeprftv2 import pad_to_multiple

from .common import TimmTask, create_model_by_name
from .figures import kernel_grid_figure, restoration_figure, save_figure


class RestorationTask(TimmTask):
    """Blurry -> sharp restoration. Batches are (blurry, sharp) float images in [0, 1].

    Training: `DeepRFTv2Loss` on every head of `model.forward_heads(x)` when the model has it
    (L1 + `fft_weight` x Fourier on the full-resolution images, plus `mid_weight` x the same on
    the half-resolution ones against the half-scale sharp image), else on `model(x)`.
    Validation: the final prediction (inputs reflect-padded to a multiple of `pad_multiple`,
    cropped back), clamped to [0, 1], against the sharp image: `val/psnr`, `val/ssim`
    (torchmetrics, per-image means), the blurry input's `val/psnr_blurry` for comparison and
    `val/psnr_gain` (restored - blurry). Each validation writes
    `<default_root_dir>/restoration/step_N.png` (blurry | restored | sharp rows of the first
    `num_figures` images) and, for models with `estimated_kernels`, `kernels/step_N.png`.

    Args:
        model_name: a restoration model (`deeprftv2_b`; `model_kwargs={"width": 16}` narrows it).
        fft_weight, mid_weight: loss weights (0.01 and 1 in the official recipe).
        opt, lr, weight_decay, betas, momentum: `timm.optim.create_optimizer_v2` (AdamW, 1e-3,
            1e-3, (0.9, 0.9) officially); weight decay applies to every parameter, as the
            official `torch.optim.AdamW` does.
        sched, warmup_epochs, warmup_lr, min_lr, decay_rate: as in `ClassificationTask`
            (cosine to 1e-7 without warm-up officially).
        pad_multiple: validation inputs are padded to a multiple of this (8 for DeepRFTv2).
        num_figures: images per restoration figure (0 = no figures).
    """

    def __init__(
        self,
        model_name: str = "deeprftv2_b",
        pretrained_file: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        fft_weight: float = 0.01,
        mid_weight: float = 1.0,
        opt: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9),
        momentum: float = 0.9,
        sched: str = "cosine",
        warmup_epochs: float = 0.0,
        warmup_lr: float = 1e-6,
        min_lr: float = 1e-7,
        decay_rate: float = 0.1,
        pad_multiple: int = 8,
        num_figures: int = 3,
        grad_checkpointing: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if pad_multiple < 1:
            raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}")
        self.save_hyperparameters()
        self.model = create_model_by_name(
            model_name, pretrained_file=pretrained_file, **(model_kwargs or {})
        )
        self._apply_switches(grad_checkpointing, channels_last)
        self.criterion = DeepRFTv2Loss(fft_weight=fft_weight, mid_weight=mid_weight)
        self.use_heads = hasattr(self.model, "forward_heads")
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.psnr_blurry = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.num_evaluated = 0
        self.last_scores: dict[str, float] = {}
        self._figure_rows: list[tuple[Tensor, Tensor, Tensor]] = []
        self._kernels: Tensor | None = None

    def optimizer_kwargs(self) -> dict[str, Any]:
        return {"betas": tuple(self.hparams.betas), "filter_bias_and_bn": False}

    def setup(self, stage: str) -> None:
        if self.example_input_array is not None:
            return
        data = self.trainer.datamodule
        size = data.patch_size(0) if hasattr(data, "patch_size") else None
        if size is not None:  # a training patch: the FLOPs of one training-size forward
            self.example_input_array = torch.zeros(1, 3, *size)
        else:
            self.use_example_input(data)

    def forward(self, x: Tensor) -> Tensor:
        """The final prediction at input resolution (padded to `pad_multiple` and cropped)."""
        padded, crop = pad_to_multiple(self._format(x), self.hparams.pad_multiple)
        return crop(self.model(padded))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        blurry, sharp = batch
        x = self._format(blurry)
        out = self.model.forward_heads(x) if self.use_heads else self.model(x)
        loss = self.criterion(out, sharp)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        if "mid" in self.criterion.last_terms:
            self.log("train/loss_mid", self.criterion.last_terms["mid"], on_epoch=True)
        return loss

    # -- evaluation ----------------------------------------------------------------------------

    def _evaluate(self, blurry: Tensor, sharp: Tensor, keep_figures: bool) -> Tensor:
        restored = self(blurry).float().clamp(0, 1)
        self.psnr.update(restored, sharp)
        self.ssim.update(restored, sharp)
        self.psnr_blurry.update(blurry.float().clamp(0, 1), sharp)
        self.num_evaluated += len(blurry)
        if keep_figures:
            room = self.hparams.num_figures - len(self._figure_rows)
            for i in range(min(room, len(blurry))):
                self._figure_rows.append((blurry[i].cpu(), restored[i].cpu(), sharp[i].cpu()))
            if self._kernels is None and hasattr(self.model, "estimated_kernels") and room > 0:
                padded, _ = pad_to_multiple(self._format(blurry[:1]), self.hparams.pad_multiple)
                self._kernels = self.model.estimated_kernels(padded)[0].float().cpu()
        return restored

    def _scores(self) -> dict[str, float]:
        psnr, blurry = float(self.psnr.compute()), float(self.psnr_blurry.compute())
        scores = {
            "psnr": psnr,
            "ssim": float(self.ssim.compute()),
            "psnr_blurry": blurry,
            "psnr_gain": psnr - blurry,
            "images": self.num_evaluated,
        }
        for metric in (self.psnr, self.ssim, self.psnr_blurry):
            metric.reset()
        self.num_evaluated = 0
        return scores

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        blurry, sharp = batch
        keep = self.hparams.num_figures > 0 and not self.trainer.sanity_checking
        self._evaluate(blurry, sharp, keep)

    def on_validation_epoch_end(self) -> None:
        scores = self._scores()
        for key in ("psnr", "ssim", "psnr_blurry", "psnr_gain"):
            self.log(f"val/{key}", scores[key], prog_bar=key in ("psnr", "psnr_gain"))
        if self.trainer.sanity_checking:
            return
        self.last_scores = scores
        if self.trainer.is_global_zero and self._figure_rows:
            self._save_figures(Path(self.trainer.default_root_dir), f"step_{self.global_step:07d}")
        self._figure_rows, self._kernels = [], None

    def _save_figures(self, root: Path, name: str) -> None:
        blurry, restored, sharp = (list(t) for t in zip(*self._figure_rows, strict=True))
        s = self.last_scores
        title = (
            f"{self.hparams.model_name}, step {self.global_step}: restored {s['psnr']:.2f} dB vs "
            f"blurry {s['psnr_blurry']:.2f} dB ({s['psnr_gain']:+.2f} dB, mean of "
            f"{s['images']} held-out images)"
        )
        save_figure(
            restoration_figure(blurry, restored, sharp, title), root / "restoration" / f"{name}.png"
        )
        if self._kernels is not None:
            ktitle = f"estimated kernels (first image, step {self.global_step})"
            save_figure(kernel_grid_figure(self._kernels, ktitle), root / "kernels" / f"{name}.png")

    def fit_summary(self) -> str:
        """The last validation's restored vs blurry PSNR (printed at the end of `fit`)."""
        s = self.last_scores
        if not s:
            return ""
        return (
            f"held-out images ({s['images']}): restored PSNR {s['psnr']:.2f} dB vs blurry PSNR "
            f"{s['psnr_blurry']:.2f} dB ({s['psnr_gain']:+.2f} dB), SSIM {s['ssim']:.4f}"
        )

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(*batch, keep_figures=False)

    def on_test_epoch_end(self) -> None:
        scores = self._scores()
        for key in ("psnr", "ssim", "psnr_blurry", "psnr_gain"):
            self.log(f"test/{key}", scores[key])

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        blurry = batch[0] if isinstance(batch, list | tuple) else batch
        return self(blurry).clamp(0, 1)
