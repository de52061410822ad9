"""UniRepLKNet: large-kernel ConvNets with dilated structural re-parameterisation.

Paper: `UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud,
Time-Series and Image Recognition` - https://arxiv.org/abs/2311.15599 (CVPR 2024); extended in
https://arxiv.org/abs/2410.08049.

Official code and weights: https://github.com/AILab-CVC/UniRepLKNet (`unireplknet.py`,
Apache-2.0). This file is written for the zoo in timm's style; the architecture, the per-kernel
dilated-branch table, initialisation and the re-parameterisation arithmetic follow the official
code (the code, not the paper, where they differ: official issue #4).

Differences from the official code:
- timm layout: `stem`, `stages.i.downsample`, `stages.i.blocks.j`, `head.{norm,fc}`; SE layers
  are timm's `SEModule` (`fc1`/`fc2`), GRN has 1-D `weight`/`bias`, the FFN linears are direct
  children, and the dilated branches are `dwconv.branches.n.{conv,bn}`. `checkpoint_filter_fn`
  maps official checkpoints (training or deploy form) onto these names.
- Every depthwise conv (large kernel, dilated branches, 3x3) is `ops.DepthwiseConv2d`, so the
  backend is chosen by `ops`; the official iGEMM switch (`attempt_use_lk_impl`) is gone.
- `use_sync_bn` is gone (`nn.SyncBatchNorm.convert_sync_batchnorm` does the same); `with_cp` is
  `set_grad_checkpointing()` (non-reentrant); the mmseg/mmdet "features" mode with its extra
  `norm{i}` layers is `features_only=True` / `forward_intermediates` here (no extra norms).
- Unknown constructor kwargs raise `TypeError` (the official builders swallow them).
- The official `reparameterize()` of the seg/det copies rebuilds the 3x3 conv with positional
  arguments (stride <- padding); here every rebuilt conv is built by keyword.
"""

import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    DropPath,
    LayerNorm2d,
    NormMlpClassifierHead,
    SEModule,
    calculate_drop_path_rates,
    get_device_dtype,
    trunc_normal_,
)
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices  # not exported by timm.models
from torch import Tensor

from ops import DepthwiseConv2d

from ..checkpoint import build_model, check_state_dict_fits
from ..errors import CheckpointError
from ..layers import GlobalResponseNorm, check_in_chans, fuse_bn

__all__ = ["UniRepLKNet", "UniRepLKNetBlock", "DilatedReparamBlock"]

# Large kernel K -> (branch kernel sizes, dilations), exactly the official table. A branch of
# size k and dilation r covers r * (k - 1) + 1 pixels, never more than K.
DILATED_BRANCHES: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7)),
    15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    7: ((5, 3, 3), (1, 2, 3)),
    5: ((3, 3), (1, 2)),
}
# Block kernel sizes: 0 is a conv-less block, 3 and 5 a plain depthwise conv (no branches, as in
# the official block), 7 and up a Dilated Reparam Block.
PLAIN_KERNEL_SIZES = (0, 3, 5)
SUPPORTED_KERNEL_SIZES = PLAIN_KERNEL_SIZES + tuple(k for k in sorted(DILATED_BRANCHES) if k >= 7)

# Default per-block kernel sizes, looked up by depths as the official constructor does.
DEFAULT_KERNEL_SIZES: dict[tuple[int, ...], tuple[tuple[int, ...], ...]] = {
    (2, 2, 6, 2): ((3,) * 2, (13,) * 2, (13,) * 6, (13,) * 2),  # A, F, P
    (2, 2, 8, 2): ((3,) * 2, (13,) * 2, (13,) * 8, (13,) * 2),  # N
    (3, 3, 18, 3): ((3,) * 3, (13,) * 3, (13, 3) * 9, (13,) * 3),  # T
    (3, 3, 27, 3): ((3,) * 3, (13,) * 3, (13, 3, 3) * 9, (13,) * 3),  # S, B, L, XL
}


# Variant -> constructor arguments (the official model sizes); kernel sizes follow from depths.
VARIANT_ARGS: dict[str, dict[str, tuple[int, ...]]] = {
    "unireplknet_a": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),
    "unireplknet_f": dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),
    "unireplknet_p": dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)),
    "unireplknet_n": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),
    "unireplknet_t": dict(depths=(3, 3, 18, 3), dims=(80, 160, 320, 640)),
    "unireplknet_s": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "unireplknet_b": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    "unireplknet_l": dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
    "unireplknet_xl": dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048)),
}


def _dilated_to_dense(kernel: Tensor, dilation: int) -> Tensor:
    """(C, 1, k, k) kernel with dilation r -> the equivalent undilated (C, 1, r(k-1)+1, ...)."""
    k = kernel.shape[-1]
    size = dilation * (k - 1) + 1
    dense = kernel.new_zeros(kernel.shape[0], kernel.shape[1], size, size)
    dense[:, :, ::dilation, ::dilation] = kernel
    return dense


class DilatedReparamBlock(nn.Module):
    """Depthwise K x K conv + BN in parallel with dilated depthwise conv + BN branches.

    All branches are linear in the input, so in eval mode their sum is one K x K depthwise conv
    with bias: `reparameterize()` merges them (the deploy form, built directly by deploy=True).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        deploy: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if kernel_size not in DILATED_BRANCHES:
            raise ValueError(
                f"DilatedReparamBlock has no branch table for kernel_size={kernel_size}; "
                f"supported sizes are {sorted(DILATED_BRANCHES)}"
            )
        self.kernel_size = kernel_size
        self.lk_origin = DepthwiseConv2d(
            channels, kernel_size, padding=kernel_size // 2, bias=deploy, **dd
        )
        self.origin_bn: nn.Module = nn.Identity() if deploy else nn.BatchNorm2d(channels, **dd)
        self.branches = nn.ModuleList()
        if not deploy:
            for k, r in zip(*DILATED_BRANCHES[kernel_size], strict=True):
                conv = DepthwiseConv2d(
                    channels, k, padding=(r * (k - 1) + 1) // 2, dilation=r, bias=False, **dd
                )
                bn = nn.BatchNorm2d(channels, **dd)
                self.branches.append(nn.Sequential(OrderedDict(conv=conv, bn=bn)))

    def forward(self, x: Tensor) -> Tensor:
        out = self.origin_bn(self.lk_origin(x))
        for branch in self.branches:
            out = out + branch(x)
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge every branch and BN into `lk_origin` (a K x K depthwise conv with bias)."""
        if not isinstance(self.origin_bn, nn.BatchNorm2d):
            return
        weight, bias = fuse_bn(self.lk_origin.weight, self.lk_origin.bias, self.origin_bn)
        for branch in self.branches:
            branch_weight, branch_bias = fuse_bn(branch.conv.weight, None, branch.bn)
            dense = _dilated_to_dense(branch_weight, branch.conv.dilation[0])
            pad = (self.kernel_size - dense.shape[-1]) // 2  # centre it in the K x K kernel
            weight = weight + F.pad(dense, [pad] * 4)
            bias = bias + branch_bias
        self.lk_origin = _depthwise_with(weight, bias, padding=self.kernel_size // 2)
        self.origin_bn = nn.Identity()
        self.branches = nn.ModuleList()


def _depthwise_with(weight: Tensor, bias: Tensor, padding: int | tuple[int, ...]) -> nn.Module:
    """A biased `DepthwiseConv2d` holding the given (C, 1, k, k) weight and (C,) bias."""
    conv = DepthwiseConv2d(
        weight.shape[0],
        weight.shape[-1],
        padding=padding,
        bias=True,
        device=weight.device,
        dtype=weight.dtype,
    )
    conv.weight.copy_(weight)
    conv.bias.copy_(bias)
    return conv


class UniRepLKNetBlock(nn.Module):
    """x + drop_path(gamma * BN(pwconv2(GRN(GELU(pwconv1(SE(BN(dwconv(x)))))))))

    The FFN runs channels-last with Linear layers; every norm inside the block is BatchNorm.
    Deploy form: the dwconv carries the block BN, and pwconv2 (with bias) carries the GRN bias,
    its BN and the layer scale.
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layer_scale_init_value: float | None = 1e-6,
        deploy: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if kernel_size == 0:
            self.dwconv: nn.Module = nn.Identity()
        elif kernel_size in PLAIN_KERNEL_SIZES:
            self.dwconv = DepthwiseConv2d(
                dim, kernel_size, padding=kernel_size // 2, bias=deploy, **dd
            )
        else:
            self.dwconv = DilatedReparamBlock(dim, kernel_size, deploy=deploy, **dd)
        has_norm = not deploy and kernel_size != 0
        self.norm: nn.Module = nn.BatchNorm2d(dim, **dd) if has_norm else nn.Identity()
        self.se = SEModule(dim, rd_channels=dim // 4, act_layer=nn.ReLU, **dd)
        hidden = int(mlp_ratio * dim)
        self.pwconv1 = nn.Linear(dim, hidden, **dd)
        self.act = nn.GELU()
        self.grn = GlobalResponseNorm(hidden, bias=not deploy, channels_last=True, **dd)
        self.pwconv2 = nn.Linear(hidden, dim, bias=deploy, **dd)
        self.pwconv2_bn: nn.Module = nn.Identity() if deploy else nn.BatchNorm2d(dim, **dd)
        use_gamma = not deploy and layer_scale_init_value is not None and layer_scale_init_value > 0
        self.gamma = (
            nn.Parameter(torch.full((dim,), float(layer_scale_init_value), **dd))
            if use_gamma
            else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.se(self.norm(self.dwconv(x)))
        x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = self.grn(self.act(self.pwconv1(x)))
        x = self.pwconv2(x).permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        x = self.pwconv2_bn(x)
        if self.gamma is not None:
            x = self.gamma.view(1, -1, 1, 1) * x
        return shortcut + self.drop_path(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the block BN into the dwconv, and GRN bias + BN + layer scale into pwconv2.

        Merges the dwconv's own branches first if they are not merged yet, so that any walk
        order works: zoo.reparameterize (children first) and timm's reparameterize_model
        (parents first) give the same deploy form.
        """
        if isinstance(self.norm, nn.BatchNorm2d):
            if isinstance(self.dwconv, DilatedReparamBlock):
                self.dwconv.reparameterize()  # a no-op once merged
                conv = self.dwconv.lk_origin
                weight, bias = fuse_bn(conv.weight, conv.bias, self.norm)
                self.dwconv.lk_origin = _depthwise_with(weight, bias, padding=conv.padding)
            else:
                conv = self.dwconv
                weight, bias = fuse_bn(conv.weight, conv.bias, self.norm)
                self.dwconv = _depthwise_with(weight, bias, padding=conv.padding)
            self.norm = nn.Identity()
        if isinstance(self.pwconv2_bn, nn.BatchNorm2d):
            linear = self.pwconv2
            # GRN's bias is added before pwconv2: W (x + b_grn) = W x + W b_grn
            bias = linear.weight @ self.grn.bias if self.grn.bias is not None else None
            if linear.bias is not None:
                bias = linear.bias if bias is None else bias + linear.bias
            weight, bias = fuse_bn(linear.weight, bias, self.pwconv2_bn)
            if self.gamma is not None:
                weight = weight * self.gamma.view(-1, 1)
                bias = bias * self.gamma
            self.pwconv2 = nn.Linear(
                linear.in_features,
                linear.out_features,
                bias=True,
                device=weight.device,
                dtype=weight.dtype,
            )
            self.pwconv2.weight.copy_(weight)
            self.pwconv2.bias.copy_(bias)
            self.pwconv2_bn = nn.Identity()
            self.grn.bias = None
            self.gamma = None


class UniRepLKNetStage(nn.Module):
    """Optional downsample (3x3 stride-2 conv + channels-first LayerNorm), then the blocks."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_sizes: Sequence[int],
        downsample: bool = True,
        drop_path_rates: Sequence[float] = (),
        mlp_ratio: float = 4.0,
        layer_scale_init_value: float | None = 1e-6,
        deploy: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.grad_checkpointing = False
        if downsample:
            self.downsample: nn.Module = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=2, padding=1, **dd),
                LayerNorm2d(out_chs, eps=1e-6, **dd),
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(
            *[
                UniRepLKNetBlock(
                    out_chs,
                    kernel_size=k,
                    mlp_ratio=mlp_ratio,
                    drop_path=dpr,
                    layer_scale_init_value=layer_scale_init_value,
                    deploy=deploy,
                    **dd,
                )
                for k, dpr in zip(kernel_sizes, drop_path_rates, strict=True)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)  # non-reentrant by timm's default
        else:
            x = self.blocks(x)
        return x


def _check_kernel_sizes(
    depths: tuple[int, ...], kernel_sizes: Sequence[Sequence[int]] | None
) -> tuple[tuple[int, ...], ...]:
    if kernel_sizes is None:
        if depths not in DEFAULT_KERNEL_SIZES:
            raise ValueError(
                f"no default kernel_sizes for depths={depths} (defaults exist for "
                f"{sorted(DEFAULT_KERNEL_SIZES)}); pass kernel_sizes, one per block, e.g. "
                "((3, 3), (13, 13), (13,) * 6, (13, 13))"
            )
        return DEFAULT_KERNEL_SIZES[depths]
    kernel_sizes = tuple(tuple(int(k) for k in stage) for stage in kernel_sizes)
    if tuple(len(stage) for stage in kernel_sizes) != depths:
        raise ValueError(
            f"kernel_sizes has {tuple(len(s) for s in kernel_sizes)} entries per stage, "
            f"expected one per block: depths={depths}"
        )
    for stage in kernel_sizes:
        for k in stage:
            if k not in SUPPORTED_KERNEL_SIZES:
                raise ValueError(
                    f"unsupported kernel size {k} in kernel_sizes; supported sizes are "
                    f"{SUPPORTED_KERNEL_SIZES} (0: no conv, 3/5: plain depthwise, "
                    f"{sorted(k for k in DILATED_BRANCHES if k >= 7)}: dilated reparam)"
                )
    return kernel_sizes


class UniRepLKNet(nn.Module):
    """UniRepLKNet image classifier (four stages, total stride 32).

    Args:
        in_chans: input image channels.
        num_classes: classifier outputs (0 for no classifier).
        global_pool: head pooling type ('avg'; '' for none).
        depths: blocks per stage.
        dims: channels per stage.
        kernel_sizes: per-block depthwise kernel sizes (None: the official default for depths).
        mlp_ratio: FFN expansion.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        layer_scale_init_value: initial layer scale (None or <= 0: no layer scale).
        head_init_scale: factor applied to the initial classifier weight and bias.
        deploy: build the re-parameterised inference form directly.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (3, 3, 27, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        kernel_sizes: Sequence[Sequence[int]] | None = None,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float | None = 1e-6,
        head_init_scale: float = 1.0,
        deploy: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        depths, dims = tuple(int(d) for d in depths), tuple(int(d) for d in dims)
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"depths and dims need 4 stages each, got {depths} and {dims}")
        kernel_sizes = _check_kernel_sizes(depths, kernel_sizes)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate

        # stride 4: two 3x3 stride-2 convs, channels-first LayerNorm after each (GELU between)
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0] // 2, kernel_size=3, stride=2, padding=1, **dd),
            LayerNorm2d(dims[0] // 2, eps=1e-6, **dd),
            nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], kernel_size=3, stride=2, padding=1, **dd),
            LayerNorm2d(dims[0], eps=1e-6, **dd),
        )
        dp_rates = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stages = []
        self.feature_info = []
        for i in range(4):
            stages.append(
                UniRepLKNetStage(
                    dims[i - 1] if i > 0 else dims[0],
                    dims[i],
                    kernel_sizes=kernel_sizes[i],
                    downsample=i > 0,
                    drop_path_rates=dp_rates[i],
                    mlp_ratio=mlp_ratio,
                    layer_scale_init_value=layer_scale_init_value,
                    deploy=deploy,
                    **dd,
                )
            )
            self.feature_info.append(
                dict(num_chs=dims[i], reduction=4 * 2**i, module=f"stages.{i}")
            )
        self.stages = nn.Sequential(*stages)
        self.num_features = dims[-1]
        # mean pool -> LayerNorm -> Linear, the official head order
        self.head = NormMlpClassifierHead(
            self.num_features,
            num_classes,
            pool_type=global_pool,
            drop_rate=drop_rate,
            norm_layer=LayerNorm2d,
            **dd,
        )
        self.head_hidden_size = self.head.num_features

        self.apply(self._init_weights)
        if isinstance(self.head.fc, nn.Linear):
            self.head.fc.weight.data.mul_(head_init_scale)
            self.head.fc.bias.data.mul_(head_init_scale)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # the official init: every conv (depthwise, dilated, SE, stem) and linear
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, str | list]:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            ],
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # layer scale; like the official recipe, 1-D params and biases are excluded by timm anyway
        return {"stages.*.blocks.*.gamma"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(
        self, num_classes: int, global_pool: str | None = None, reset_other: bool = False
    ) -> None:
        self.num_classes = num_classes
        self.head.reset(
            num_classes,
            global_pool,
            reset_other=reset_other,
            in_features=self.num_features,
            **get_device_dtype(self),
        )
        self.head_hidden_size = self.head.num_features

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs (strides 4, 8, 16, 32) and, unless intermediates_only, the final map.

        indices: last n stages if int, those listed if a sequence, all if None. `norm` is
        accepted for the timm contract; no norm follows the last stage in this model.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        x = self._stem(x)
        if torch.jit.is_scripting() or not stop_early:
            stages = self.stages
        else:
            stages = self.stages[: max_index + 1]
        for feat_idx, stage in enumerate(stages):
            x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages (and head) not needed for the given intermediates."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "", reset_other=True)
        return take_indices

    def _stem(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            check_in_chans(self, x)
        return self.stem(x)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self._stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# Official key -> ours. Block-local renames apply after the `stages.i.j.` -> `stages.i.blocks.j.`
# prefix rename; `act.1.gamma` is the GRN weight (official shape (1, 1, 1, D), ours (D,)).
_STEM_AND_DOWNSAMPLE = [
    (re.compile(r"^downsample_layers\.0\."), "stem."),
    (re.compile(r"^downsample_layers\.(\d+)\."), r"stages.\1.downsample."),
    (re.compile(r"^stages\.(\d+)\.(\d+)\."), r"stages.\1.blocks.\2."),
    (re.compile(r"^norm\."), "head.norm."),
    (re.compile(r"^head\."), "head.fc."),
]
_BLOCK_RENAMES = [
    (re.compile(r"\.se\.down\."), ".se.fc1."),
    (re.compile(r"\.se\.up\."), ".se.fc2."),
    (re.compile(r"\.pwconv1\.1\."), ".pwconv1."),
    (re.compile(r"\.act\.1\.gamma$"), ".grn.weight"),
    (re.compile(r"\.act\.1\.beta$"), ".grn.bias"),
    (re.compile(r"\.pwconv2\.0\."), ".pwconv2."),
    (re.compile(r"\.pwconv2\.2\."), ".pwconv2_bn."),
]
_DILATED_KEY = re.compile(r"^(.*\.dwconv)\.dil_(conv|bn)_k(\d+)_(\d+)\.(.+)$")


def _official_to_timm_key(key: str, state_dict: dict[str, Tensor]) -> str:
    dilated = _DILATED_KEY.match(key)
    if dilated is not None:
        # branch index = position of (k, r) in the table of this block's large kernel K
        prefix, kind, k, r, rest = dilated.groups()
        big = state_dict[f"{prefix}.lk_origin.weight"].shape[-1]
        pairs = list(zip(*DILATED_BRANCHES[big], strict=True))
        index = pairs.index((int(k), int(r)))
        key = f"{prefix}.branches.{index}.{kind}.{rest}"
    for pattern, repl in _STEM_AND_DOWNSAMPLE:
        key, n = pattern.subn(repl, key)
        if n:
            break
    for pattern, repl in _BLOCK_RENAMES:
        key = pattern.sub(repl, key)
    return key


def _form(keys: Sequence[str]) -> str | None:
    """'training' or 'deploy' from the state-dict keys (our layout); None if it cannot tell."""
    if any(k.endswith(".pwconv2_bn.running_var") for k in keys):
        return "training"
    if any(k.endswith(".pwconv2.bias") for k in keys):
        return "deploy"
    return None


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: UniRepLKNet) -> dict[str, Tensor]:
    """Official UniRepLKNet checkpoint (training or deploy form) -> this model's keys.

    Accepts a raw state_dict or one wrapped under 'model' / 'state_dict'; a checkpoint already in
    this layout passes through. The checkpoint's form must match the model's: a training-form
    checkpoint loads into the training form (then `zoo.reparameterize`), a deploy-form one into
    a model built with deploy=True.
    """
    for wrapper in ("model", "state_dict"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
            break
    if "downsample_layers.0.0.weight" in state_dict:
        state_dict = {_official_to_timm_key(k, state_dict): v for k, v in state_dict.items()}

    model_state = model.state_dict()
    ckpt_form, model_form = _form(list(state_dict)), _form(list(model_state))
    if ckpt_form is not None and model_form is not None and ckpt_form != model_form:
        hint = (
            "build the model with deploy=False, load, then call zoo.reparameterize(model)"
            if ckpt_form == "training"
            else "build the model with deploy=True"
        )
        raise CheckpointError(
            f"the checkpoint is in the {ckpt_form} form (e.g. "
            f"{next(k for k in state_dict if _form([k]) == ckpt_form)!r}) but the model is in "
            f"the {model_form} form; {hint}"
        )
    out = {}
    for k, v in state_dict.items():
        target = model_state.get(k)
        if ".grn." in k and target is not None and v.numel() == target.numel():
            v = v.reshape(target.shape)  # official GRN (1, 1, 1, D) -> (D,)
        out[k] = v
    check_state_dict_fits(out, model)
    return out


def _create_unireplknet(variant: str, pretrained: bool = False, **kwargs) -> UniRepLKNet:
    return build_model(
        UniRepLKNet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **dict(VARIANT_ARGS[variant], **kwargs),
    )


def _cfg(file_name: str = "", **kwargs) -> dict:
    # Official weights live at huggingface.co/DingXiaoH/UniRepLKNet. Only the file name is kept
    # (no hf_hub_id), so nothing downloads; load a local copy with
    # create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH)).
    return {
        "hf_hub_filename": file_name or None,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.0",
        "classifier": "head.fc",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2311.15599",
        "paper_name": "UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, "
        "Video, Point Cloud, Time-Series and Image Recognition",
        "origin_url": "https://github.com/AILab-CVC/UniRepLKNet",
        **kwargs,
    }


# 384 fine-tunes are evaluated by resizing straight to 384x384 (no crop), as the official eval.
_384 = dict(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0, crop_mode="squash")
_IN22K = dict(num_classes=21841)

default_cfgs = generate_default_cfgs(
    {
        "unireplknet_a.in1k": _cfg("unireplknet_a_in1k_224_acc77.03.pth"),
        "unireplknet_f.in1k": _cfg("unireplknet_f_in1k_224_acc78.58.pth"),
        "unireplknet_p.in1k": _cfg("unireplknet_p_in1k_224_acc80.23.pth"),
        "unireplknet_n.in1k": _cfg("unireplknet_n_in1k_224_acc81.64.pth"),
        "unireplknet_t.in1k": _cfg("unireplknet_t_in1k_224_acc83.21.pth"),
        "unireplknet_s.in1k": _cfg("unireplknet_s_in1k_224_acc83.91.pth"),
        "unireplknet_s.in22k_ft_in1k_384": _cfg(
            "unireplknet_s_in22k_to_in1k_384_acc86.44.pth", **_384
        ),
        "unireplknet_s.in22k": _cfg("unireplknet_s_in22k_pretrain.pth", **_IN22K),
        "unireplknet_b.in22k_ft_in1k_384": _cfg(
            "unireplknet_b_in22k_to_in1k_384_acc87.40.pth", **_384
        ),
        "unireplknet_b.in22k": _cfg("unireplknet_b_in22k_pretrain.pth", **_IN22K),
        "unireplknet_l.in22k_ft_in1k_384": _cfg(
            "unireplknet_l_in22k_to_in1k_384_acc87.88.pth", **_384
        ),
        "unireplknet_l.in22k": _cfg(
            "unireplknet_l_in22k_pretrain.pth",
            input_size=(3, 192, 192),
            pool_size=(6, 6),
            **_IN22K,
        ),
        "unireplknet_xl.in22k_ft_in1k_384": _cfg(
            "unireplknet_xl_in22k_to_in1k_384_acc87.96.pth", **_384
        ),
        "unireplknet_xl.in22k": _cfg(
            "unireplknet_xl_in22k_pretrain.pth",
            input_size=(3, 192, 192),
            pool_size=(6, 6),
            **_IN22K,
        ),
    }
)


@register_model
def unireplknet_a(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    return _create_unireplknet("unireplknet_a", pretrained, **kwargs)


@register_model
def unireplknet_f(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    return _create_unireplknet("unireplknet_f", pretrained, **kwargs)


@register_model
def unireplknet_p(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    return _create_unireplknet("unireplknet_p", pretrained, **kwargs)


@register_model
def unireplknet_n(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    return _create_unireplknet("unireplknet_n", pretrained, **kwargs)


@register_model
def unireplknet_t(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    return _create_unireplknet("unireplknet_t", pretrained, **kwargs)


@register_model
def unireplknet_s(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    return _create_unireplknet("unireplknet_s", pretrained, **kwargs)


@register_model
def unireplknet_b(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    return _create_unireplknet("unireplknet_b", pretrained, **kwargs)


@register_model
def unireplknet_l(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    return _create_unireplknet("unireplknet_l", pretrained, **kwargs)


@register_model
def unireplknet_xl(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    return _create_unireplknet("unireplknet_xl", pretrained, **kwargs)
