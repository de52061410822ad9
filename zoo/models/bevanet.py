"""BEVANet: Bilateral Efficient Visual Attention Network for real-time semantic segmentation.

Paper: "BEVANet: Bilateral Efficient Visual Attention Network for Real-Time Semantic
Segmentation", ICIP 2025 - https://arxiv.org/abs/2508.07300
Official code and weights (MIT): https://github.com/maomao0819/BEVANet, a modified PIDNet code
base (https://github.com/XuJiacong/PIDNet).

Layout (c = `planes`; resolutions relative to the input):
    stem (two stride-2 3x3 convs) -> layer1 (c, 1/4) -> layer2 (2c, 1/8), then two branches:
    - semantic: layer3 BasicBlocks (4c, 1/16) -> BasicBlock + 2 EVA blocks (8c, 1/32)
      -> BasicBlock + 2 EVA blocks (16c, 1/64) -> DLKPPM (4c);
    - detail (2c, 1/8): BasicBlocks -> PagFM fusion of the semantic map -> BasicBlock + EVA block
      -> PagFM fusion -> Bottleneck (4c, "xds") and a second Bottleneck (4c, "xdb", the boundary
      guidance);
    BGAF fuses xds with the upsampled DLKPPM output under the sigmoid of xdb, then the seg head.
    Training-only heads (`aux_heads=True`): an auxiliary seg head on the detail map right after
    the first fusion and a boundary (edge logit) head on the detail map after the second fusion.
    Every head predicts at 1/8 of the input.

An EVA block is VAN-style: BN -> 1x1 -> GELU -> SDLSKA -> 1x1 (+ inner shortcut), and
BN -> 1x1 -> 3x3 depthwise -> GELU -> 1x1, both branches layer-scaled (init 1e-2); a channel
LayerNorm follows every EVA block. SDLSKA: a dense 5x5 (3x3 for k <= 11) depthwise conv, then two
PARALLEL dilated strip depthwise convs on its output, fused by CKS (sigmoid channel weights after
ReLU times sigmoid spatial weights from a 7x7 conv over the channel mean/max), a 1x1 conv and
`u * attn`. DLKPPM's large-kernel branch uses the cascaded LSKA (k=35) instead.

What differs from the official code:
- One topology, the one every released config selects (SDLSKA, DLKPPM, BGAF, semantic kernel
  sizes [0, 35, 35], detail [0, 23]); the ablation alternatives of the official repo (LSKA/SLAK
  as the main attention, DAPPM/PAPPM/PLKPPM, Bag/Light_Bag, EVA blocks at stage 3) are not built.
- Depthwise and strip convs are `ops.DepthwiseConv2d`, 1x1 convs plain `nn.Conv2d`: the official
  `DWConv`/`PWConv` wrapper level (`.dwconv.` / `.pwconv.` in the keys) is gone and
  `checkpoint_filter_fn` removes it; every other key keeps its official name.
- The heads are switched by `aux_heads` (official: `seg_augment`): `forward_heads()` returns a
  dict, `forward()` the seg logits resized to the input (bilinear, align_corners=True, as the
  official loss and inference do). The official `forward` returns a list or a tensor.
- Wrong inputs (channels other than in_chans, sides not multiples of 8, batch 1 in train
  mode) raise a ValueError up front instead of failing deep inside.
- timm's feature API on the semantic path (`feature_info`: layer1, layer2, layer3_semantic,
  norm4_semantic_2, norm5_semantic_2_seg at strides 4..64; the ReLU the official forward
  applies after layer1-3 is the last module of those layers, so each named module outputs
  its map), `forward_intermediates`, `prune_intermediate_layers` (drops the detail branch and
  heads), `features_only=True` (timm's getter wrapper).
- The official ImageNet checkpoints initialise the segmentation model through
  `load_imagenet_backbone` (the official partial load by name and shape, with a report of what
  was and was not loaded) rather than through `pretrained=True`.

With the same weights, `forward_heads` reproduces the official outputs bit for bit on CPU
(float32, eval and train mode).
"""

import math
import re
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerNorm2d, register_notrace_function
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices  # not exported by timm.models
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ops import DepthwiseConv2d

from ..checkpoint import build_model, check_state_dict_fits, load_checkpoint_file
from ..layers import check_in_chans

__all__ = ["BEVANet", "checkpoint_filter_fn", "load_imagenet_backbone"]

# kernel size -> (small kernel k0, strip length k1, strip dilation d); receptive field
# k0 + (k1 - 1) * d. Shared by SDLSKA (dense k0 x k0) and LSKA (k0 as a 1-D pair).
_LARGE_KERNEL_DECOMPOSITION = {
    7: (3, 3, 2),
    11: (3, 5, 2),
    23: (5, 7, 3),
    35: (5, 11, 3),
    41: (5, 13, 3),
    53: (5, 17, 3),
}


def _decompose(kernel_size: int) -> tuple[int, int, int]:
    if kernel_size not in _LARGE_KERNEL_DECOMPOSITION:
        raise ValueError(
            f"kernel_size={kernel_size} is not supported; expected one of "
            f"{sorted(_LARGE_KERNEL_DECOMPOSITION)}"
        )
    return _LARGE_KERNEL_DECOMPOSITION[kernel_size]


def _resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    # every resize inside the network uses align_corners=False (official `algc = False`)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------------------
# PIDNet building blocks


class BasicBlock(nn.Module):
    """ResNet basic block; `act_out=False` drops the output ReLU (PIDNet's `no_relu`)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        act_out: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(out_chs, **dd)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(out_chs, **dd)
        self.downsample = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride, bias=False, **dd),
                nn.BatchNorm2d(out_chs, **dd),
            )
        self.act_out = act_out

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x)) + shortcut
        return F.relu(x) if self.act_out else x


class Bottleneck(nn.Module):
    """PIDNet bottleneck (expansion 2, no output ReLU): in_chs -> 2 * planes."""

    def __init__(
        self,
        in_chs: int,
        planes: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        out_chs = planes * 2
        self.conv1 = nn.Conv2d(in_chs, planes, 1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(planes, **dd)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(planes, **dd)
        self.conv3 = nn.Conv2d(planes, out_chs, 1, bias=False, **dd)
        self.bn3 = nn.BatchNorm2d(out_chs, **dd)
        self.downsample = None
        if in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, bias=False, **dd), nn.BatchNorm2d(out_chs, **dd)
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x)) + shortcut


def _basic_layer(
    in_chs: int,
    out_chs: int,
    depth: int,
    stride: int = 1,
    relu_after: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Sequential:
    # PIDNet's `_make_layer`: the last block of a multi-block layer has no output ReLU;
    # relu_after appends the one the official forward applies to the layer's output
    blocks = [
        BasicBlock(
            in_chs if i == 0 else out_chs,
            out_chs,
            stride if i == 0 else 1,
            act_out=depth == 1 or i < depth - 1,
            device=device,
            dtype=dtype,
        )
        for i in range(depth)
    ]
    return nn.Sequential(*blocks, *([nn.ReLU()] if relu_after else []))


class SegmentHead(nn.Module):
    """BN-ReLU-3x3 conv-BN-ReLU-1x1 conv (with bias); predicts at its input resolution."""

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.bn1 = nn.BatchNorm2d(in_chs, **dd)
        self.conv1 = nn.Conv2d(in_chs, mid_chs, 3, 1, 1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(mid_chs, **dd)
        self.conv2 = nn.Conv2d(mid_chs, out_chs, 1, bias=True, **dd)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = F.relu(self.bn2(self.conv1(F.relu(self.bn1(x)))))
        return x if pre_logits else self.conv2(x)


class PagFM(nn.Module):
    """Pixel-attention-guided fusion: blend the upsampled y into x where their embeddings agree."""

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.f_x = nn.Sequential(
            nn.Conv2d(in_chs, mid_chs, 1, bias=False, **dd), nn.BatchNorm2d(mid_chs, **dd)
        )
        self.f_y = nn.Sequential(
            nn.Conv2d(in_chs, mid_chs, 1, bias=False, **dd), nn.BatchNorm2d(mid_chs, **dd)
        )

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        size = x.shape[-2:]
        y_q = _resize(self.f_y(y), size)
        x_k = self.f_x(x)
        sim = torch.sigmoid(torch.sum(x_k * y_q, dim=1, keepdim=True))
        return (1 - sim) * x + sim * _resize(y, size)


# ------------------------------------------------------------------------------------------------
# Large-kernel attention


class CKS(nn.Module):
    """Comprehensive Kernel Selection: weight three branches per channel and per pixel.

    Channel weights: global average pool of the branch sum -> 1x1 -> 3x3 dw -> BN -> ReLU
    (squeeze), then one such expansion per branch followed by ReLU and an independent sigmoid
    (values in [0.5, 1), no softmax across branches). Spatial weights: a 2 -> 3 7x7 conv over the
    channel mean and max of the sum, sigmoid. Output: sum_b a_b * w_channel_b * w_spatial_b.
    The 3x3 depthwise convs act on 1x1 pooled maps (only their centre tap matters); they are kept
    so official checkpoints load.
    """

    def __init__(
        self, dim: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        hidden = max(dim // 16, 32)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc_reduce = self._squeeze_excite(dim, hidden, dd)
        self.fc_expand_small = self._squeeze_excite(hidden, dim, dd)
        self.fc_expand_big_h = self._squeeze_excite(hidden, dim, dd)
        self.fc_expand_big_v = self._squeeze_excite(hidden, dim, dd)
        self.conv_squeeze = nn.Conv2d(2, 3, 7, padding=3, **dd)

    @staticmethod
    def _squeeze_excite(in_chs: int, out_chs: int, dd: dict[str, Any]) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(in_chs, out_chs, 1, **dd),
            DepthwiseConv2d(out_chs, 3, padding=1, **dd),
            nn.BatchNorm2d(out_chs, **dd),
            nn.ReLU(inplace=True),
        )

    def forward(self, attn_small: Tensor, attn_big_h: Tensor, attn_big_v: Tensor) -> Tensor:
        attn = attn_small + attn_big_h + attn_big_v
        z = self.fc_reduce(self.avg_pool(attn))  # (N, hidden, 1, 1)
        w_small = torch.sigmoid(self.fc_expand_small(z))
        w_big_h = torch.sigmoid(self.fc_expand_big_h(z))
        w_big_v = torch.sigmoid(self.fc_expand_big_v(z))
        agg = torch.cat([attn.mean(dim=1, keepdim=True), attn.amax(dim=1, keepdim=True)], dim=1)
        s_small, s_big_h, s_big_v = torch.sigmoid(self.conv_squeeze(agg)).chunk(3, dim=1)
        return (
            attn_small * w_small * s_small
            + attn_big_h * w_big_h * s_big_h
            + attn_big_v * w_big_v * s_big_v
        )


class SDLSKA(nn.Module):
    """Strip-Dilated Large Separable Kernel Attention: dense k0 x k0 dw conv, then PARALLEL
    dilated 1 x k1 and k1 x 1 dw convs on its output, CKS fusion, 1x1 conv, `u * attn`."""

    def __init__(
        self,
        dim: int,
        kernel_size: int = 35,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        k0, k1, d = _decompose(kernel_size)
        self.DW_conv = DepthwiseConv2d(dim, k0, **dd)
        self.DW_D_conv_h = DepthwiseConv2d(dim, (1, k1), dilation=d, **dd)
        self.DW_D_conv_v = DepthwiseConv2d(dim, (k1, 1), dilation=d, **dd)
        self.pwconv = nn.Conv2d(dim, dim, 1, **dd)
        self.FS_kernel = CKS(dim, **dd)

    def forward(self, x: Tensor) -> Tensor:
        attn_small = self.DW_conv(x)
        attn = self.FS_kernel(
            attn_small, self.DW_D_conv_h(attn_small), self.DW_D_conv_v(attn_small)
        )
        return x * self.pwconv(attn)


class LSKA(nn.Module):
    """Large Separable Kernel Attention (cascaded 1-D dw convs: 1xk0, k0x1, dilated 1xk1, k1x1)."""

    def __init__(
        self,
        dim: int,
        kernel_size: int = 35,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        k0, k1, d = _decompose(kernel_size)
        self.DW_conv_h = DepthwiseConv2d(dim, (1, k0), **dd)
        self.DW_conv_v = DepthwiseConv2d(dim, (k0, 1), **dd)
        self.DW_D_conv_h = DepthwiseConv2d(dim, (1, k1), dilation=d, **dd)
        self.DW_D_conv_v = DepthwiseConv2d(dim, (k1, 1), dilation=d, **dd)
        self.pwconv = nn.Conv2d(dim, dim, 1, **dd)

    def forward(self, x: Tensor) -> Tensor:
        attn = self.DW_D_conv_v(self.DW_D_conv_h(self.DW_conv_v(self.DW_conv_h(x))))
        return x * self.pwconv(attn)


class VanAttention(nn.Module):
    """VAN's attention (official name `SpatialAttention`): 1x1 -> GELU -> gating unit -> 1x1,
    plus an inner shortcut."""

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        gating: type[nn.Module] = SDLSKA,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.proj_1 = nn.Conv2d(dim, dim, 1, **dd)
        self.activation = nn.GELU()
        self.spatial_gating_unit = gating(dim, kernel_size, **dd)
        self.proj_2 = nn.Conv2d(dim, dim, 1, **dd)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class DepthwiseConvMlp(nn.Module):
    """1x1 -> 3x3 depthwise -> GELU -> 1x1 (VAN's MLP; timm's ConvMlp has no depthwise conv)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.fc1 = nn.Conv2d(dim, hidden, 1, **dd)
        self.dwconv = DepthwiseConv2d(hidden, 3, padding=1, **dd)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1, **dd)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class EVABlock(nn.Module):
    """Efficient Visual Attention block (official `EVAN`)."""

    def __init__(
        self,
        dim: int,
        kernel_size: int = 35,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-2,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm1 = nn.BatchNorm2d(dim, **dd)
        self.attn = VanAttention(dim, kernel_size, SDLSKA, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim, **dd)
        self.mlp = DepthwiseConvMlp(dim, int(dim * mlp_ratio), **dd)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), layer_scale_init, **dd))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), layer_scale_init, **dd))
        self.apply(_init_eva_conv)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        x = x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))
        return x


def _init_eva_conv(module: nn.Module) -> None:
    # the official EVA block re-initialises its own convs (VAN's fan-out normal init); the rest
    # of the network keeps PyTorch's default init
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        fan_out //= module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# ------------------------------------------------------------------------------------------------
# Context and fusion


class DLKPPM(nn.Module):
    """Dilated Large Kernel Pyramid Pooling Module.

    Six branches, each added to the previous one before its 3x3 conv (DAPPM-style hierarchy):
    identity 1x1; avg-pool 5/s2 (dilated 3x3); avg-pool 9/s4 (dilated 3x3); a layer-scaled LSKA
    (k=35) attention on the identity branch; adaptive pools to 2x2 and 1x1. Concatenated,
    compressed by a 1x1 conv and added to a 1x1 shortcut.
    """

    def __init__(
        self,
        in_chs: int,
        branch_chs: int,
        out_chs: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}

        def bn_relu_conv(chs: int, out: int, k: int = 1, dilation: int = 1) -> list[nn.Module]:
            pad = dilation * (k - 1) // 2
            return [
                nn.BatchNorm2d(chs, **dd),
                nn.ReLU(inplace=True),
                nn.Conv2d(chs, out, k, padding=pad, dilation=dilation, bias=False, **dd),
            ]

        self.scale1 = nn.Sequential(nn.AvgPool2d(5, 2, 2), *bn_relu_conv(in_chs, branch_chs))
        self.scale2 = nn.Sequential(nn.AvgPool2d(9, 4, 4), *bn_relu_conv(in_chs, branch_chs))
        self.scale4 = nn.Sequential(nn.AdaptiveAvgPool2d(2), *bn_relu_conv(in_chs, branch_chs))
        self.scale5 = nn.Sequential(nn.AdaptiveAvgPool2d(1), *bn_relu_conv(in_chs, branch_chs))
        self.scale0 = nn.Sequential(*bn_relu_conv(in_chs, branch_chs))
        self.bn = nn.BatchNorm2d(branch_chs, **dd)
        self.lska = VanAttention(branch_chs, 35, LSKA, **dd)
        self.layer_scale_lska = nn.Parameter(torch.full((branch_chs,), 1e-2, **dd))
        self.process1 = nn.Sequential(*bn_relu_conv(branch_chs, branch_chs, 3, dilation=2))
        self.process2 = nn.Sequential(*bn_relu_conv(branch_chs, branch_chs, 3, dilation=2))
        self.process_lska = nn.Sequential(*bn_relu_conv(branch_chs, branch_chs, 3))
        self.process4 = nn.Sequential(*bn_relu_conv(branch_chs, branch_chs, 3))
        self.process5 = nn.Sequential(*bn_relu_conv(branch_chs, branch_chs, 3))
        self.compression = nn.Sequential(*bn_relu_conv(branch_chs * 6, out_chs))
        self.shortcut = nn.Sequential(*bn_relu_conv(in_chs, out_chs))

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        x0 = self.scale0(x)
        x_lska = x0 + self.layer_scale_lska[:, None, None] * self.lska(self.bn(x0))
        x1 = self.process1(_resize(self.scale1(x), size) + x0)
        x2 = self.process2(_resize(self.scale2(x), size) + x1)
        x3 = self.process_lska(x_lska + x2)
        x4 = self.process4(_resize(self.scale4(x), size) + x3)
        x5 = self.process5(_resize(self.scale5(x), size) + x4)
        return self.compression(torch.cat([x0, x1, x2, x3, x4, x5], dim=1)) + self.shortcut(x)


class BGAF(nn.Module):
    """Boundary-Guided Adaptive Fusion: `out(s * P + (1 - s) * I + (P + I))`, s = sigmoid(xdb),
    with P, I the detail and semantic maps after their own BN-ReLU-3x3 convs."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}

        def bn_relu_conv3x3(chs: int) -> nn.Sequential:
            return nn.Sequential(
                nn.BatchNorm2d(chs, **dd),
                nn.ReLU(inplace=True),
                nn.Conv2d(chs, out_chs, 3, padding=1, bias=False, **dd),
            )

        self.conv_p = bn_relu_conv3x3(in_chs)
        self.conv_i = bn_relu_conv3x3(in_chs)
        self.out = bn_relu_conv3x3(in_chs)

    def forward(self, p: Tensor, i: Tensor, d: Tensor) -> Tensor:
        p = self.conv_p(p)
        i = self.conv_i(i)
        edge = torch.sigmoid(d)
        return self.out(edge * p + (1 - edge) * i + (p + i))


# ------------------------------------------------------------------------------------------------
# Model


class BEVANet(nn.Module):
    """BEVANet segmentation network (see the module docstring for the layout)."""

    output_stride = 8
    default_loss = "bevanet"  # the official OHEM + boundary loss, for SegmentationTask(loss="auto")

    def __init__(
        self,
        num_classes: int = 19,
        in_chans: int = 3,
        planes: int = 64,
        depths: tuple[int, int, int] = (2, 2, 4),
        ppm_planes: int = 96,
        head_planes: int = 128,
        semantic_kernel_size: int = 35,
        detail_kernel_size: int = 23,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        aux_heads: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """
        Args:
            num_classes: classes of the seg heads.
            in_chans: input channels.
            planes: base width c (32 for BEVANet-S, 64 otherwise).
            depths: BasicBlocks of (layer1 and the detail layer3, layer2, semantic layer3); the
                official `NUM_BLOCKS[:3]` (its entries 4 and 5 are unused by the released configs).
            ppm_planes: DLKPPM branch width.
            head_planes: hidden width of the seg and auxiliary heads.
            semantic_kernel_size / detail_kernel_size: SDLSKA kernel of the semantic (stages 4-5)
                and detail EVA blocks.
            mlp_ratio: EVA block MLP expansion.
            drop_path_rate: stochastic depth of every EVA block (official: 0).
            aux_heads: build the auxiliary seg head and the boundary head (needed for training).
        """
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if len(depths) != 3 or min(depths) < 1:
            raise ValueError(f"depths must be three positive ints, got {depths!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (segmentation), got {num_classes}")
        c = planes
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.aux_heads = aux_heads
        self.num_features = 4 * c
        self.head_hidden_size = head_planes
        self.grad_checkpointing = False

        def eva(dim: int, kernel_size: int) -> EVABlock:
            return EVABlock(dim, kernel_size, mlp_ratio, drop_path_rate, **dd)

        def channel_norm(dim: int) -> LayerNorm2d:
            return LayerNorm2d(dim, eps=1e-5, **dd)

        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, c, 3, 2, 1, **dd),
            nn.BatchNorm2d(c, **dd),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, 2, 1, **dd),
            nn.BatchNorm2d(c, **dd),
            nn.ReLU(inplace=True),
        )
        self.layer1 = _basic_layer(c, c, depths[0], relu_after=True, **dd)
        self.layer2 = _basic_layer(c, 2 * c, depths[1], stride=2, relu_after=True, **dd)

        # semantic branch
        self.layer3_semantic = _basic_layer(
            2 * c, 4 * c, depths[2], stride=2, relu_after=True, **dd
        )
        self.layer4_down_semantic = _basic_layer(4 * c, 8 * c, 1, stride=2, **dd)
        self.layer4_semantic_1 = eva(8 * c, semantic_kernel_size)
        self.norm4_semantic_1 = channel_norm(8 * c)
        self.layer4_semantic_2 = eva(8 * c, semantic_kernel_size)
        self.norm4_semantic_2 = channel_norm(8 * c)
        self.layer5_down_semantic_seg = _basic_layer(8 * c, 16 * c, 1, stride=2, **dd)
        self.layer5_semantic_1_seg = eva(16 * c, semantic_kernel_size)
        self.norm5_semantic_1_seg = channel_norm(16 * c)
        self.layer5_semantic_2_seg = eva(16 * c, semantic_kernel_size)
        self.norm5_semantic_2_seg = channel_norm(16 * c)
        self.spp = DLKPPM(16 * c, ppm_planes, 4 * c, **dd)

        # detail branch and its fusions with the semantic branch
        self.layer3_detail = _basic_layer(2 * c, 2 * c, depths[0], **dd)
        self.compression3 = nn.Sequential(
            nn.Conv2d(4 * c, 2 * c, 1, bias=False, **dd), nn.BatchNorm2d(2 * c, **dd)
        )
        self.fuse_sd_3 = PagFM(2 * c, c, **dd)
        self.layer4_detail_conv = _basic_layer(2 * c, 2 * c, 1, **dd)
        self.layer4_detail = eva(2 * c, detail_kernel_size)
        self.norm4_detail = channel_norm(2 * c)
        self.compression4 = nn.Sequential(
            nn.Conv2d(8 * c, 2 * c, 1, bias=False, **dd), nn.BatchNorm2d(2 * c, **dd)
        )
        self.fuse_sd_4 = PagFM(2 * c, c, **dd)
        self.layer5_detail_semantic = nn.Sequential(Bottleneck(2 * c, 2 * c, **dd))
        self.layer5_detail_boundary = nn.Sequential(Bottleneck(2 * c, 2 * c, **dd))
        self.dfm = BGAF(4 * c, 4 * c, **dd)

        # heads, all at 1/8
        if aux_heads:
            self.seghead_ds = SegmentHead(2 * c, head_planes, num_classes, **dd)
            self.seghead_db = SegmentHead(2 * c, c, 1, **dd)
        self.head = SegmentHead(4 * c, head_planes, num_classes, **dd)
        self.feature_info = [
            dict(num_chs=chs, reduction=reduction, module=module)
            for chs, reduction, module in (
                (c, 4, "layer1"),
                (2 * c, 8, "layer2"),
                (4 * c, 16, "layer3_semantic"),
                (8 * c, 32, "norm4_semantic_2"),
                (16 * c, 64, "norm5_semantic_2_seg"),
            )
        ]
        # what prune_intermediate_layers leaves: the semantic stages that still run, and
        # whether the detail branch, fusions and heads are still there
        self.num_stages = len(self.feature_info)
        self.has_decoder = True

    # --- timm API ------------------------------------------------------------------------------

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^conv1|^layer1\.|^layer2\.",
            blocks=[
                (r"^layer3_|^compression3|^fuse_sd_3", (0,)),
                (r"^layer4_|^norm4_|^compression4|^fuse_sd_4", (1,)),
                (r"^layer5_|^norm5_|^spp|^dfm", (2,)),
                (r"^seghead_|^head", (3,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # the official recipe decays every parameter (layer scales and norms included)
        return set()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.conv2

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the final 1x1 convs of the seg and auxiliary heads for `num_classes`."""
        if global_pool is not None:
            raise ValueError(f"a segmentation model has no global pool, got {global_pool!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (segmentation), got {num_classes}")
        self.num_classes = num_classes
        heads = [self.head, self.seghead_ds] if self.aux_heads else [self.head]
        for head in heads:
            old = head.conv2
            head.conv2 = nn.Conv2d(
                old.in_channels, num_classes, 1, device=old.weight.device, dtype=old.weight.dtype
            )

    # --- forward -------------------------------------------------------------------------------

    def _check_input(self, x: Tensor) -> None:
        if not torch.jit.is_scripting():
            check_in_chans(self, x)
            check_input_size_and_batch(x, self.output_stride, self.training)

    def _eva(self, block: EVABlock, norm: LayerNorm2d, x: Tensor) -> Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
        # back to NCHW-contiguous like the official reshape (LayerNorm2d returns a permuted
        # view): the following convs then run the same kernels, bit-identical to the official
        return norm(x).contiguous()

    def _stage(self, index: int, x: Tensor) -> Tensor:
        """Stage `index` of the semantic path (feature_info order; x = the previous map)."""
        if index == 0:
            return self.layer1(self.conv1(x))  # c, 1/4
        if index == 1:
            return self.layer2(x)  # 2c, 1/8
        if index == 2:
            return self.layer3_semantic(x)  # 4c, 1/16
        if index == 3:
            x = self.layer4_down_semantic(x)  # 8c, 1/32
            x = self._eva(self.layer4_semantic_1, self.norm4_semantic_1, x)
            return self._eva(self.layer4_semantic_2, self.norm4_semantic_2, x)
        x = self.layer5_down_semantic_seg(x)  # 16c, 1/64
        x = self._eva(self.layer5_semantic_1_seg, self.norm5_semantic_1_seg, x)
        return self._eva(self.layer5_semantic_2_seg, self.norm5_semantic_2_seg, x)

    def _encode(self, x: Tensor, num_stages: int) -> list[Tensor]:
        """The first `num_stages` semantic-path maps (the detail branch is not run)."""
        self._check_input(x)
        feats = []
        for i in range(num_stages):
            x = self._stage(i, x)
            feats.append(x)
        return feats

    def _forward_branches(
        self, x: Tensor, taps: list[Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Return (BGAF output, aux-head input, boundary-head input), all at 1/8; appends the
        semantic-path maps (feature_info) to `taps`."""
        self._check_input(x)
        feats = [self._stage(0, x)]
        feats.append(self._stage(1, feats[-1]))
        x = feats[-1]  # 2c, 1/8: both branches start here
        feats.append(self._stage(2, x))

        xd = self.layer3_detail(x)  # 2c, 1/8
        # the official code rectifies this map in place, so its aux head sees the ReLU output too
        xd = F.relu(self.fuse_sd_3(xd, self.compression3(feats[2])))
        aux_in = xd

        feats.append(self._stage(3, feats[2]))
        xd = self._eva(self.layer4_detail, self.norm4_detail, self.layer4_detail_conv(xd))
        xd = self.fuse_sd_4(xd, self.compression4(feats[3]))  # 2c, 1/8
        xds = self.layer5_detail_semantic(xd)  # 4c, 1/8
        xdb = self.layer5_detail_boundary(xd)  # 4c, 1/8

        feats.append(self._stage(4, feats[3]))
        xs = _resize(self.spp(feats[4]), xds.shape[-2:])  # 4c, 1/8
        if taps is not None:
            taps.extend(feats)
        return self.dfm(xds, xs, xdb), aux_in, xd

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Semantic-path maps (`feature_info`: strides 4, 8, 16, 32, 64) for `indices` (last n
        if int, all if None) and, unless intermediates_only, the final features: those of
        `forward_features`, or with stop_early the last map computed. Without the final
        features only the semantic path runs.

        `norm` is accepted for timm's contract; no norm follows the last stage.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        if intermediates_only or stop_early or not self.has_decoder:
            feats = self._encode(x, max_index + 1 if stop_early else self.num_stages)
            intermediates = [feats[i] for i in take_indices]
            return intermediates if intermediates_only else (feats[-1], intermediates)
        feats: list[Tensor] = []
        final = self._forward_branches(x, feats)[0]
        return final, [feats[i] for i in take_indices]

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep the semantic stages up to the last of `indices`; with prune_head, or when a
        stage goes, the detail branch, fusion and heads go too (they need every stage), and
        `forward_features` / `forward` end at the last kept map."""
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        if prune_head or max_index < self.num_stages - 1:
            keep = {name for stage in _STAGE_MODULES[: max_index + 1] for name in stage}
            for name, _ in list(self.named_children()):
                if name not in keep:
                    delattr(self, name)
            self.num_stages = max_index + 1
            self.has_decoder = False
            self.num_classes = 0
            self.num_features = self.feature_info[max_index]["num_chs"]
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        """The fused (BGAF) map the seg head reads: (N, 4c, H/8, W/8); once pruned, the last
        kept semantic-path map."""
        if not self.has_decoder:
            return self._encode(x, self.num_stages)[-1]
        return self._forward_branches(x)[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward_heads(self, x: Tensor) -> dict[str, Tensor]:
        """Every head at 1/8: {"aux_seg", "seg", "boundary"} (only "seg" if `aux_heads=False`)."""
        features, aux_in, xd = self._forward_branches(x)
        seg = self.head(features)
        if not self.aux_heads:
            return {"seg": seg}
        return {"aux_seg": self.seghead_ds(aux_in), "seg": seg, "boundary": self.seghead_db(xd)}

    def forward(self, x: Tensor) -> Tensor:
        """Seg logits resized to the input size (bilinear, align_corners=True like the official
        inference and loss); once pruned, the last kept semantic-path map."""
        if not self.has_decoder:
            return self.forward_features(x)
        logits = self.forward_head(self.forward_features(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)


# The modules of each semantic-path stage (feature_info order); everything else is the detail
# branch, the fusions and the heads.
_STAGE_MODULES = (
    ("conv1", "layer1"),
    ("layer2",),
    ("layer3_semantic",),
    (
        "layer4_down_semantic",
        "layer4_semantic_1",
        "norm4_semantic_1",
        "layer4_semantic_2",
        "norm4_semantic_2",
    ),
    (
        "layer5_down_semantic_seg",
        "layer5_semantic_1_seg",
        "norm5_semantic_1_seg",
        "layer5_semantic_2_seg",
        "norm5_semantic_2_seg",
    ),
)


@register_notrace_function  # Python control flow on shapes: one opaque call for fx tracing
def check_input_size_and_batch(x: Tensor, stride: int, training: bool) -> None:
    h, w = x.shape[-2:]
    if h % stride or w % stride:
        raise ValueError(
            f"input size {h}x{w} is not a multiple of {stride}: BEVANet's 1/8 branches must "
            f"align exactly; pad or resize the input"
        )
    if training and x.shape[0] < 2:
        raise ValueError(
            f"batch size {x.shape[0]} in train mode: the BatchNorm layers after global pooling "
            f"(CKS channel weights, DLKPPM 1x1 branch) need batch >= 2; use a larger batch or "
            f"call model.eval()"
        )


# ------------------------------------------------------------------------------------------------
# Checkpoints


_WRAPPER_PREFIXES = ("module.", "model.")
_TRAINING_ONLY_HEADS = ("seghead_ds.", "seghead_db.")


def _to_model_key(key: str, model_keys: set[str]) -> str:
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    if key not in model_keys:
        key = re.sub(r"\.(dwconv|pwconv)\.(weight|bias)$", r".\2", key)
    return key


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: BEVANet) -> dict[str, Tensor]:
    """Official BEVANet segmentation checkpoint -> this model's keys.

    Accepts `best.pt` / `final_state.pt` (the `FullModel` training wrapper's state_dict: keys
    prefixed `model.`, plus the loss's class-weight buffer `sem_loss.criterion.weight`),
    `checkpoint.pth.tar` (the same under `state_dict`), a bare model state_dict, any of them under
    `model` and/or with DataParallel's `module.` prefix, and checkpoints already in this layout.
    Drops the official `DWConv`/`PWConv` wrapper level and, for `aux_heads=False`, the
    training-only heads. Raises CheckpointError naming missing/unexpected keys.
    """
    for wrapper in ("state_dict", "model"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
    model_keys = set(model.state_dict().keys())
    out = {}
    for key, value in state_dict.items():
        key = _to_model_key(key, model_keys)
        if key.startswith(("sem_loss.", "boundary_loss.")):
            continue  # loss buffers saved by the official FullModel wrapper
        if not model.aux_heads and key.startswith(_TRAINING_ONLY_HEADS):
            continue
        out[key] = value
    check_state_dict_fits(
        out,
        model,
        hint_keys="only BEVANet segmentation checkpoints load here; initialise from an "
        "ImageNet (classification) checkpoint with load_imagenet_backbone()",
    )
    return out


@torch.no_grad()
def load_imagenet_backbone(
    model: BEVANet, checkpoint: str | dict[str, Tensor]
) -> tuple[list[str], list[str]]:
    """Initialise `model` from an official ImageNet (classification) checkpoint, the way the
    official segmentation training starts: every tensor whose key (after this file's key
    conversion) exists in the model with the same shape is copied; the rest stays as built.

    Returns (loaded keys, model keys left at their initialisation), so nothing is silent.
    """
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint_file(checkpoint)
    for wrapper in ("state_dict", "model"):
        if wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    own = model.state_dict()
    own_keys = set(own)
    loaded = []
    for key, value in state.items():
        key = _to_model_key(key, own_keys)
        if key in own and own[key].shape == value.shape:
            own[key].copy_(value)
            loaded.append(key)
    return sorted(loaded), sorted(set(own) - set(loaded))


# Variant -> constructor arguments (the official configs' PLANES, NUM_BLOCKS[:3], PPM_PLANES,
# HEAD_PLANES).
VARIANT_ARGS: dict[str, dict[str, Any]] = {
    "bevanet_s": dict(planes=32, depths=(2, 2, 3), ppm_planes=96, head_planes=128),
    "bevanet_sw": dict(planes=64, depths=(2, 2, 3), ppm_planes=96, head_planes=128),
    "bevanet_b": dict(planes=64, depths=(2, 2, 4), ppm_planes=96, head_planes=128),
    "bevanet_l": dict(planes=64, depths=(3, 3, 4), ppm_planes=112, head_planes=256),
}


def _create_bevanet(variant: str, pretrained: bool = False, **kwargs: Any) -> BEVANet:
    return build_model(
        BEVANet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        # features_only: timm's getter wrapper (the two-branch forward is no module sequence)
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3, 4)),
        **dict(VARIANT_ARGS[variant], **kwargs),
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 19,
        "input_size": (3, 1024, 2048),
        "min_input_size": (3, 64, 64),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1.0",
        # both class predictors; dropped together when num_classes differs from the checkpoint
        "classifier": ("head.conv2", "seghead_ds.conv2"),
        "license": "mit",
        "paper_ids": "arXiv:2508.07300",
        "paper_name": "BEVANet: Bilateral Efficient Visual Attention Network for Real-Time "
        "Semantic Segmentation",
        "origin_url": "https://github.com/maomao0819/BEVANet",
        **kwargs,
    }


# Released weights are Google Drive links in the official README (no direct URL): load a local
# copy with pretrained_cfg_overlay=dict(file=PATH).
default_cfgs = generate_default_cfgs(
    {
        # Cityscapes val 78.2 mIoU, 70.0 FPS (RTX 3090, 1024x2048) per the official README
        "bevanet_s.cityscapes": _cfg(),
        # CamVid 83.1 mIoU, 20.1 GFLOPs at 720x960 per the official README
        "bevanet_s.camvid": _cfg(num_classes=11, input_size=(3, 720, 960)),
        "bevanet_sw.cityscapes_untrained": _cfg(),
        # Cityscapes val 81.0 mIoU, 32.8 FPS (RTX 3090, 1024x2048) per the official README
        "bevanet_b.cityscapes": _cfg(),
        # ADE20k val 39.8 mIoU per the official README
        "bevanet_b.ade20k": _cfg(num_classes=150, input_size=(3, 512, 512)),
        "bevanet_l.cityscapes_untrained": _cfg(),
    }
)


@register_model
def bevanet_s(pretrained: bool = False, **kwargs: Any) -> BEVANet:
    return _create_bevanet("bevanet_s", pretrained, **kwargs)


@register_model
def bevanet_sw(pretrained: bool = False, **kwargs: Any) -> BEVANet:
    return _create_bevanet("bevanet_sw", pretrained, **kwargs)


@register_model
def bevanet_b(pretrained: bool = False, **kwargs: Any) -> BEVANet:
    return _create_bevanet("bevanet_b", pretrained, **kwargs)


@register_model
def bevanet_l(pretrained: bool = False, **kwargs: Any) -> BEVANet:
    return _create_bevanet("bevanet_l", pretrained, **kwargs)
