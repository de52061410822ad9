"""Which student feature feeds each OFA stage, found from timm's `forward_intermediates`.

The official code hand-writes `stage_info(stage) -> (index, shape)` per architecture (at 224x224)
and monkey-patches each family's forward. Here one probe of `forward_intermediates` (on the meta
device: shapes only, no compute) gives every intermediate's shape, and two rules reproduce the
official tables:

- Hierarchical models (intermediates at several strides: ResNet, ConvNeXt, MobileNet, Swin, the
  zoo's UniRepLKNet and InceptionNeXt): stage s is the last intermediate at stride 4 * 2**(s-1),
  the end of the s-th downsampling stage. For CNN students stage 4 is the final feature map (what
  the head pools) when it has that resolution: the same tensor for ResNet and ConvNeXt, and
  MobileNetV2's 1280-channel head conv output, as the official `stage_info` picks.
- Plain models (one stride: ViT, DeiT, MLP-Mixer, ResMLP): the block outputs that the official
  code takes for depth 12, blocks 2, 4, 10, 12 (indices 1, 3, 9, 11), scaled to depth d as block
  `round(d * n / 12)` (half up, at least 1).

A student is a token model (ViT-style branch) when its final features are tokens, (B, N, C), or
NHWC maps (Swin, `output_fmt == "NHWC"`); otherwise it gets the CNN branch.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..errors import ConfigError
from ..layers.input_check import model_name

__all__ = ["StageFeature", "StudentLayout", "probe_features", "resolve_stages"]

STAGES = (1, 2, 3, 4)
# 1-based block numbers of the official plain-model stages (indices 1, 3, 9, 11 at depth 12)
_PLAIN_BLOCKS = {1: 2, 2: 4, 3: 10, 4: 12}
_PLAIN_DEPTH = 12


@dataclass(frozen=True)
class StageFeature:
    """One stage's feature: `index` into `forward_intermediates` (None: the final feature map),
    its channels and its (H, W) grid at the probed input size."""

    stage: int
    index: int | None
    channels: int
    grid: tuple[int, int]


@dataclass(frozen=True)
class StudentLayout:
    """What the branches need to know about a student."""

    tokens: bool
    num_features: int
    num_prefix_tokens: int
    class_token: bool
    stages: tuple[StageFeature, ...]


class _Intermediates(nn.Module):
    # functional_call runs a module's forward; this one's forward is forward_intermediates
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        return self.model.forward_intermediates(x)


def default_input_size(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model trains at: the image size its patch embedding fixes (ViT, Swin,
    Mixer) or its pretrained_cfg's `input_size`, with the input channels of its first conv."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    height, width = tuple(cfg.get("input_size", (3, 224, 224)))[-2:]
    for m in model.modules():
        img_size = getattr(m, "img_size", None)
        if isinstance(img_size, Sequence) and len(img_size) == 2:
            height, width = img_size
            break
    in_chans = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
    return int(in_chans), int(height), int(width)


def probe_features(
    model: nn.Module, input_size: tuple[int, int, int]
) -> tuple[torch.Size, list[torch.Size]]:
    """Shapes of `model.forward_intermediates` (final features, every intermediate) for one
    input of `input_size`, computed on the meta device; a model with an op that has no meta
    kernel runs once on zeros instead. Every module's train/eval mode is left as it was."""
    wrapper = _Intermediates(model)
    # each module's own mode, restored below (a student may hold frozen parts in eval mode)
    modes = {m: m.training for m in model.modules()}
    model.eval()  # BatchNorm in train mode would update its (meta) statistics
    try:
        with torch.no_grad():
            try:
                meta = {
                    name: torch.empty_like(t, device="meta")
                    for name, t in chain(wrapper.named_parameters(), wrapper.named_buffers())
                }
                x = torch.empty(1, *input_size, device="meta")
                final, feats = functional_call(wrapper, meta, (x,))
            except (NotImplementedError, RuntimeError):
                device = next(chain(model.parameters(), model.buffers())).device
                final, feats = wrapper(torch.zeros(1, *input_size, device=device))
    finally:
        for m, training in modes.items():
            m.training = training
    return final.shape, [f.shape for f in feats]


def is_token_model(model: nn.Module, final_shape: torch.Size) -> bool:
    return len(final_shape) == 3 or getattr(model, "output_fmt", "NCHW") == "NHWC"


def _plain_index(stage: int, depth: int) -> int:
    block = math.floor(depth * _PLAIN_BLOCKS[stage] / _PLAIN_DEPTH + 0.5)
    return max(block, 1) - 1


def resolve_stages(
    model: nn.Module,
    stages: Sequence[int],
    input_size: tuple[int, int, int] | None = None,
) -> StudentLayout:
    """Map OFA stage numbers (1-4) to `model.forward_intermediates` features (rules above).

    Raises `TypeError` for a model without `forward_intermediates` / `forward_head`, and
    `ConfigError` for a stage outside 1-4, a repeated one, or one the model does not have.
    """
    name = model_name(model)
    for method in ("forward_intermediates", "forward_head"):
        if not callable(getattr(model, method, None)):
            raise TypeError(
                f"{name} has no {method}(); OFA reads stage features through timm's "
                "forward_intermediates API (timm >= 1.0 models and every zoo classifier have it)"
            )
    stages = tuple(stages)
    wrong = [s for s in stages if s not in STAGES]
    if wrong or len(set(stages)) != len(stages):
        raise ConfigError(
            f"stages must be distinct numbers among {STAGES} (the student's four "
            f"downsampling stages, or four block groups of a ViT/MLP), got {list(stages)}"
        )
    input_size = input_size or default_input_size(model)
    final, feats = probe_features(model, input_size)
    tokens = is_token_model(model, final)
    strides = [round(input_size[1] / f[-2]) for f in feats]
    out = []
    for stage in stages:
        if len(set(strides)) > 1:  # hierarchical
            stride = 4 * 2 ** (stage - 1)
            at_stride = [i for i, s in enumerate(strides) if s == stride]
            if not at_stride:
                raise ConfigError(
                    f"stage {stage} needs a stride-{stride} feature map, but {name} at "
                    f"{input_size[1]}x{input_size[2]} has intermediates at strides "
                    f"{sorted(set(strides))}; leave stage {stage} out of stages"
                )
            index = at_stride[-1]
        else:
            index = _plain_index(stage, len(feats))
        shape = feats[index]
        if stage == 4 and not tokens and len(final) == 4 and final[-2:] == shape[-2:]:
            index, shape = None, final
        out.append(StageFeature(stage, index, int(shape[1]), (int(shape[-2]), int(shape[-1]))))
    num_prefix = int(getattr(model, "num_prefix_tokens", 0) or 0) if tokens else 0
    if num_prefix and not _takes_prefix_tokens(model):
        raise TypeError(
            f"{name} has {num_prefix} prefix tokens but its forward_intermediates() cannot "
            "return them (no return_prefix_tokens argument)"
        )
    return StudentLayout(
        tokens=tokens,
        num_features=int(model.num_features),
        num_prefix_tokens=num_prefix,
        class_token=num_prefix > 0 and getattr(model, "cls_token", None) is not None,
        stages=tuple(out),
    )


def _takes_prefix_tokens(model: nn.Module) -> bool:
    return "return_prefix_tokens" in inspect.signature(model.forward_intermediates).parameters
