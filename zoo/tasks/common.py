"""What every task shares: building the model by name (with close-match suggestions), timm's
optimizer and scheduler factories stepped per iteration, and the memory/speed switches."""

from __future__ import annotations

import difflib
import math
from typing import Any

import lightning.pytorch as pl
import timm
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

import zoo  # noqa: F401  (registers the zoo families with timm)

from ..errors import ConfigError


def create_model_by_name(
    model_name: str, pretrained_file: str | None = None, **kwargs: Any
) -> torch.nn.Module:
    """`timm.create_model(model_name, **kwargs)`; an unknown name raises `ConfigError` listing
    the closest registered names. `pretrained_file` loads a local checkpoint (official key
    layout or ours) through the family's `checkpoint_filter_fn`; nothing is downloaded."""
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown model name '{model_name}' (not registered with timm or the zoo).{hint}"
        )
    if pretrained_file is not None:
        from ..checkpoint import load_checkpoint_file

        # For timm's own models too: a missing or non-checkpoint file is a CheckpointError (one
        # `error:` line in train.py), not timm's bare FileNotFoundError or torch's advice to
        # unpickle with weights_only=False. A zip checkpoint is memory-mapped for this check.
        state = load_checkpoint_file(pretrained_file, mmap=True)
        overlay = dict(file=pretrained_file)
        if _head_fits(state, model_name, kwargs.get("num_classes")):
            # timm drops the classifier whenever num_classes differs from the architecture's
            # default; a file whose head already has the requested classes keeps it.
            overlay["num_classes"] = kwargs["num_classes"]
        kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay)
    return timm.create_model(model_name, **kwargs)


def _head_fits(state: dict, model_name: str, num_classes: int | None) -> bool:
    """Whether the checkpoint's classifier (named by the model's pretrained cfg) already has
    `num_classes` outputs."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    if num_classes is None or cfg is None or not cfg.classifier:
        return False
    names = (cfg.classifier,) if isinstance(cfg.classifier, str) else tuple(cfg.classifier)
    weights = [state.get(f"{name}.weight") for name in names]
    return all(w is not None and w.shape[0] == num_classes for w in weights)


class TimmTask(pl.LightningModule):
    """Base of the tasks: owns `self.model` and the optimisation recipe.

    The learning-rate schedule is one of timm's (`cosine`, `poly`, `step`, `multistep`, `tanh`,
    ...) with linear warm-up from `warmup_lr`, stepped every optimizer step; a YAML
    `optimizer:` / `lr_scheduler:` section replaces all of this (LightningCLI's own override).
    The schedule spans `trainer.estimated_stepping_batches`; an "epoch" of `warmup_epochs` is
    that total divided by `trainer.max_epochs` (the whole run when only `max_steps` is set).
    """

    def _apply_switches(self, grad_checkpointing: bool, channels_last: bool) -> None:
        if grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.memory_format)

    def use_example_input(self, datamodule: Any) -> None:
        """One sample of the data, zeroed, as `example_input_array`: Lightning's model summary
        then shows in/out sizes and the FLOPs of one forward (FlopCounterMode, which counts our
        ops through their registered formulas). Without it the summary says "Total FLOPs: 0"."""
        if self.example_input_array is not None:
            return
        for name in ("val_set", "train_set"):
            dataset = getattr(datamodule, name, None)
            if dataset is not None and len(dataset) > 0:
                sample = dataset[0]
                image = sample[0] if isinstance(sample, (tuple, list)) else sample
                if isinstance(image, torch.Tensor) and image.dim() == 3:
                    self.example_input_array = torch.zeros_like(image).unsqueeze(0)
                return

    def check_num_classes(self, datamodule: Any, binary_single_logit: bool = False) -> None:
        """Raise when the model's `num_classes` disagrees with the labels the data provides."""
        found = getattr(datamodule, "num_classes", None)
        if found is None:
            return
        ok = found == self.hparams.num_classes or (
            binary_single_logit and found == 2 and self.hparams.num_classes == 1
        )
        if not ok:
            names = getattr(datamodule, "class_names", None)
            shown = (
                f" ({', '.join(map(str, names[:10]))}{' ...' if len(names) > 10 else ''})"
                if names
                else ""
            )
            extra = " (or 1 for a single-logit binary model)" if binary_single_logit else ""
            raise ConfigError(
                f"model.num_classes={self.hparams.num_classes} but the data "
                f"({type(datamodule).__name__}) has {found} classes{shown}; set "
                f"--model.num_classes={found}{extra}"
            )

    def optimizer_kwargs(self) -> dict[str, Any]:
        """Further keyword arguments of `create_optimizer_v2` (a task's recipe: betas, ...)."""
        return {}

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        optimizer = create_optimizer_v2(
            self.model,
            opt=hp.opt,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            momentum=hp.momentum,
            **self.optimizer_kwargs(),
        )
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(1, self.trainer.max_epochs) if self.trainer.max_epochs not in (None, -1) else 1
        per_epoch = max(1, math.ceil(total / epochs))
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=hp.sched,
            num_epochs=math.ceil(total / per_epoch),
            warmup_epochs=hp.warmup_epochs,
            warmup_lr=hp.warmup_lr,
            min_lr=hp.min_lr,
            decay_rate=hp.decay_rate,
            step_on_epochs=False,
            updates_per_epoch=per_epoch,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        # timm schedulers are not torch LRSchedulers: they take the update count explicitly
        if hasattr(scheduler, "step_update"):
            scheduler.step_update(num_updates=self.global_step)
        else:
            super().lr_scheduler_step(scheduler, metric)
