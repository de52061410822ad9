"""The zoo's models as the registry lists them, for tests that loop over every family.

Nothing here is a hand-kept list: names come from `timm.list_models(module=family)` for each
family in `zoo.models.FAMILIES`, so a new family or variant is tested without editing a test.
"""

import functools

import timm
import torch.nn as nn

import zoo

MODELS: dict[str, list[str]] = {f: timm.list_models(module=f) for f in zoo.models.FAMILIES}


@functools.cache
def meta_model(name: str) -> nn.Module:
    """The model built on the meta device (no memory, no init compute); do not modify it."""
    return timm.create_model(name, device="meta")


def n_params(name: str) -> int:
    return sum(p.numel() for p in meta_model(name).parameters())


# the cheapest model of each family, the one fast tests run on
SMALLEST: dict[str, str] = {f: min(names, key=n_params) for f, names in MODELS.items()}


def is_dense(name: str) -> bool:
    """A dense-prediction model (DESIGN.md: it has `forward_heads`), not a classifier."""
    return hasattr(meta_model(name), "forward_heads")


# Families whose smallest model takes minutes to trace (torch.jit for fvcore, dynamo,
# torch.export: DeepRFTv2's ~2,000 modules and 2 x 24 selective scans): the tests that trace
# whole models mark them slow.
SLOW_TO_TRACE: tuple[str, ...] = ("deeprftv2",)
