"""`train.py`'s LightningCLI: YAML configs, `fit/validate/test/predict`, every default
overridable on the command line, plus three defaults the zoo wants for every run:

- a `checkpoint:` section (Lightning's `ModelCheckpoint`, `save_last=True`) whose files go to
  `<default_root_dir>/checkpoints/`, so `fit --ckpt_path last` finds them again on resume;
- a `figures:` section (`TrainingFigures`: metrics.png, confusion_matrix.png, final summary);
- `AtomicCheckpointIO` (atomic writes, weights-only loading) unless a CheckpointIO is given.

User errors (`ConfigError`: unknown model, bad data folder, class-count mismatch) print one
`error:` line instead of a traceback; set `ZOO_TRACEBACK=1` to see the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import zoo.data  # noqa: F401  (makes the datamodules resolvable by short class name)

from ..errors import ConfigError
from .callbacks import TrainingFigures
from .checkpoint_io import AtomicCheckpointIO


class _ShortUsageParser(LightningArgumentParser):
    """On a wrong argument, print the error and a pointer to --help: jsonargparse's default
    usage line lists every Trainer option (~70 lines) above the one line that matters."""

    def print_usage(self, file=None) -> None:
        (file or sys.stdout).write(f"usage: {self.prog} [options]  (all options: --help)\n")


class ZooCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_class", _ShortUsageParser)
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 1})
        parser.add_lightning_class_args(TrainingFigures, "figures")

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                # a fixed folder (not the logger's version_N) so that "last" is found on resume
                cb.dirpath = os.path.realpath(Path(trainer.default_root_dir) / "checkpoints")
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


def _config_error(err: BaseException) -> ConfigError | None:
    # jsonargparse re-raises errors from class instantiation as its own ValueError, chained
    # (`raise ... from`) to the original one
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ConfigError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def main(args: list[str] | None = None) -> None:
    """Run the CLI (`args=None` reads sys.argv); user errors exit with status 2."""
    try:
        ZooCLI(args=args)
    except Exception as err:
        user_error = _config_error(err)
        if user_error is None or os.environ.get("ZOO_TRACEBACK"):
            raise
        print(f"error: {user_error}", file=sys.stderr)
        raise SystemExit(2) from None
