"""Checkpoint files for every zoo family: a safe loader and one-line errors naming what is wrong.

timm reads `create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=PATH))` itself,
with `torch.load(weights_only=True)`, and fails with torch's messages: an empty
`FileNotFoundError` for a missing file, and for a file that is not a checkpoint a message that
advises `weights_only=False`, which would run whatever code the file pickles. `build_model`
therefore reads the file first the way timm will (same unpickler settings, same unwrapping) and
raises `CheckpointError` naming the path; then timm loads it as usual. A zip checkpoint (what
`torch.save` writes) is memory-mapped for that check, so its tensors are not read twice.

`check_state_dict_fits` is the key/shape check every family's `checkpoint_filter_fn` ends with.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, resolve_pretrained_cfg
from torch import Tensor

from .errors import CheckpointError, first_few
from .layers.input_check import model_name

__all__ = ["build_model", "check_state_dict_fits", "load_checkpoint_file"]

ModelT = TypeVar("ModelT", bound=nn.Module)

# timm's loader allows this one global: its training checkpoints store their `args` namespace
_SAFE_GLOBALS = [argparse.Namespace]
# where timm's `load_state_dict` looks for the weights inside a checkpoint dict, in its order
_WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model")
# basicsr's wrappers (`{"params": ...}`, optionally `params_ema`): timm passes them through and
# the family's checkpoint_filter_fn unwraps them (DeepRFTv2)
_BASICSR_WRAPPERS = ("params_ema", "params")
# torch's phrasings: "Unsupported global: GLOBAL a.B was not ...", "Trying to load
# unsupported GLOBAL posix.mkdir whose module posix is blocked" and, for a class whose object
# is built, "Can only build Tensor, ... but got <class 'a.B'>"
_BLOCKED_GLOBAL = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)|but got <class '([^']+)'>")


def _invalid(path: str, reason: str) -> CheckpointError:
    return CheckpointError(f"not a valid checkpoint: {path} ({reason})")


def _read(
    path: str, mmap: bool, safe_globals: Sequence[Any] = (), map_location: Any = "cpu"
) -> Any:
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as err:
            raise _invalid(path, f"unreadable safetensors file: {err}") from None
    is_zip = zipfile.is_zipfile(path)
    with open(path, "rb") as f:
        # a zip's first bytes; is_zipfile also needs the directory at the end, gone if truncated
        zip_start = f.read(4) == b"PK\x03\x04"
    try:
        with torch.serialization.safe_globals([*_SAFE_GLOBALS, *safe_globals]):
            # mmap needs the zip format; the legacy format is read whole
            return torch.load(
                path, map_location=map_location, weights_only=True, mmap=mmap and is_zip
            )
    except pickle.UnpicklingError as err:
        blocked = _BLOCKED_GLOBAL.search(str(err))
        if blocked is None:
            reason = "not a file written by torch.save or safetensors"
        else:
            reason = (
                f"it pickles the Python object {(blocked[1] or blocked[2]).rstrip('.')}, which "
                "a weights-only load refuses to build; save model.state_dict() instead"
            )
        # `from None`: torch's own message suggests weights_only=False, i.e. running the file
        raise _invalid(path, reason) from None
    except Exception:  # on junk torch raises IndexError, KeyError, EOFError, RuntimeError ...
        if zip_start:
            reason = "a damaged or truncated torch.save zip archive"
        elif os.path.getsize(path) == 0:
            reason = "empty file"
        else:
            reason = "not a file written by torch.save or safetensors"
        raise _invalid(path, reason) from None


def read_checkpoint(
    path: str | os.PathLike[str],
    mmap: bool = False,
    safe_globals: Sequence[Any] = (),
    map_location: Any = "cpu",
) -> Any:
    """The whole object in a checkpoint file, as saved (no unwrapping), read without running
    pickled code; `CheckpointError` naming the path for a missing or unreadable file.

    safe_globals: more globals the weights-only unpickler may build, on top of timm's
    (entries as for `torch.serialization.safe_globals`, e.g. `(callable, "module.name")`).
    map_location: as for `torch.load`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is a directory, not a file" if os.path.isdir(path) else "does not exist"
        raise CheckpointError(f"checkpoint file not found: {path} ({what})")
    return _read(path, mmap, safe_globals, map_location)


def load_checkpoint_file(path: str | os.PathLike[str], mmap: bool = False) -> dict[str, Tensor]:
    """The state_dict in a checkpoint file (torch.save or .safetensors), read without running
    pickled code, unwrapped like timm does (`state_dict_ema`, `model_ema`, `state_dict`,
    `model`; then basicsr's `params_ema`, `params`). Raises `CheckpointError` for a missing
    file or one that holds no state_dict.

    mmap: memory-map a zip checkpoint instead of reading its tensors (for a quick check).
    """
    path = os.fspath(path)
    checkpoint = read_checkpoint(path, mmap)
    if isinstance(checkpoint, dict):
        for wrapper in _WRAPPERS + _BASICSR_WRAPPERS:
            if checkpoint.get(wrapper) is not None:
                checkpoint = checkpoint[wrapper]
                break
    if not isinstance(checkpoint, dict) or not checkpoint:
        held = "an empty dict" if checkpoint == {} else f"a {type(checkpoint).__name__}"
        raise _invalid(path, f"it holds {held}, not a state_dict of tensors")
    not_tensors = [k for k, v in checkpoint.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise _invalid(
            path,
            f"{len(not_tensors)} of its {len(checkpoint)} entries are not tensors: "
            f"{first_few(not_tensors, 3)}",
        )
    return checkpoint


def build_model(
    model_cls: Callable[..., ModelT], variant: str, pretrained: bool = False, **kwargs: Any
) -> ModelT:
    """timm's `build_model_with_cfg`, after checking a local weights file it is about to load."""
    if pretrained:
        cfg = resolve_pretrained_cfg(
            variant,
            pretrained_cfg=kwargs.get("pretrained_cfg"),
            pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"),
        )
        # timm's source order: an in-memory state_dict wins over a file
        if cfg.file and not cfg.state_dict and cfg.source in ("", "timm", None):
            load_checkpoint_file(cfg.file, mmap=True)
    return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)


def _count(keys: list[str], what: str) -> str:
    return f"{len(keys)} {what} keys" + (f" ({first_few(keys)})" if keys else "")


def _hint(text: str) -> str:
    return f"; {text}" if text else ""


def _prefixes(names: str | Iterable[str] | None) -> tuple[str, ...]:
    if not names:
        return ()
    return tuple(f"{n}." for n in ((names,) if isinstance(names, str) else names))


def check_state_dict_fits(
    state_dict: dict[str, Tensor], model: nn.Module, hint_keys: str = "", hint_shapes: str = ""
) -> None:
    """Raise `CheckpointError` unless `state_dict` (already in the model's key layout) loads.

    Left to timm's loader, which handles them after the filter: the classifier keys when
    num_classes differs from the pretrained cfg (timm drops them) and an input conv whose
    channel count differs (adapted to in_chans). A missing BatchNorm `num_batches_tracked` is
    filled in by BatchNorm itself.
    `hint_keys` / `hint_shapes` end the message for mismatched keys / shapes (what to try).
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    dropped_by_timm = getattr(model, "num_classes", None) != cfg.get("num_classes")
    classifier = _prefixes(cfg.get("classifier")) if dropped_by_timm else ()
    input_convs = {f"{n}weight" for n in _prefixes(cfg.get("first_conv"))}
    expected = model.state_dict()
    name = model_name(model)

    missing = [
        k
        for k in expected
        if k not in state_dict
        and not k.startswith(classifier)
        and not k.endswith(".num_batches_tracked")
    ]
    unexpected = [k for k in state_dict if k not in expected and not k.startswith(classifier)]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not fit {name}: {_count(missing, 'missing')}, "
            f"{_count(unexpected, 'unexpected')}{_hint(hint_keys)}"
        )

    def adaptable(key: str, have: Tensor, want: Tensor) -> bool:
        # timm's adapt_input_conv changes dim 1 (input channels) of an (O, I, kh, kw) weight only
        return (
            key in input_convs
            and have.dim() == 4
            and (have.shape[:1] + have.shape[2:] == want.shape[:1] + want.shape[2:])
        )

    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if not k.startswith(classifier)
        and v.shape != expected[k].shape
        and not adaptable(k, v, expected[k])
    ]
    if wrong:
        in_chans = getattr(model, "in_chans", None)
        built = f" (in_chans={in_chans})" if in_chans is not None else ""
        raise CheckpointError(
            f"checkpoint does not fit {name}{built}: {len(wrong)} tensors have another shape "
            f"(checkpoint vs model: {first_few(wrong, 3)}){_hint(hint_shapes)}"
        )
