"""MK-UNet: a multi-kernel lightweight CNN for (binary) medical image segmentation.

Paper: `MK-UNet: Multi-kernel Lightweight CNN for Medical Image Segmentation`,
    Md Mostafijur Rahman and Radu Marculescu, ICCV 2025 Workshops (CVAMD),
    https://arxiv.org/abs/2509.18493
Official code: https://github.com/SLDGroup/MK-UNet (`mkunet_network.py`, BSD-3-Clause); no
    official weights are published.

A U-Net without stem or strided convs: five MKIR encoder stages, each followed by a 2x max-pool
(the skips are the pooled maps), and five decoder stages that each run channel attention, one
spatial attention module shared by every stage, an MKIR block, a 2x bilinear upsample + ReLU and
a grouped attention gate on the skip. MKIR = 1x1 expand (x2 of the block's input width) ->
MKDC (parallel depthwise 1/3/5, each BN + ReLU6, summed) -> channel shuffle -> 1x1 project, with
a residual. Four 1x1 heads; the official forward returns only the finest one (`[p4]`).

Differences from the official implementation (outputs are equal, see tests/test_mkunet.py):
- `forward` returns the full-resolution logits as a tensor and never computes the three coarse
  heads (the official forward computes and discards them). `forward_heads` returns all four as
  a dict keyed like the official code (`p4` finest, `p1` coarsest), each at input resolution.
- Module layout is list-based (`encoder.{i}`, `decoder.{i}`, `skip_gate.{i}`, ...); official
  state_dicts (`encoder1.0...`, `AG1...`, `CA1...`, `SA...`, `out1...`) are remapped by
  `checkpoint_filter_fn`. Each encoder stage ends with its 2x max-pool (no parameters, so the
  keys are unchanged): `encoder.{i}` outputs the skip map itself.
- timm's feature API on the encoder: `feature_info` (the five pooled maps, strides 2..32),
  `forward_intermediates`, `prune_intermediate_layers` (drops the decoder: it needs every
  encoder map) and `features_only=True` (timm's getter wrapper).
- The M and L widths, which the official file lists only in a comment, are registered too.
- The input is checked up front: H and W must be multiples of 32 (the official code fails later
  with a shape mismatch) and the channel count must match `in_chans`. As in the official code, a
  1-channel image fed to a 3-channel model is repeated to 3 channels; unlike it, `in_chans=1`
  builds a working 1-channel model.
- Depthwise convs are `ops.DepthwiseConv2d`; channel attention is timm's CBAM `ChannelAttn`.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_function
from timm.layers.cbam import ChannelAttn
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices  # not exported by timm.models
from torch import Tensor

from ops import DepthwiseConv2d

from ..checkpoint import build_model, check_state_dict_fits
from ..layers import check_in_chans

__all__ = ["MKUNet"]

# Five 2x max-pools: every spatial size must be a multiple of this.
_STRIDE = 32


class MultiKernelDepthwiseConv(nn.Module):
    """MKDC: parallel depthwise convs, one per kernel size, each DW -> BN -> ReLU6, summed."""

    def __init__(
        self,
        channels: int,
        kernel_sizes: Sequence[int] = (1, 3, 5),
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.dwconvs = nn.ModuleList(
            nn.Sequential(
                DepthwiseConv2d(channels, k, padding=k // 2, bias=False, **dd),
                nn.BatchNorm2d(channels, **dd),
                nn.ReLU6(inplace=True),
            )
            for k in kernel_sizes
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = [conv(x) for conv in self.dwconvs]
        out = branches[0]
        for branch in branches[1:]:
            out = out + branch
        return out


class MultiKernelInvertedResidual(nn.Module):
    """MKIR: 1x1 expand (BN, ReLU6) -> MKDC -> channel shuffle -> 1x1 project (BN), + shortcut.

    The expansion multiplies the *input* width. The shortcut is identity when the widths match,
    else a bias-free 1x1 conv without BN.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_sizes: Sequence[int] = (1, 3, 5),
        expansion: float = 2.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        mid_chs = int(in_chs * expansion)
        self.pconv1 = nn.Sequential(
            nn.Conv2d(in_chs, mid_chs, 1, bias=False, **dd),
            nn.BatchNorm2d(mid_chs, **dd),
            nn.ReLU6(inplace=True),
        )
        self.multi_scale_dwconv = MultiKernelDepthwiseConv(mid_chs, kernel_sizes, **dd)
        # gcd(mid, out) groups; when it equals mid_chs the shuffle is the identity permutation
        self.shuffle = nn.ChannelShuffle(math.gcd(mid_chs, out_chs))
        self.pconv2 = nn.Sequential(
            nn.Conv2d(mid_chs, out_chs, 1, bias=False, **dd),
            nn.BatchNorm2d(out_chs, **dd),
        )
        if in_chs == out_chs:
            self.conv1x1 = nn.Identity()
        else:
            self.conv1x1 = nn.Conv2d(in_chs, out_chs, 1, bias=False, **dd)

    def forward(self, x: Tensor) -> Tensor:
        out = self.pconv2(self.shuffle(self.multi_scale_dwconv(self.pconv1(x))))
        return self.conv1x1(x) + out


class CbamSpatialAttention(nn.Module):
    """CBAM spatial attention: x * sigmoid(conv_kxk([mean_c(x); max_c(x)])), no BN, no bias.

    (timm's `SpatialAttn` has a BN after the conv; the official MK-UNet has none.)
    """

    def __init__(
        self,
        kernel_size: int = 7,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            2, 1, kernel_size, padding=kernel_size // 2, bias=False, device=device, dtype=dtype
        )

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class GroupedAttentionGate(nn.Module):
    """Gates a skip `x` by the decoder feature `g`: x * sigmoid(BN(conv1x1(relu(Wg(g) + Wx(x))))).

    Wg and Wx are grouped kxk convs (C -> C/2, two input channels per group, with bias) + BN.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        inter_chs = channels // 2
        groups = 1 if kernel_size == 1 else inter_chs
        self.W_g = nn.Sequential(
            nn.Conv2d(
                channels, inter_chs, kernel_size, padding=kernel_size // 2, groups=groups, **dd
            ),
            nn.BatchNorm2d(inter_chs, **dd),
        )
        self.W_x = nn.Sequential(
            nn.Conv2d(
                channels, inter_chs, kernel_size, padding=kernel_size // 2, groups=groups, **dd
            ),
            nn.BatchNorm2d(inter_chs, **dd),
        )
        self.psi = nn.Sequential(
            nn.Conv2d(inter_chs, 1, 1, **dd),
            nn.BatchNorm2d(1, **dd),
            nn.Sigmoid(),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, g: Tensor, x: Tensor) -> Tensor:
        return x * self.psi(self.act(self.W_g(g) + self.W_x(x)))


def _nearest_valid(size: int, stride: int) -> str:
    lower = size // stride * stride
    if lower == 0:
        return str(stride)
    return f"{lower} or {lower + stride}"


# A leaf for fx tracing (timm's feature extraction): the checks branch on the input's shape.
# fx only wraps functions whose global name has no leading underscore. Written for TorchScript
# too (a loop, not a filtered comprehension; the stride an argument, not a global), which
# scripts fx-traced graphs with their leaves.
@register_notrace_function
def prepare_input(x: Tensor, in_chans: int, stride: int) -> Tensor:
    """Check H, W and repeat a 1-channel image to 3 channels like the official code."""
    bad: list[str] = []
    for name, size in (("height", x.shape[2]), ("width", x.shape[3])):
        if size % stride != 0:
            bad.append(f"{name} {size} (nearest valid: {_nearest_valid(size, stride)})")
    if len(bad) > 0:
        raise ValueError(
            f"MK-UNet needs height and width divisible by {stride} (five 2x max-pools); got "
            + ", ".join(bad)
        )
    if x.shape[1] != in_chans:
        x = x.repeat(1, in_chans, 1, 1)
    return x


class MKUNet(nn.Module):
    """MK-UNet. `forward` -> logits (N, num_classes, H, W); `forward_heads` -> all four heads."""

    default_loss = "structure"  # the released polyp script's loss; SegmentationTask(loss="auto")

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 96, 160),
        depths: Sequence[int] = (1, 1, 1, 1, 1),
        kernel_sizes: Sequence[int] = (1, 3, 5),
        expansion: float = 2.0,
        ca_ratios: Sequence[int] = (16, 16, 16, 8, 4),
        sa_kernel_size: int = 7,
        gate_kernel_size: int = 3,
        in_chans: int = 3,
        num_classes: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """
        Args:
            channels: widths C1..C5 of the five encoder stages (the decoder mirrors them).
            depths: MKIR blocks per encoder stage (every decoder stage has one).
            kernel_sizes: depthwise kernel sizes of the MKDC branches.
            expansion: MKIR expansion of the block's input width.
            ca_ratios: channel-attention reduction per decoder stage (deepest first); a ratio
                larger than the stage width is clamped to it (hidden width 1).
            sa_kernel_size: kernel of the one spatial-attention conv shared by all stages.
            gate_kernel_size: kernel of the grouped convs in the skip attention gates.
            in_chans: input channels.
            num_classes: output channels of every head (sigmoid/softmax is left to the loss).
        """
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        for name, value in (("channels", channels), ("depths", depths), ("ca_ratios", ca_ratios)):
            if len(value) != 5:
                raise ValueError(
                    f"MK-UNet has five stages; {name} must have 5 entries, got {value}"
                )
        if min(depths) < 1:
            raise ValueError(f"every encoder stage needs at least one block, got depths={depths}")
        if sa_kernel_size % 2 != 1 or gate_kernel_size % 2 != 1:
            raise ValueError(
                "attention kernels must be odd (same padding), got "
                f"sa_kernel_size={sa_kernel_size}, gate_kernel_size={gate_kernel_size}"
            )
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = channels[0]
        block_args = dict(kernel_sizes=kernel_sizes, expansion=expansion, **dd)

        # each stage: MKIR blocks, then the 2x max-pool whose output is the skip
        stage_in = [in_chans, *channels[:-1]]
        self.encoder = nn.ModuleList(
            nn.Sequential(
                *[
                    MultiKernelInvertedResidual(c_in if i == 0 else c_out, c_out, **block_args)
                    for i in range(depth)
                ],
                nn.MaxPool2d(2, 2),
            )
            for c_in, c_out, depth in zip(stage_in, channels, depths, strict=True)
        )
        self.feature_info = [
            dict(num_chs=c, reduction=2 ** (i + 1), module=f"encoder.{i}")
            for i, c in enumerate(channels)
        ]

        # decoder stage i runs at 1/2^(5-i) of the input: C5 -> C4 -> C3 -> C2 -> C1 -> C1
        dec_in = channels[::-1]
        dec_out = [*channels[::-1][1:], channels[0]]
        self.channel_attn = nn.ModuleList(
            ChannelAttn(c, rd_channels=c // min(r, c), **dd)
            for c, r in zip(dec_in, ca_ratios, strict=True)
        )
        self.spatial_attn = CbamSpatialAttention(sa_kernel_size, **dd)
        self.decoder = nn.ModuleList(
            MultiKernelInvertedResidual(c_in, c_out, **block_args)
            for c_in, c_out in zip(dec_in, dec_out, strict=True)
        )
        # stages 0..3 fuse the skips of encoder stages 4..1
        self.skip_gate = nn.ModuleList(
            GroupedAttentionGate(c, gate_kernel_size, **dd) for c in dec_out[:4]
        )
        self._init_weights()

        # Deep-supervision heads p1..p3 tap decoder stages 1..3 (1/8, 1/4, 1/2 resolution);
        # official init: PyTorch's default for the heads, N(0, 0.02) everywhere else.
        self.aux_heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1, **dd) for c in dec_out[1:4])
        self.head = nn.Conv2d(channels[0], num_classes, 1, **dd)

    @torch.no_grad()
    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace all four heads by fresh ones with `num_classes` outputs."""
        w = self.head.weight
        dd = {"device": w.device, "dtype": w.dtype}
        self.num_classes = num_classes
        self.aux_heads = nn.ModuleList(
            nn.Conv2d(h.in_channels, num_classes, 1, **dd) for h in self.aux_heads
        )
        self.head = nn.Conv2d(self.head.in_channels, num_classes, 1, **dd)

    def _encode(self, x: Tensor, stages: nn.ModuleList) -> list[Tensor]:
        """Pooled encoder maps at 1/2, 1/4, 1/8, 1/16 (the skips) and 1/32 (the bottleneck)."""
        if not torch.jit.is_scripting():
            # as in the official code, a 3-channel model takes 1-channel images (repeated)
            check_in_chans(self, x, also_accepted=(1,) if self.in_chans == 3 else ())
        x = prepare_input(x, self.in_chans, _STRIDE)
        feats = []
        for stage in stages:
            x = stage(x)
            feats.append(x)
        return feats

    def _decode(self, feats: list[Tensor], taps: list[Tensor] | None = None) -> Tensor:
        """Decoder features at input resolution; appends the maps the aux heads read to `taps`.

        Once pruned to the encoder (no decoder stages left) this is the last encoder map.
        """
        skips = feats[-2::-1]  # 1/16, 1/8, 1/4, 1/2
        x = feats[-1]
        for i, (ca, block) in enumerate(zip(self.channel_attn, self.decoder, strict=True)):
            x = block(self.spatial_attn(ca(x)))
            x = F.relu(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
            if taps is not None and 1 <= i <= 3:
                taps.append(x)
            if i < len(skips):
                x = x + self.skip_gate[i](x, skips[i])
        return x

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Encoder maps (`feature_info`: strides 2, 4, 8, 16, 32) for `indices` (last n if int,
        all if None) and, unless intermediates_only, the final features: those of
        `forward_features`, or with stop_early the last encoder map computed.

        `norm` is accepted for timm's contract; no norm follows the encoder.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.encoder), indices)
        if torch.jit.is_scripting() or not stop_early:
            stages = self.encoder
        else:
            stages = self.encoder[: max_index + 1]
        feats = self._encode(x, stages)
        intermediates = [feats[i] for i in take_indices]
        if intermediates_only:
            return intermediates
        if stop_early:
            return feats[-1], intermediates
        return self._decode(feats), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep the encoder stages up to the last of `indices`. The decoder and heads go too
        (prune_head, or any encoder stage dropped: the decoder needs every encoder map); then
        `forward_features` ends at the last kept encoder map."""
        take_indices, max_index = feature_take_indices(len(self.encoder), indices)
        if prune_head or max_index < len(self.encoder) - 1:
            self.channel_attn = nn.ModuleList()
            self.spatial_attn = nn.Identity()
            self.decoder = nn.ModuleList()
            self.skip_gate = nn.ModuleList()
            self.aux_heads = nn.ModuleList()
            self.head = nn.Identity()
            self.num_classes = 0
            self.num_features = self.feature_info[max_index]["num_chs"]
        self.encoder = self.encoder[: max_index + 1]
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        """Final decoder features (N, C1, H, W)."""
        return self._decode(self._encode(x, self.encoder))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        """Full-resolution logits (N, num_classes, H, W): the official `[p4]`, unwrapped."""
        return self.forward_head(self.forward_features(x))

    def forward_heads(self, x: Tensor) -> dict[str, Tensor]:
        """All four heads at input resolution, named as in the official code.

        p1, p2, p3 come from decoder stages at 1/8, 1/4, 1/2 and are upsampled (bilinear) by
        8, 4, 2; p4 is the finest head and equals `forward(x)`.
        """
        taps: list[Tensor] = []
        p4 = self.forward_head(self._decode(self._encode(x, self.encoder), taps))
        heads = {}
        for i, (head, tap) in enumerate(zip(self.aux_heads, taps, strict=True)):
            scale = float(2 ** (len(taps) - i))
            heads[f"p{i + 1}"] = F.interpolate(
                head(tap), scale_factor=scale, mode="bilinear", align_corners=False
            )
        heads["p4"] = p4
        return heads


def _remap_official_key(key: str) -> str:
    """Official `mkunet_network.py` names -> ours (keys already in our layout pass through)."""
    prefix, _, rest = key.partition(".")
    for official, ours in (("encoder", "encoder"), ("CA", "channel_attn"), ("AG", "skip_gate")):
        if prefix.startswith(official) and prefix[len(official) :].isdigit():
            return f"{ours}.{int(prefix[len(official) :]) - 1}.{rest}"
    if prefix.startswith("decoder") and prefix[len("decoder") :].isdigit():
        # official decoders are 1-block Sequentials: decoder{i}.0.* -> decoder.{i-1}.*
        return f"decoder.{int(prefix[len('decoder') :]) - 1}.{rest.removeprefix('0.')}"
    if prefix == "SA":
        return f"spatial_attn.{rest}"
    if prefix in ("out1", "out2", "out3"):
        return f"aux_heads.{int(prefix[-1]) - 1}.{rest}"
    if prefix == "out4":
        return f"head.{rest}"
    return key


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: MKUNet) -> dict[str, Tensor]:
    """Load an official MK-UNet state_dict (optionally wrapped in `model` / `state_dict`)."""
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    out = {_remap_official_key(k.removeprefix("module.")): v for k, v in state_dict.items()}

    # The first block's expanded width is 2 x in_chans, so in_chans cannot be adapted like a
    # stem conv: such a mismatch is reported with the shapes.
    check_state_dict_fits(
        out,
        model,
        hint_shapes="a wrong variant, or a checkpoint trained with other in_chans (MK-UNet's "
        "first block widens in_chans x2, so it cannot be adapted; a 3-channel model takes "
        "1-channel images as they are)",
    )
    return out


# Variant -> constructor arguments; M and L are listed only in a comment of the official file.
VARIANT_ARGS: dict[str, dict[str, tuple[int, ...]]] = {
    "mk_unet_t": dict(channels=(4, 8, 16, 24, 32)),
    "mk_unet_s": dict(channels=(8, 16, 32, 48, 80)),
    "mk_unet_b": dict(channels=(16, 32, 64, 96, 160)),
    "mk_unet_m": dict(channels=(32, 64, 128, 192, 320)),
    "mk_unet_l": dict(channels=(64, 128, 256, 384, 512)),
}


def _create_mkunet(variant: str, pretrained: bool = False, **kwargs) -> MKUNet:
    return build_model(
        MKUNet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        # features_only: timm's getter wrapper, through forward_intermediates
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3, 4)),
        **dict(VARIANT_ARGS[variant], **kwargs),
    )


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1,
        "input_size": (3, 256, 256),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        # the released polyp pipeline normalises with ImageNet statistics
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "encoder.0.0.pconv1.0",
        "classifier": ("aux_heads.0", "aux_heads.1", "aux_heads.2", "head"),
        "license": "bsd-3-clause",
        "paper_ids": "arXiv:2509.18493",
        "paper_name": "MK-UNet: Multi-kernel Lightweight CNN for Medical Image Segmentation",
        "origin_url": "https://github.com/SLDGroup/MK-UNet",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "mk_unet_t": _cfg(),
        "mk_unet_s": _cfg(),
        "mk_unet_b": _cfg(),
        "mk_unet_m": _cfg(),
        "mk_unet_l": _cfg(),
    }
)


@register_model
def mk_unet_t(pretrained: bool = False, **kwargs) -> MKUNet:
    return _create_mkunet("mk_unet_t", pretrained, **kwargs)


@register_model
def mk_unet_s(pretrained: bool = False, **kwargs) -> MKUNet:
    return _create_mkunet("mk_unet_s", pretrained, **kwargs)


@register_model
def mk_unet_b(pretrained: bool = False, **kwargs) -> MKUNet:
    return _create_mkunet("mk_unet_b", pretrained, **kwargs)


@register_model
def mk_unet_m(pretrained: bool = False, **kwargs) -> MKUNet:
    return _create_mkunet("mk_unet_m", pretrained, **kwargs)


@register_model
def mk_unet_l(pretrained: bool = False, **kwargs) -> MKUNet:
    return _create_mkunet("mk_unet_l", pretrained, **kwargs)
