"""Callbacks of `train.py`: metric history -> PNG figures, and a final summary of what ran."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from .figures import plot_confusion, plot_metrics


def _scalars(trainer: pl.Trainer, validation: bool) -> dict[str, float]:
    out = {}
    for key, value in trainer.callback_metrics.items():
        if key.startswith("val/") != validation or key.endswith("_step"):
            continue
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key.removesuffix("_epoch")] = float(value)
    return out


class TrainingFigures(pl.Callback):
    """After every training epoch, rewrite `<dirpath>/metrics.png` (loss and metric curves) and,
    for classification, `<dirpath>/confusion_matrix.png` (validation set); at the end of `fit`,
    print what ran (steps, finished epochs) and the last validation's metrics, or why none ran
    and the switch that makes one. `dirpath` defaults to the trainer's `default_root_dir`.
    """

    def __init__(self, dirpath: str | None = None, enabled: bool = True) -> None:
        self.dirpath, self.enabled = dirpath, enabled
        # one row per training epoch (a stopped one included); validation metrics only in the
        # rows of epochs that validated, so that the curves never repeat a stale value
        self.history: list[dict[str, float]] = []
        self.validations = 0
        self.last_validation: dict[str, float] = {}  # its metrics, "epoch" and "step"
        self._new_validation = False

    def _dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath or trainer.default_root_dir)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.validations += 1
        self._new_validation = True
        self.last_validation = {
            **_scalars(trainer, validation=True),
            "epoch": trainer.current_epoch + 1,
            "step": trainer.global_step,
        }

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = _scalars(trainer, validation=False)
        if self._new_validation:  # validation at an epoch's end runs before this hook
            row.update(_scalars(trainer, validation=True))
            self._new_validation = False
        self.history.append(row)
        if self.enabled:
            self._draw(trainer, pl_module)

    @rank_zero_only
    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        out = self._dir(trainer)
        plot_metrics(self.history, out / "metrics.png", title=_run_title(trainer, pl_module))
        confusion = getattr(pl_module, "confusion", None)
        if confusion is not None:
            names = getattr(trainer.datamodule, "class_names", None) or [
                str(i) for i in range(len(confusion))
            ]
            plot_confusion(confusion, names, out / "confusion_matrix.png")

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        print(f"\n{self.summary(trainer)}")
        if self.enabled and self.history:
            print(f"figures written to {self._dir(trainer)}/")

    def summary(self, trainer: pl.Trainer) -> str:
        """Two lines: the steps and epochs that ran; the last validation or why none ran."""
        batches = trainer.fit_loop.epoch_loop.batch_progress
        finished = trainer.current_epoch - (0 if batches.is_last_batch else 1)
        ran = f"trained {trainer.global_step} steps, {finished} epochs finished"
        if not batches.is_last_batch and batches.current.completed:
            ran += (
                f"; epoch {finished + 1} stopped after {batches.current.completed} of "
                f"{trainer.num_training_batches} batches"
            )
        if self.validations:
            val = dict(self.last_validation)
            where = f"epoch {val.pop('epoch')}, step {val.pop('step')}"
            shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(val.items()))
            # a task may add its own line (restoration: restored vs blurry PSNR)
            extra = getattr(trainer.lightning_module, "fit_summary", lambda: "")()
            extra = f"\n{extra}" if extra else ""
            return f"{ran}\nvalidation (run {self.validations}, at {where}): {shown}{extra}"
        return f"{ran}\nno validation ran: {_why_no_validation(trainer, finished)}"

    def state_dict(self) -> dict:
        return {
            "history": self.history,
            "validations": self.validations,
            "last_validation": self.last_validation,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
        self.validations = int(state_dict.get("validations", 0))
        self.last_validation = dict(state_dict.get("last_validation", {}))


def _why_no_validation(trainer: pl.Trainer, finished_epochs: int) -> str:
    if trainer.limit_val_batches == 0:
        return "it is switched off (limit_val_batches=0)"
    every = trainer.check_val_every_n_epoch
    hint = (
        "for one, add --trainer.check_val_every_n_epoch=1 (at the end of every epoch), and "
        "--trainer.val_check_interval=N to validate every N steps"
    )
    if every is not None and finished_epochs < every:
        return (
            f"it runs every {every} epochs (check_val_every_n_epoch={every}) and "
            f"{finished_epochs} finished; {hint}"
        )
    return f"val_check_interval={trainer.val_check_interval} was not reached; {hint}"


def _run_title(trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
    hparams = getattr(pl_module, "hparams", {})
    model = hparams.get("model_name") or type(pl_module).__name__
    data = trainer.datamodule
    describe = getattr(data, "describe", None)
    return f"{model} on {describe() if describe else type(data).__name__}"
