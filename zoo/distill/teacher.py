"""The teacher: a timm or zoo model by name, weights from a local file, frozen.

`load_teacher` reads the file without running pickled code, picks the EMA or the plain weights
explicitly (`use_ema`), and hands them to `timm.create_model` as an in-memory state_dict, so
that the family's `checkpoint_filter_fn` converts official key layouts as it does for
`pretrained_file`. timm's own file loading is not used because it silently takes the EMA
weights when a file has them, and drops the classifier (re-initialising it) whenever
`num_classes` differs from the architecture's default, which would turn a CIFAR-100 teacher
into one with a random head.

Files understood: raw state_dicts; timm / official training checkpoints (`state_dict`, `model`,
`state_dict_ema`, `model_ema`, a DDP `module.` prefix); `train.py` checkpoints (ClassificationTask:
the `model.` prefix is removed; with Lightning's `EMAWeightAveraging` the averaged weights are
its `state_dict` and the raw ones `current_model_state`; DistillationTask: the bare student and
its `state_dict_ema`); `.safetensors`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint import read_checkpoint
from ..errors import CheckpointError, ConfigError, first_few

__all__ = ["freeze_teacher", "load_teacher", "teacher_state_dict"]

# a checkpoint whose `state_dict` holds bare model keys although Lightning wrote it
BARE_STATE_DICT_KEY = "zoo_state_dict_is_bare_model"


def _read_raw(path: str) -> Any:
    # one weights-only read (timm's pickled `args` namespace allowed), CheckpointError naming
    # the path for a bad file; zip checkpoints memory-mapped
    return read_checkpoint(path, mmap=True)


def _tensors_only(d: Any) -> bool:
    return isinstance(d, dict) and bool(d) and all(isinstance(v, Tensor) for v in d.values())


def teacher_state_dict(path: str | os.PathLike[str], use_ema: bool = False) -> dict[str, Tensor]:
    """The teacher weights in checkpoint `path` (layouts in the module docstring): the EMA ones
    when `use_ema`, else the trained ones. Raises `CheckpointError` when the file has no EMA
    weights but `use_ema` is set, or holds no state_dict."""
    path = os.fspath(path)
    ckpt = _read_raw(path)
    if _tensors_only(ckpt):
        ema, plain = None, ckpt
    elif "pytorch-lightning_version" in ckpt and "current_model_state" in ckpt:
        ema, plain = ckpt["state_dict"], ckpt["current_model_state"]
    else:
        ema = next(
            (ckpt[k] for k in ("state_dict_ema", "model_ema") if _tensors_only(ckpt.get(k))), None
        )
        plain = next((ckpt[k] for k in ("state_dict", "model") if _tensors_only(ckpt.get(k))), None)
    chosen = ema if use_ema else plain
    if chosen is None:
        keys = first_few(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        what = "EMA weights (state_dict_ema / model_ema)" if use_ema else "model weights"
        raise CheckpointError(f"{path} holds no {what}; its top-level keys: {keys}")
    lightning = "pytorch-lightning_version" in ckpt and not ckpt.get(BARE_STATE_DICT_KEY)
    if lightning and all(k.startswith("model.") for k in chosen):
        chosen = {k.removeprefix("model."): v for k, v in chosen.items()}
    return {k.removeprefix("module."): v for k, v in chosen.items()}


def freeze_teacher(teacher: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """In place: no gradients, eval mode, optionally cast to `dtype` (bf16/fp16 halve its
    memory and time; it never trains, so no float32 master copy is needed)."""
    teacher.requires_grad_(False)
    teacher.eval()
    if dtype is not None:
        teacher.to(dtype)
    return teacher


def load_teacher(
    model_name: str,
    checkpoint: str | os.PathLike[str] | None,
    num_classes: int,
    use_ema: bool = False,
    dtype: torch.dtype | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """`timm.create_model(model_name, num_classes=num_classes, **model_kwargs)` (zoo names
    included) with the weights of `checkpoint` through the family's filter, frozen
    (`freeze_teacher`). `checkpoint=None` keeps the random initialisation (tests only: a
    teacher must be trained). A file whose classifier has another number of classes raises
    `ConfigError`: a teacher must predict the student's label set.
    """
    from ..tasks.common import create_model_by_name  # lazily: it imports Lightning

    if checkpoint is not None:
        state_dict = teacher_state_dict(checkpoint, use_ema)
        # the overlay's num_classes stops timm from dropping a classifier of this size
        model_kwargs.update(
            pretrained=True,
            pretrained_cfg_overlay=dict(state_dict=state_dict, num_classes=num_classes),
        )
    try:
        teacher = create_model_by_name(model_name, num_classes=num_classes, **model_kwargs)
    except RuntimeError as err:
        mismatch = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
        if not mismatch:
            raise
        raise ConfigError(
            f"teacher checkpoint {os.fspath(checkpoint)} does not fit {model_name} with "
            f"num_classes={num_classes}: {mismatch[0]}; the teacher must be trained on the "
            "student's classes (fine-tune it on them first)"
        ) from None
    return freeze_teacher(teacher, dtype)
