"""`train.py`'s LightningCLI: YAML configs, `fit/validate/test/predict`, every default
overridable on the command line, plus what the zoo adds for every run:

- `_base_:` in a config file names the file(s) it builds on, relative to itself (resolved in
  `load_config`, as mmengine's `_base_`), so a variant file holds only what differs and
  `--print_config` prints the complete merged result;
- a `checkpoint:` section (Lightning's `ModelCheckpoint`, `save_last=True`) whose files go to
  `<default_root_dir>/checkpoints/`, so `fit --ckpt_path last` finds them again on resume;
- a `figures:` section (`TrainingFigures`: metrics.png, confusion_matrix.png, final summary);
- `model.num_classes: null` takes the number of classes of the datamodule (the class folders
  found under `--data.root`); a number given is checked against the data instead;
- a CSV logger by default (Lightning would switch to TensorBoard once it is installed), and
  `--tensorboard=true` to add a TensorBoard logger writing next to it;
- `AtomicCheckpointIO` (atomic writes, weights-only loading) unless a CheckpointIO is given.

User errors (`ConfigError`: unknown model, bad data folder, class-count mismatch, a missing
`_base_` file) print one `error:` line instead of a traceback; set `ZOO_TRACEBACK=1` to see it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace, get_loader
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

import zoo.data  # noqa: F401  (makes the datamodules resolvable by short class name)

from ..errors import ConfigError
from .callbacks import TrainingFigures
from .checkpoint_io import AtomicCheckpointIO

BASE_KEY = "_base_"


def _merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`: mappings merge key by key, anything else (lists included)
    is replaced. A section naming another `class_path` replaces the base's section whole, since
    the base's `init_args` belong to the other class."""
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and _same_class(old, value):
            out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def _same_class(base: dict, override: dict) -> bool:
    # jsonargparse accepts short class names, so `ClassificationTask` names the same class
    # as `zoo.tasks.ClassificationTask`
    if "class_path" not in override or "class_path" not in base:
        return True
    return (
        str(base["class_path"]).rsplit(".", 1)[-1] == str(override["class_path"]).rsplit(".", 1)[-1]
    )


def load_config(
    path: str | Path, load: Callable[[str], Any], _chain: tuple[Path, ...] = ()
) -> dict:
    """The mapping in config file `path` merged on top of the files its `_base_` names (a path
    relative to `path`'s folder, or a list of them, merged in order), recursively."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise ConfigError(f"config files name each other as {BASE_KEY} in a cycle: {cycle}")
    cfg = load(path.read_text())
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file '{path}' does not hold a mapping of keys")
    bases = cfg.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(
            f"{BASE_KEY} in '{path}' must be a file name or a list of them, got {bases!r}"
        )
    merged: dict = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(
                f"{BASE_KEY}: {base} in '{path}' names a missing file ('{base_path}')"
            )
        merged = _merge(merged, load_config(base_path, load, (*_chain, path)))
    return _merge(merged, cfg)


class _ZooParser(LightningArgumentParser):
    """Resolves `_base_` in config files, and on a wrong argument prints the error and a pointer
    to --help (jsonargparse's default usage line lists every Trainer option, ~70 lines, above
    the one line that matters)."""

    def print_usage(self, file=None) -> None:
        (file or sys.stdout).write(f"usage: {self.prog} [options]  (all options: --help)\n")

    def parse_path(self, path, ext_vars=None, env=None, defaults=True, **kwargs):
        # `--config FILE` reads the file through here; a file without `_base_` parses as before
        load = get_loader(self.parser_mode)
        if BASE_KEY not in (load(Path(path).read_text()) or {}):
            return super().parse_path(path, ext_vars=ext_vars, env=env, defaults=defaults, **kwargs)
        merged = yaml.safe_dump(load_config(path, load), sort_keys=False)
        return self.parse_string(
            merged, path=path, ext_vars=ext_vars, env=env, defaults=defaults, **kwargs
        )


class ZooCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_class", _ZooParser)
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
        parser.add_argument(
            "--tensorboard",
            type=bool,
            default=False,
            help="Also log to TensorBoard, in the CSV logger's folder "
            "(<default_root_dir>/lightning_logs/version_N/).",
        )

    def instantiate_classes(self) -> None:
        cfg = self.config.get(str(self.subcommand), self.config)
        model_args = cfg.get("model.init_args")
        if model_args is None or model_args.get("num_classes", 0) is not None:
            super().instantiate_classes()
            return
        # the data first, so that the model is built with the classes it found
        spec = cfg.data
        data = self._parser(self.subcommand).instantiate_classes(Namespace(data=spec)).data
        if getattr(data, "num_classes", None) is None:
            raise ConfigError(
                f"model.num_classes is not set and the data ({type(data).__name__}) does not "
                "say how many classes it has; set --model.num_classes"
            )
        model_args.num_classes = data.num_classes
        # LightningCLI gives the modules their hyperparameters from a dump of the config that
        # it keeps from the first instantiation on (the data's, just now): dump it again
        self.__dict__.pop("config_dump", None)
        self._dump_config()
        cfg.data = data  # jsonargparse keeps an instance as it is: the data is built once
        try:
            super().instantiate_classes()
        finally:
            cfg.data = spec  # the config stays a config (saved as config.yaml)

    def instantiate_trainer(self, **kwargs) -> Trainer:
        kwargs.setdefault("logger", self._loggers())
        trainer = super().instantiate_trainer(**kwargs)
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                # a fixed folder (not the logger's version_N) so that "last" is found on resume
                cb.dirpath = os.path.realpath(Path(trainer.default_root_dir) / "checkpoints")
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def _loggers(self) -> Logger | list[Logger] | bool:
        config = self._get(self.config_init, "trainer", default={})
        root = config.get("default_root_dir") or os.getcwd()
        loggers = config.get("logger")
        if loggers is None or loggers is True:
            # Lightning's default logger turns into TensorBoard once tensorboard is installed
            loggers = CSVLogger(save_dir=root)
        if not self._get(self.config_init, "tensorboard", default=False):
            return loggers
        loggers = [] if loggers is False else loggers if isinstance(loggers, list) else [loggers]
        first = loggers[0] if loggers else None
        # the first logger's version folder, so that a run's CSV and events files sit together
        tensorboard = TensorBoardLogger(
            save_dir=getattr(first, "save_dir", None) or root,
            name=getattr(first, "name", None) or "lightning_logs",
            version=getattr(first, "version", None),
            default_hp_metric=False,
        )
        return [*loggers, tensorboard]


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
