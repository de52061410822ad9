"""InceptionNeXt (MetaNeXt blocks with an Inception depthwise token mixer).

Paper: `InceptionNeXt: When Inception Meets ConvNeXt` (Weihao Yu, Pan Zhou, Shuicheng Yan,
Xinchao Wang, CVPR 2024) - https://arxiv.org/abs/2303.16900
Official code and weights: https://github.com/sail-sg/inceptionnext (models/inceptionnext.py)

What differs from the official code (the default training form keeps its parameters,
state_dict keys and outputs):
* The three depthwise branches are `ops.DepthwiseConv2d` (our depthwise op, same parameters as
  the `nn.Conv2d` they replace), so official checkpoints load unchanged.
* The channel split follows the official CODE: identity channels first, then 3x3, 1xk, kx1. The
  paper's Algorithm 1 puts the identity last; with the released weights that order is wrong.
* By default the network runs in channels_last memory format (`channels_last=True`): oneDNN's
  depthwise and 1x1 convolutions are direct kernels in NHWC, while in NCHW every block pays for
  layout reorders; on a 2-core CPU that makes InceptionNeXt-T 1.3-1.6x faster (same values).
* A deploy form (`zoo.reparameterize(model)` or `deploy=True`): the stem and downsample BNs
  fold into their convs, each block's BN into mlp.fc1 and its layer scale into mlp.fc2.
* Full timm model API (features_only, forward_intermediates, prune_intermediate_layers, ...);
  unknown keyword arguments raise TypeError (the official constructor swallows them).
* Registered as `inceptionnext_*` next to timm's own `inception_next_*` port, which has the same
  state_dict layout and outputs. Default crop_pct follows the official cfgs (timm uses 0.95 for
  base).
"""

import warnings

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    ConvMlp,
    DropPath,
    SelectAdaptivePool2d,
    calculate_drop_path_rates,
    get_device_dtype,
    register_notrace_function,
    trunc_normal_,
)
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices  # not exported by timm.models

from ops import DepthwiseConv2d

from ..checkpoint import build_model, check_state_dict_fits
from ..errors import first_few
from ..layers import check_in_chans, fuse_bn  # (zoo.layers makes DepthwiseConv2d an fx leaf)

__all__ = ["InceptionNeXt"]


class InceptionDWConv2d(nn.Module):
    """Inception depthwise conv: identity | 3x3 | 1xk | kx1 on disjoint channel groups.

    `gc = int(dim * branch_ratio)` channels go to each conv branch; the first `dim - 3 * gc`
    channels pass through unchanged (official code order).
    """

    def __init__(
        self,
        dim: int,
        square_kernel_size: int = 3,
        band_kernel_size: int = 11,
        branch_ratio: float = 0.125,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        gc = int(dim * branch_ratio)
        if gc < 1 or 3 * gc > dim:
            raise ValueError(
                f"branch_ratio={branch_ratio} gives {gc} channels per branch for dim={dim}; "
                f"expected 1 <= int(dim * branch_ratio) <= dim // 3"
            )
        for name, k in (
            ("square_kernel_size", square_kernel_size),
            ("band_kernel_size", band_kernel_size),
        ):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"{name} must be a positive odd int ('same' padding), got {k}")
        ks, kb = square_kernel_size, band_kernel_size
        self.dwconv_hw = DepthwiseConv2d(gc, ks, padding=ks // 2, **dd)
        self.dwconv_w = DepthwiseConv2d(gc, (1, kb), padding=(0, kb // 2), **dd)
        self.dwconv_h = DepthwiseConv2d(gc, (kb, 1), padding=(kb // 2, 0), **dd)
        self.split_indexes = (dim - 3 * gc, gc, gc, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_id, x_hw, x_w, x_h = torch.split(x, self.split_indexes, dim=1)
        # The branch inputs are channel slices; ops keeps a slice of a channels_last tensor
        # channels_last, so the concat below does not mix layouts (a mixed cat takes a slow path).
        y_hw, y_w, y_h = self.dwconv_hw(x_hw), self.dwconv_w(x_w), self.dwconv_h(x_h)
        return torch.cat((x_id, y_hw, y_w, y_h), dim=1)


def _fold_bn_into_next_conv(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> None:
    """conv(bn(x)) -> conv'(x) in place, for an unpadded conv (exact in eval mode)."""
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()  # bn(x) = x * scale + shift
    shift = bn.bias - bn.running_mean * scale
    bias = conv.weight.sum((2, 3)) @ shift
    if conv.bias is not None:
        bias = bias + conv.bias
    conv.weight.copy_(conv.weight * scale.view(1, -1, 1, 1))
    conv.bias = nn.Parameter(bias)


class ConvBnStem(nn.Sequential):
    """4x4/s4 conv + BN (keys stem.0, stem.1); the deploy form folds the BN into the conv."""

    def __init__(
        self,
        in_chans: int,
        out_chs: int,
        deploy: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__(
            nn.Conv2d(in_chans, out_chs, kernel_size=4, stride=4, **dd),
            nn.Identity() if deploy else nn.BatchNorm2d(out_chs, **dd),
        )

    @torch.no_grad()
    def reparameterize(self) -> None:
        if isinstance(self[1], nn.BatchNorm2d):
            weight, bias = fuse_bn(self[0].weight, self[0].bias, self[1])
            self[0].weight.copy_(weight)
            self[0].bias.copy_(bias)
            self[1] = nn.Identity()


class MetaNeXtBlock(nn.Module):
    """x + drop_path(gamma * MLP(BN(token_mixer(x)))): one residual, no norm before the mixer.

    Deploy form (`reparameterize`, or `deploy=True`): BN folded into mlp.fc1 and gamma into
    mlp.fc2, two fewer passes over the activations per block.
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        square_kernel_size: int = 3,
        band_kernel_size: int = 11,
        branch_ratio: float = 0.125,
        ls_init_value: float | None = 1e-6,
        drop_path: float = 0.0,
        deploy: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.token_mixer = InceptionDWConv2d(
            dim, square_kernel_size, band_kernel_size, branch_ratio, **dd
        )
        self.norm = nn.Identity() if deploy else nn.BatchNorm2d(dim, **dd)
        self.mlp = ConvMlp(dim, int(mlp_ratio * dim), act_layer=nn.GELU, **dd)
        self.gamma = (
            nn.Parameter(ls_init_value * torch.ones(dim, **dd))
            if ls_init_value and not deploy
            else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    @torch.no_grad()
    def reparameterize(self) -> None:
        if isinstance(self.norm, nn.BatchNorm2d):
            _fold_bn_into_next_conv(self.norm, self.mlp.fc1)
            self.norm = nn.Identity()
        if self.gamma is not None:
            fc2 = self.mlp.fc2
            fc2.weight.mul_(self.gamma.view(-1, 1, 1, 1))
            fc2.bias.mul_(self.gamma)
            self.gamma = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.mlp(self.norm(self.token_mixer(x)))
        if self.gamma is not None:
            x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(x) + shortcut


class MetaNeXtStage(nn.Module):
    """Optional BN + 2x2/s2 conv downsample, then `depth` MetaNeXt blocks."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        downsample: bool = True,
        drop_path_rates: list[float] | None = None,
        deploy: bool = False,
        **block_kwargs,
    ) -> None:
        super().__init__()
        dd = {"device": block_kwargs.get("device"), "dtype": block_kwargs.get("dtype")}
        self.grad_checkpointing = False
        if downsample:
            self.downsample = nn.Sequential(
                nn.Identity() if deploy else nn.BatchNorm2d(in_chs, **dd),
                nn.Conv2d(in_chs, out_chs, kernel_size=2, stride=2, **dd),
            )
        else:
            self.downsample = nn.Identity()
        rates = drop_path_rates or [0.0] * depth
        self.blocks = nn.Sequential(
            *[
                MetaNeXtBlock(out_chs, drop_path=rates[i], deploy=deploy, **block_kwargs)
                for i in range(depth)
            ]
        )

    @torch.no_grad()
    def reparameterize(self) -> None:
        # BN -> 2x2/s2 conv without padding: the BN folds exactly into the conv
        if isinstance(self.downsample, nn.Sequential) and isinstance(
            self.downsample[0], nn.BatchNorm2d
        ):
            _fold_bn_into_next_conv(self.downsample[0], self.downsample[1])
            self.downsample[0] = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class MlpClassifierHead(nn.Module):
    """pool -> fc1 (C -> r*C) -> GELU -> LayerNorm(eps 1e-6) -> dropout -> fc2.

    With pooling disabled (`pool_type=''`) the same layers run at every position and the output
    stays a (N, C', H, W) map.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int = 1000,
        pool_type: str = "avg",
        mlp_ratio: float = 3.0,
        drop: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.global_pool, self.pooled = _make_pool(pool_type)
        pooled_features = in_features * self.global_pool.feat_mult()
        self.num_features = int(mlp_ratio * pooled_features)
        self.fc1 = nn.Linear(pooled_features, self.num_features, **dd)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6, **dd)
        self.drop = nn.Dropout(drop)
        self.fc2 = (
            nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        )

    def reset(
        self, num_classes: int, pool_type: str | None = None, reset_other: bool = False
    ) -> None:
        dd = get_device_dtype(self)
        if pool_type is not None:
            self.global_pool, self.pooled = _make_pool(pool_type)
        pooled_features = self.in_features * self.global_pool.feat_mult()
        if reset_other:
            # drop the pre-logits MLP: pooled features go straight to the classifier
            self.fc1, self.act, self.norm = nn.Identity(), nn.Identity(), nn.Identity()
            self.num_features = pooled_features
        elif isinstance(self.fc1, nn.Linear) and self.fc1.in_features != pooled_features:
            raise ValueError(
                f"pool_type={pool_type!r} gives {pooled_features} pooled features but the head MLP "
                f"expects {self.fc1.in_features}; pass reset_other=True to drop the MLP"
            )
        self.fc2 = (
            nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        )
        self.train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if not self.pooled:
            x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C): the head runs per position
        x = self.drop(self.norm(self.act(self.fc1(x))))
        if not pre_logits:
            x = self.fc2(x)
        if not self.pooled:
            x = x.permute(0, 3, 1, 2)
        return x


def _make_pool(pool_type: str) -> tuple[SelectAdaptivePool2d, bool]:
    valid = ("", "avg", "max", "avgmax", "catavgmax")
    if pool_type not in valid:
        raise ValueError(f"global_pool must be one of {valid}, got {pool_type!r}")
    return SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type)), bool(pool_type)


@register_notrace_function  # Python control flow on shapes: one opaque call for fx tracing
def check_input_size(x: torch.Tensor) -> torch.Tensor:
    """Return x if H, W >= 32, else raise ValueError (TorchScript-friendly string building)."""
    if x.shape[2] < 32 or x.shape[3] < 32:
        raise ValueError(
            "InceptionNeXt downsamples by 32; expected H, W >= 32, got " + str(list(x.shape[2:]))
        )
    return x


class InceptionNeXt(nn.Module):
    """InceptionNeXt: stem (4x4/s4 conv + BN), four MetaNeXt stages, MLP classifier head."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: tuple[int, ...] = (3, 3, 9, 3),
        dims: tuple[int, ...] = (96, 192, 384, 768),
        mlp_ratios: float | tuple[float, ...] = (4, 4, 4, 3),
        square_kernel_size: int = 3,
        band_kernel_size: int = 11,
        branch_ratio: float = 0.125,
        head_mlp_ratio: float = 3.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        ls_init_value: float | None = 1e-6,
        channels_last: bool = True,
        deploy: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        num_stages = len(depths)
        if not isinstance(mlp_ratios, (list, tuple)):
            mlp_ratios = (mlp_ratios,) * num_stages
        if len(dims) != num_stages or len(mlp_ratios) != num_stages:
            raise ValueError(
                f"depths, dims and mlp_ratios need one entry per stage, got {len(depths)}, "
                f"{len(dims)}, {len(mlp_ratios)}"
            )
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.channels_last = channels_last

        self.stem = ConvBnStem(in_chans, dims[0], deploy=deploy, **dd)
        # per-block linear schedule 0 -> drop_path_rate, split by stage (as the official code)
        dp_rates = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        self.stages = nn.Sequential()
        self.feature_info = []
        prev_chs = dims[0]
        for i in range(num_stages):
            self.stages.append(
                MetaNeXtStage(
                    prev_chs,
                    dims[i],
                    depths[i],
                    downsample=i > 0,
                    drop_path_rates=dp_rates[i],
                    mlp_ratio=mlp_ratios[i],
                    square_kernel_size=square_kernel_size,
                    band_kernel_size=band_kernel_size,
                    branch_ratio=branch_ratio,
                    ls_init_value=ls_init_value,
                    deploy=deploy,
                    **dd,
                )
            )
            prev_chs = dims[i]
            self.feature_info.append(
                dict(num_chs=prev_chs, reduction=4 * 2**i, module=f"stages.{i}")
            )
        self.num_features = prev_chs
        self.head = MlpClassifierHead(
            self.num_features, num_classes, global_pool, head_mlp_ratio, drop_rate, **dd
        )
        self.head_hidden_size = self.head.num_features
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None)],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # gamma, norms and biases are 1-D and already exempt in timm's optimizer factory
        return set()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc2

    def reset_classifier(
        self, num_classes: int, global_pool: str | None = None, reset_other: bool = False
    ) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, reset_other=reset_other)
        if global_pool is not None:
            self.global_pool = global_pool
        self.head_hidden_size = self.head.num_features

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            check_in_chans(self, x)
        x = check_input_size(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.stem(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (strides 4/8/16/32) for `indices` (last n if int, all if None).

        `norm` is accepted for API compatibility; InceptionNeXt has no final norm.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self._stem(x)
        if torch.jit.is_scripting() or not stop_early:  # TorchScript cannot slice the stages
            stages = self.stages
        else:
            stages = self.stages[: max_index + 1]
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages (and head) not needed to produce the `indices` intermediates."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if prune_end:
            self.num_features = self.feature_info[max_index]["num_chs"]
            self.head.in_features = self.num_features
        if prune_head or prune_end:
            self.reset_classifier(0, "avg", reset_other=True)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self._stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict, model: InceptionNeXt) -> dict[str, torch.Tensor]:
    """Official (== timm `inception_next_*`) checkpoint -> this model's state_dict.

    The key layouts are identical; this unwraps `model` / `state_dict` containers and a DDP
    `module.` prefix, and fills a missing `head.*` (backbone-only checkpoints) from the model's
    own initialisation with a warning. Any other mismatch raises CheckpointError, naming the
    first keys.
    """
    for wrapper in ("model", "state_dict"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    if missing and all(k.startswith("head.") for k in missing):
        warnings.warn(
            f"checkpoint has no {first_few(missing, 3)}; keeping the model's initial head weights",
            stacklevel=2,
        )
        state_dict = {**state_dict, **{k: expected[k] for k in missing}}
    check_state_dict_fits(state_dict, model)
    return state_dict


# Variant -> constructor arguments (the official model sizes).
_BASE = dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))
VARIANT_ARGS: dict[str, dict] = {
    "inceptionnext_atto": dict(
        depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), band_kernel_size=9, branch_ratio=0.25
    ),
    "inceptionnext_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "inceptionnext_small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "inceptionnext_base": _BASE,
    "inceptionnext_base_384": _BASE,  # the same network fine-tuned at 384x384
}


def _create_inceptionnext(variant: str, pretrained: bool = False, **kwargs) -> InceptionNeXt:
    return build_model(
        InceptionNeXt,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **dict(VARIANT_ARGS[variant], **kwargs),
    )


_RELEASES = "https://github.com/sail-sg/inceptionnext/releases/download/model/"


def _cfg(weights: str, **kwargs) -> dict:
    # No `url`: weights are never fetched implicitly (and timm's suite would try to). Download
    # the official file and pass it with `pretrained_cfg_overlay=dict(file=PATH)`.
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.0",
        "classifier": "head.fc2",
        "license": "apache-2.0",
        "origin_url": "https://github.com/sail-sg/inceptionnext",
        "paper_ids": "arXiv:2303.16900",
        "notes": (f"official weights: {_RELEASES}{weights}",),
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "inceptionnext_atto.sail_in1k": _cfg("inceptionnext_atto.pth"),
        "inceptionnext_tiny.sail_in1k": _cfg("inceptionnext_tiny.pth"),
        "inceptionnext_small.sail_in1k": _cfg("inceptionnext_small.pth"),
        "inceptionnext_base.sail_in1k": _cfg("inceptionnext_base.pth"),
        "inceptionnext_base_384.sail_in1k": _cfg(
            "inceptionnext_base_384.pth", input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0
        ),
    }
)


@register_model
def inceptionnext_atto(pretrained: bool = False, **kwargs) -> InceptionNeXt:
    return _create_inceptionnext("inceptionnext_atto", pretrained, **kwargs)


@register_model
def inceptionnext_tiny(pretrained: bool = False, **kwargs) -> InceptionNeXt:
    return _create_inceptionnext("inceptionnext_tiny", pretrained, **kwargs)


@register_model
def inceptionnext_small(pretrained: bool = False, **kwargs) -> InceptionNeXt:
    return _create_inceptionnext("inceptionnext_small", pretrained, **kwargs)


@register_model
def inceptionnext_base(pretrained: bool = False, **kwargs) -> InceptionNeXt:
    return _create_inceptionnext("inceptionnext_base", pretrained, **kwargs)


@register_model
def inceptionnext_base_384(pretrained: bool = False, **kwargs) -> InceptionNeXt:
    return _create_inceptionnext("inceptionnext_base_384", pretrained, **kwargs)
