"""Callbacks of `train.py`: metric history -> PNG figures and a final summary line."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from .figures import plot_confusion, plot_metrics


class TrainingFigures(pl.Callback):
    """After every training epoch, rewrite `<dirpath>/metrics.png` (loss and metric curves) and,
    for classification, `<dirpath>/confusion_matrix.png` (validation set); at the end of `fit`,
    print the final validation metrics. `dirpath` defaults to the trainer's `default_root_dir`.
    """

    def __init__(self, dirpath: str | None = None, enabled: bool = True) -> None:
        self.dirpath, self.enabled = dirpath, enabled
        self.history: list[dict[str, float]] = []

    def _dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath or trainer.default_root_dir)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = {}
        for key, value in trainer.callback_metrics.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1 and not key.endswith("_step"):
                row[key.removesuffix("_epoch")] = float(value)
        self.history.append(row)
        if self.enabled:
            self._draw(trainer, pl_module)

    @rank_zero_only
    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        out = self._dir(trainer)
        plot_metrics(self.history, out / "metrics.png")
        confusion = getattr(pl_module, "confusion", None)
        if confusion is not None:
            names = getattr(trainer.datamodule, "class_names", None) or [
                str(i) for i in range(len(confusion))
            ]
            plot_confusion(confusion, names, out / "confusion_matrix.png")

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.history:
            return
        val = {k: v for k, v in self.history[-1].items() if k.startswith("val/")}
        shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(val.items()))
        print(
            f"\nvalidation after {trainer.current_epoch} epochs: {shown or '(no validation ran)'}"
        )
        if self.enabled:
            print(f"figures written to {self._dir(trainer)}/")

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
