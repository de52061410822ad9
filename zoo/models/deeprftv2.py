"""DeepRFTv2: kernel-level image deblurring with a Fourier Kernel Estimator.

Paper: `DeepRFTv2: Kernel-level Learning for Image Deblurring`, Xintian Mao, Haofei Song, Yin-Nian
    Liu, Qingli Li, Yan Wang, arXiv 2511.21132 (2025), https://arxiv.org/abs/2511.21132
Official code: https://github.com/INVOKERer/DeepRFTv2 (basicsr; the only public version is commit
    512587be: `DeepRFTv2_arch.py`, `DeepRFTv2_util.py`, `baseblock.py`, `revcol_function.py`,
    GoPro options `Motion_Deblurring/Options/GoPro-DeepRFTv2-test.yml`). No weights are linked.

The GoPro configuration: two cascaded stages, each with a full-resolution ("max") and a
half-resolution ("mid") U-Net of reversible columns (NAFBlock / NAFEVSBlock, 3 levels, depths
1-4-8 / 8-4-1) and one Fourier Kernel Estimator (FKE) per scale. Per stage: max encoder -> mid
encoder (fed the max encoder's levels) -> mid decoder -> mid heads + mid FKE -> the mid FKE
feature fused into the max latent -> max decoder -> max heads + max FKE. The FKE projects the
decoder feature twice (1x1 each), maps the rfft2 of the first through a column of EVSS blocks
acting on real/imag spectrum channels to one complex OTF per channel, multiplies the rfft2 of
the second with it (a circular convolution with a per-channel full-size kernel), irfft2, fuses
with the feature and predicts the blur pattern; image = pattern + blurry input. The half-scale
input is kornia's pyrdown of the image (`pyramid_down`).

Differences from the official implementation (outputs equal, see tests/test_deeprftv2.py and
the README's DeepRFTv2 section for the comparison with the official code):
- Only the GoPro path of the configurable official classes is built (`deblur_kernel_mode:
  ker_max_mid`, `small_scale: false`, `inp_feature: feature`, `fuse_method_encoder:
  Fuse_in_Encoder`, `fuse_method_decoder: DownSample2latent`, `upsample_mode:
  conv1x1_shuffle`); depths, block types, widths, stage count and `save_memory_*` remain
  arguments under the official names. `width=` sets `dims`, `dims_ker` and `num_ker` together.
  The kernel count is `dims[0]` as in the official code (it passes `width_d[0]`, not `num_ker`,
  to its OTF head): `num_ker` must equal it. `dims[1] == dims[2]` is required (the official
  mid-scale stage-2 embedding is built with `dims[2]` for a `dims[1]` feature).
- `BaseGoKModel`'s modules are the model's own (official keys `global_model.X` are `X` here;
  `checkpoint_filter_fn` strips the prefix and unwraps basicsr's `params` / `params_ema`).
- `forward` returns the final image (the official `out['img'][-1]`), `forward_heads` all eight:
  the official `img` list as `spatial1, fke1, spatial2, fke2` and the mid-scale images the
  official code keeps for its loss as `spatial1_mid, fke1_mid, spatial2_mid, fke2_mid`. The
  mid-scale loss itself is the training task's (zoo.tasks), not the network's.
- The kornia pyramid is computed without kornia (`pyramid_down`: the same 5x5 binomial, reflect
  border, bilinear resize); the third pyramid level, unused by this config, is not computed.
- Eval tiling (the official `sub_image`) is `forward_tiled`, not a constructor flag: tiles run
  one at a time (the official code stacks all tiles in one batch), positions as the official
  `grids`, blended by normalised linear ramps (`zoo.layers.tiling`; the official ramps are
  fixed linspaces with a special last-tile ramp). As officially, the pyramid is built on the
  whole image and cut into tiles. The official FKE additionally windows its input when it
  exceeds `sub_image_size` (512); with the official 512 tiles that never happens, and here the
  FKE is always global over its input.
- Reversible columns are `zoo.layers.reversible` (one autograd Function for every column
  kind; parameter gradients are returned by the Function instead of accumulated in place).
- Depthwise convs (NAF 3x3, EVSS2D 3x3, the 1-D conv along the scan) are `ops.DepthwiseConv2d`,
  the scan is `ops.selective_scan` (the official code needs mamba_ssm's CUDA kernel).
- `estimated_kernels` is the official `get_ker` path (irfft2 of the final OTFs, shifted and
  centre-cropped to 65x65) plus a per-kernel min-max normalisation to [0, 1] for display.
- Inputs are checked up front: channel count, and H, W multiples of 8 (named, with the nearest
  valid sizes); `pad_to_multiple` pads like the official validation and crops back.
- Registered: `deeprftv2_b` (the official GoPro configuration, 30,117,560 parameters) and
  `deeprftv2_s` (the same network at width 16, 3,626,232; no official weights).
- Not supported: torch.fx tracing (the reversible columns' autograd Function, the in-place
  alpha clamp and the dtype-dependent scan stop the tracer; torch.jit.trace, used by fvcore,
  works: tracers take the plain column path).
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices  # not exported by timm.models
from torch import Tensor

from ..checkpoint import build_model, check_state_dict_fits
from ..layers import check_in_chans
from ..layers.revcol_unet import ConvDown, FourierKernelEstimator, UNetColumn
from ..layers.reversible import ReversibleColumn
from ..layers.tiling import pad_to_multiple, ramp, tile_starts

__all__ = ["DeepRFTv2", "pad_to_multiple", "pyramid_down"]

_STRIDE = 8  # three 2x levels in the mid U-Net at half scale
KERNEL_SIZE = 65  # the official get_ker crop


def pyramid_down(x: Tensor) -> Tensor:
    """kornia's `pyrdown` (and level 1 of `build_pyramid`): 5x5 binomial blur [1,4,6,4,1]^T
    [1,4,6,4,1] / 256 with reflect border, then bilinear resize (align_corners=False) to
    (floor(H/2), floor(W/2))."""
    c, h, w = x.shape[-3:]
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (k1[:, None] * k1[None, :] / 256.0).expand(c, 1, 5, 5)
    blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=c)
    return F.interpolate(blurred, size=(h // 2, w // 2), mode="bilinear", align_corners=False)


def _nearest_valid(size: int) -> str:
    lower = size // _STRIDE * _STRIDE
    return str(_STRIDE) if lower == 0 else f"{lower} or {lower + _STRIDE}"


@register_notrace_function
def check_image_size(x: Tensor) -> None:
    """ValueError unless H and W are multiples of 8, naming the nearest valid sizes."""
    bad: list[str] = []
    for name, size in (("height", x.shape[-2]), ("width", x.shape[-1])):
        if size % _STRIDE != 0:
            bad.append(f"{name} {size} (nearest valid: {_nearest_valid(size)})")
    if len(bad) > 0:
        raise ValueError(
            f"DeepRFTv2 needs height and width divisible by {_STRIDE} (a 2x pyramid and three "
            "2x U-Net levels); got " + ", ".join(bad) + " (zoo.models.deeprftv2."
            "pad_to_multiple pads and crops back)"
        )


class ImageEmbed(nn.Module):
    """3x3 conv, no bias (the official OverlapPatchEmbed, key `proj`)."""

    def __init__(
        self,
        c_in: int,
        c: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c_in, c, 3, padding=1, bias=False, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def _per_stage(value: Any, n: int, name: str) -> list:
    """An official per-stage list ([[1, 4, 8], [1, 4, 8]]) or one value for every stage."""
    value = list(value)
    if value and isinstance(value[0], (list, tuple)):
        if len(value) < n:
            raise ValueError(f"{name} lists {len(value)} stages, num_global_unet={n}")
        return [list(v) for v in value[:n]]
    return [list(value) for _ in range(n)]


def _flags(value: Sequence[bool], n: int, name: str) -> list[bool]:
    value = list(value)
    if len(value) < n:
        raise ValueError(f"{name} has {len(value)} entries, num_global_unet={n}")
    return [bool(v) for v in value[:n]]


class DeepRFTv2(nn.Module):
    """DeepRFTv2 (GoPro configuration). `forward` -> the deblurred image (N, C, H, W);
    `forward_heads` -> the eight official images; H and W multiples of 8."""

    def __init__(
        self,
        in_chans: int = 3,
        width: int | None = None,
        dims: Sequence[int] | None = None,
        dims_ker: Sequence[int] | None = None,
        num_ker: int | None = None,
        num_global_unet: int = 2,
        enc_max_layers: Sequence = ((1, 4, 8), (1, 4, 8)),
        dec_max_layers: Sequence = ((8, 4, 1), (8, 4, 1)),
        enc_mid_layers: Sequence = ((1, 4, 8), (1, 4, 8)),
        dec_mid_layers: Sequence = ((8, 4, 1), (8, 4, 1)),
        enc_ker_layers: Sequence[int] = (1, 1, 1, 1),
        baseblock_enc_max_global: Sequence = (("naf", "NAFEVSBlock", "NAFEVSBlock"),) * 2,
        baseblock_dec_max_global: Sequence = (("NAFEVSBlock", "NAFEVSBlock", "naf"),) * 2,
        baseblock_enc_mid_global: Sequence = (("naf", "naf", "naf"),) * 2,
        baseblock_dec_mid_global: Sequence = (("naf", "naf", "naf"),) * 2,
        baseblock_enc_ker: Sequence[str] = ("EVSS", "EVSS", "EVSS", "EVSS"),
        save_memory_global_encoder: Sequence[bool] = (False, True),
        save_memory_global_decoder: Sequence[bool] = (False, True),
        save_memory_ker: Sequence[bool] = (True, True),
        d_state: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """
        Args:
            in_chans: image channels (the heads predict as many: output = input + residual).
            width: sets dims = dims_ker = (width,) * 3 and num_ker = width (48 = official).
            dims, dims_ker, num_ker, num_global_unet, enc/dec_*_layers, baseblock_*,
            save_memory_*: the official keyword arguments (GoPro values by default; per-stage
                lists may be given as one list for every stage). save_memory_*: per stage,
                run that column reversibly (memory, not math).
            d_state: state size of the selective scans (8 officially).
        """
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if width is not None:
            if dims is not None or dims_ker is not None or num_ker is not None:
                raise ValueError("give width or dims/dims_ker/num_ker, not both")
            if width < 1:
                raise ValueError(f"width must be >= 1, got {width}")
            dims, dims_ker, num_ker = (width,) * 3, (width,) * 3, width
        dims = tuple(dims) if dims is not None else (48, 48, 48)
        dims_ker = tuple(dims_ker) if dims_ker is not None else (48, 48, 48)
        num_ker = dims[0] if num_ker is None else num_ker
        if len(dims) != 3 or len(dims_ker) < 2:
            raise ValueError(f"dims needs 3 widths and dims_ker 2 or more, got {dims}, {dims_ker}")
        if dims[1] != dims[2]:
            raise ValueError(f"dims[1] must equal dims[2] (the official mid stage), got {dims}")
        if num_ker != dims[0]:
            raise ValueError(
                f"num_ker={num_ker}: the official FKE estimates dims[0] = {dims[0]} kernels "
                "(it passes dims[0], not num_ker, to its OTF head); give num_ker=dims[0]"
            )
        if num_global_unet < 1:
            raise ValueError(f"num_global_unet must be >= 1, got {num_global_unet}")
        n = num_global_unet
        self.in_chans = in_chans
        self.num_classes = in_chans  # the restored image
        self.num_stages = n
        self.pruned = False
        c, cm = dims[0], dims[1]
        enc_max = _per_stage(enc_max_layers, n, "enc_max_layers")
        dec_max = _per_stage(dec_max_layers, n, "dec_max_layers")
        enc_mid = _per_stage(enc_mid_layers, n, "enc_mid_layers")
        dec_mid = _per_stage(dec_mid_layers, n, "dec_mid_layers")
        blk_enc_max = _per_stage(baseblock_enc_max_global, n, "baseblock_enc_max_global")
        blk_dec_max = _per_stage(baseblock_dec_max_global, n, "baseblock_dec_max_global")
        blk_enc_mid = _per_stage(baseblock_enc_mid_global, n, "baseblock_enc_mid_global")
        blk_dec_mid = _per_stage(baseblock_dec_mid_global, n, "baseblock_dec_mid_global")
        mem_enc = _flags(save_memory_global_encoder, n, "save_memory_global_encoder")
        mem_dec = _flags(save_memory_global_decoder, n, "save_memory_global_decoder")
        mem_ker = _flags(save_memory_ker, n, "save_memory_ker")
        ker_layers, ker_blocks = list(enc_ker_layers), list(baseblock_enc_ker)
        enc_ch_max, enc_ch_mid = [c, 2 * c, 4 * c], [cm, 2 * cm, 4 * cm]

        def stages(make: Callable[[int], nn.Module]) -> nn.ModuleList:
            return nn.ModuleList(make(i) for i in range(n))

        def later(make: Callable[[int], nn.Module]) -> nn.ModuleList:
            return nn.ModuleList(nn.Identity() if i == 0 else make(i) for i in range(n))

        self.patch_embed_maxs = stages(lambda i: ImageEmbed(in_chans, c, **dd))
        self.patch_embed_mids = stages(lambda i: ImageEmbed(in_chans, cm, **dd))
        self.patch_embed_maxs2 = later(lambda i: nn.Conv2d(2 * c, c, 1, **dd))
        self.patch_embed_mids2 = later(lambda i: nn.Conv2d(2 * dims[2], dims[2], 1, **dd))
        self.subnets_max = stages(
            lambda i: UNetColumn(
                "encoder", enc_ch_max, enc_max[i], blk_enc_max[i], mem_enc[i], d_state=d_state, **dd
            )
        )
        self.down_max1 = stages(lambda i: ConvDown(c, cm, **dd))
        self.down_max2 = stages(lambda i: ConvDown(2 * c, 2 * cm, **dd))
        self.down_max3 = stages(lambda i: ConvDown(4 * c, 4 * cm, **dd))
        self.subnets_mid = stages(
            lambda i: UNetColumn(
                "mid_encoder",
                enc_ch_mid,
                enc_mid[i],
                blk_enc_mid[i],
                mem_enc[i],
                d_state=d_state,
                **dd,
            )
        )
        self.subdenets_mid = stages(
            lambda i: UNetColumn(
                "decoder",
                enc_ch_mid[::-1],
                dec_mid[i],
                blk_dec_mid[i],
                mem_dec[i],
                d_state=d_state,
                **dd,
            )
        )
        self.output_mids = stages(lambda i: nn.Conv2d(cm, in_chans, 3, padding=1, **dd))
        self.mid_kernel_estimator = stages(
            lambda i: FourierKernelEstimator(
                cm, dims_ker[1], ker_layers, ker_blocks, i == 0, mem_ker[i], in_chans, d_state, **dd
            )
        )
        self.down_mid2max = stages(lambda i: ConvDown(cm, 4 * c, **dd))
        self.fusd_max_2 = stages(lambda i: nn.Conv2d(8 * c, 4 * c, 1, **dd))
        self.subdenets_max = stages(
            lambda i: UNetColumn(
                "decoder",
                enc_ch_max[::-1],
                dec_max[i],
                blk_dec_max[i],
                mem_dec[i],
                d_state=d_state,
                **dd,
            )
        )
        self.output_maxs = stages(lambda i: nn.Conv2d(c, in_chans, 3, padding=1, **dd))
        self.kernel_estimator = stages(
            lambda i: FourierKernelEstimator(
                c, dims_ker[0], ker_layers, ker_blocks, i == 0, mem_ker[i], in_chans, d_state, **dd
            )
        )
        self.num_features = c
        self.feature_info = [
            dict(num_chs=ch, reduction=2**lvl, module=f"subnets_max.0.level{lvl}")
            for lvl, ch in enumerate(enc_ch_max)
        ]

    # ---------------------------------------------------------------------------------------
    # timm's model API

    def get_classifier(self) -> nn.Module:
        """The final head: the last full-resolution FKE's 3x3 conv (predicts the blur pattern)."""
        return self.kernel_estimator[-1].end_feature1 if not self.pruned else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if num_classes != self.in_chans:
            raise ValueError(
                f"DeepRFTv2 restores images: its heads predict in_chans={self.in_chans} "
                f"channels (output = input + prediction), got num_classes={num_classes}"
            )

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^patch_embed_maxs\.0", blocks=r"^(\w+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Run every column reversibly (activation memory independent of depth) or none."""
        for module in self.modules():
            if isinstance(module, ReversibleColumn):
                module.save_memory = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()  # the official recipe decays every parameter (AdamW, basicsr)

    # ---------------------------------------------------------------------------------------
    # The network

    def _check_input(self, x: Tensor) -> None:
        if not torch.jit.is_scripting():
            check_in_chans(self, x)
        check_image_size(x)
        if self.pruned:
            raise RuntimeError(
                "this DeepRFTv2 was pruned to its encoder taps (forward_intermediates)"
            )

    def _stages(self, x0: Tensor, x1: Tensor, taps: list[Tensor] | None = None) -> dict[str, Any]:
        """Both stages on the image x0 and its half-scale x1 (images, features, last OTFs)."""
        e_max: list[Tensor | None] = [None, None, None]  # level 1, level 2, latent
        d_max: Tensor | None = None
        e_mid: list[Tensor | None] = [None, None, None]
        d_mid: Tensor | None = None
        ker_max: list[Tensor | None] = [None] * self.kernel_estimator[0].subnets_ker.num_levels
        ker_mid: list[Tensor | None] = [None] * self.mid_kernel_estimator[0].subnets_ker.num_levels
        feat_max = feat_mid = otf = None
        full: list[Tensor] = []
        mid: list[Tensor] = []
        for i in range(self.num_stages):
            emb = self.patch_embed_maxs[i](x0)
            if i > 0:
                emb = self.patch_embed_maxs2[i](torch.cat([emb, feat_max], dim=1))
            e_max = self.subnets_max[i](emb, e_max)
            if taps is not None and i == 0:
                taps.extend(e_max)
            emb = self.patch_embed_mids[i](x1)
            if i > 0:
                emb = self.patch_embed_mids2[i](torch.cat([emb, feat_mid], dim=1))
            sides = [
                self.down_max1[i](e_max[0]),
                self.down_max2[i](e_max[1]),
                self.down_max3[i](e_max[2]),
            ]
            e_mid = self.subnets_mid[i](emb, e_mid, sides)
            # decoder column: input the latent, states (level 2, level 1, output)
            e2, e1, d_mid = self.subdenets_mid[i](e_mid[2], [e_mid[1], e_mid[0], d_mid])
            mid.append(self.output_mids[i](d_mid) + x1)
            img, feat_mid, ker_mid, _ = self.mid_kernel_estimator[i](d_mid, x1, ker_mid)
            mid.append(img)
            e_mid = [e1, e2, e_mid[2]]
            latent = self.fusd_max_2[i](
                torch.cat([self.down_mid2max[i](feat_mid), e_max[2]], dim=1)
            )
            e2, e1, d_max = self.subdenets_max[i](latent, [e_max[1], e_max[0], d_max])
            full.append(self.output_maxs[i](d_max) + x0)
            img, feat_max, ker_max, otf = self.kernel_estimator[i](d_max, x0, ker_max)
            full.append(img)
            e_max = [e1, e2, latent]
        return dict(full=full, mid=mid, feature=feat_max, otf=otf)

    def forward_heads(self, x: Tensor) -> dict[str, Tensor]:
        """Every image the official code produces: full resolution `spatial1, fke1, spatial2,
        fke2` (the official `img` list, one spatial + one FKE image per stage), then the
        half-resolution `spatial1_mid, fke1_mid, spatial2_mid, fke2_mid` (the mid heads in
        image space: the half-scale input `pyramid_down(x)` added)."""
        self._check_input(x)
        out = self._stages(x, pyramid_down(x))
        return self._name_heads(out)

    def _name_heads(self, out: dict[str, Any]) -> dict[str, Tensor]:
        heads: dict[str, Tensor] = {}
        for suffix, images in (("", out["full"]), ("_mid", out["mid"])):
            for i, img in enumerate(images):
                heads[f"{('spatial', 'fke')[i % 2]}{i // 2 + 1}{suffix}"] = img
        return heads

    def forward_features(self, x: Tensor) -> Tensor:
        """The last FKE's fused feature F_dk (N, dims[0], H, W); `model(x) = x +
        forward_head(forward_features(x))`. Pruned: the last kept encoder map."""
        if self.pruned:
            return self._encoder_taps(x)[-1]
        self._check_input(x)
        return self._stages(x, pyramid_down(x))["feature"]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The blur pattern predicted from F_dk (the residual, without the blurry input)."""
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: Tensor) -> Tensor:
        """The final deblurred image: the last stage's FKE output (N, in_chans, H, W)."""
        self._check_input(x)
        return self._stages(x, pyramid_down(x))["full"][-1]

    # ---------------------------------------------------------------------------------------
    # Features (timm): the first stage's full-resolution encoder levels, strides 1, 2, 4

    def _encoder_taps(self, x: Tensor) -> list[Tensor]:
        if not torch.jit.is_scripting():
            check_in_chans(self, x)
        check_image_size(x)
        column = self.subnets_max[0]
        return column(self.patch_embed_maxs[0](x), [None] * column.num_levels)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage-1 max-encoder maps (feature_info) for `indices`, and forward_features."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r}: only 'NCHW' is supported")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        if intermediates_only or stop_early or self.pruned:
            taps = self._encoder_taps(x)
            intermediates = [taps[i] for i in take_indices]
            if intermediates_only:
                return intermediates
            return taps[max_index] if stop_early else self.forward_features(x), intermediates
        self._check_input(x)
        taps: list[Tensor] = []
        out = self._stages(x, pyramid_down(x), taps)
        return out["feature"], [taps[i] for i in take_indices]

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep the stage-1 max encoder up to the last of `indices`; everything else goes
        (prune_head, or a level dropped: the rest of the network needs every level)."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        if prune_head or max_index < len(self.feature_info) - 1:
            keep = {"patch_embed_maxs", "subnets_max"}
            for name, _ in list(self.named_children()):
                if name not in keep:
                    setattr(self, name, nn.ModuleList())
            self.patch_embed_maxs = self.patch_embed_maxs[:1]
            self.subnets_max = self.subnets_max[:1]
            self.subnets_max[0].truncate(max_index + 1)
            self.feature_info = self.feature_info[: max_index + 1]
            self.num_features = self.feature_info[-1]["num_chs"]
            self.num_classes = 0
            self.pruned = True
        return take_indices

    # ---------------------------------------------------------------------------------------
    # Inference helpers

    @torch.no_grad()
    def forward_tiled(self, x: Tensor, tile: int = 512, overlap: int = 128) -> Tensor:
        """`forward` by overlapping tiles, for images too large for one pass (batch 1).

        Like the official `sub_image` evaluation: the half-scale image is built on the whole
        image and cut like the tiles; tiles start every `tile - overlap` pixels, the last one
        ends at the border; outputs are blended with linear ramps over the overlaps. A tile
        that covers the image gives exactly `forward`. tile, overlap: multiples of 8.
        """
        self._check_input(x)
        if x.shape[0] != 1:
            raise ValueError(f"forward_tiled takes one image (batch 1), got batch {x.shape[0]}")
        if tile < _STRIDE or tile % _STRIDE or overlap % _STRIDE or not 0 <= overlap < tile:
            raise ValueError(
                f"tile={tile}, overlap={overlap}: both must be multiples of {_STRIDE}, with "
                "0 <= overlap < tile"
            )
        h, w = x.shape[-2:]
        x1 = pyramid_down(x)
        rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
        th, tw = min(tile, h), min(tile, w)
        out = torch.zeros_like(x)
        weight = torch.zeros(1, 1, h, w, dtype=x.dtype, device=x.device)
        for i in rows:
            wi = ramp(h, i, rows, th, x.dtype, x.device)
            for j in cols:
                wj = ramp(w, j, cols, tw, x.dtype, x.device)
                part = self._stages(
                    x[..., i : i + th, j : j + tw],
                    x1[..., i // 2 : (i + th) // 2, j // 2 : (j + tw) // 2],
                )["full"][-1]
                wt = wi[:, None] * wj[None, :]
                out[..., i : i + th, j : j + tw] += part * wt
                weight[..., i : i + th, j : j + tw] += wt
        return out / weight

    @torch.no_grad()
    def estimated_kernels(self, x: Tensor, normalize: bool = True) -> Tensor:
        """The final full-resolution FKE's kernels as images (the official `get_ker`):
        k = irfft2(K) per channel, shifted so the origin is at the centre, cut to 65x65
        around it (zeros outside a smaller image); (N, dims[0], 65, 65). normalize: each kernel
        min-max scaled to [0, 1] for display (constant kernels give 0)."""
        self._check_input(x)
        otf = self._stages(x, pyramid_down(x))["otf"]
        h, w = x.shape[-2:]
        psf = torch.fft.ifftshift(torch.fft.irfft2(otf, norm="backward"), dim=(-2, -1))
        k = KERNEL_SIZE
        canvas = psf.new_zeros(*psf.shape[:-2], k, k)
        # the origin sits at (h // 2, w // 2) after the shift; centre it in the canvas
        top, left = h // 2 - k // 2, w // 2 - k // 2
        src_t, src_l = max(top, 0), max(left, 0)
        src_b, src_r = min(top + k, h), min(left + k, w)
        canvas[..., src_t - top : src_b - top, src_l - left : src_r - left] = psf[
            ..., src_t:src_b, src_l:src_r
        ]
        if not normalize:
            return canvas
        low = canvas.amin(dim=(-2, -1), keepdim=True)
        span = canvas.amax(dim=(-2, -1), keepdim=True) - low
        return torch.where(
            span > 0, (canvas - low) / span.clamp_min(1e-12), torch.zeros_like(canvas)
        )


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: DeepRFTv2) -> dict[str, Tensor]:
    """Load a basicsr checkpoint (`{"params": ...}` or `{"params_ema": ...}`, keys
    `global_model.*`) or a plain state_dict in either key layout."""
    for wrapper in ("params_ema", "params", "state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.").removeprefix("global_model.")
        out[key] = value
    check_state_dict_fits(
        out,
        model,
        hint_keys="a checkpoint of another configuration (depths, block types, stages)?",
        hint_shapes="another width: create the model with width= (or dims=, dims_ker=, num_ker=) "
        "of the checkpoint",
    )
    return out


def _create_deeprftv2(variant: str, pretrained: bool = False, **kwargs: Any) -> DeepRFTv2:
    return build_model(
        DeepRFTv2,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2)),
        **dict(VARIANT_ARGS[variant], **kwargs),
    )


# Variant -> constructor arguments: the official GoPro configuration (b), and the same network
# at width 16 (s: the reduced width the spec measures, 3,626,232 parameters; the registry-wide
# test suites run on it). Other widths: width=.
VARIANT_ARGS: dict[str, dict[str, Any]] = {"deeprftv2_b": dict(), "deeprftv2_s": dict(width=16)}


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": -1,  # an image-to-image model: no classifier for timm to resize
        "input_size": (3, 256, 256),
        "min_input_size": (3, 8, 8),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "mean": (0.0, 0.0, 0.0),  # images in [0, 1], no normalisation (basicsr)
        "std": (1.0, 1.0, 1.0),
        "first_conv": ("patch_embed_maxs.0.proj", "patch_embed_mids.0.proj"),
        "classifier": None,
        "license": "unknown",
        "paper_ids": "arXiv:2511.21132",
        "paper_name": "DeepRFTv2: Kernel-level Learning for Image Deblurring",
        "origin_url": "https://github.com/INVOKERer/DeepRFTv2",
        **kwargs,
    }


# No released weights: load a local official checkpoint with pretrained_cfg_overlay=dict(file=PATH).
default_cfgs = generate_default_cfgs({"deeprftv2_b": _cfg(), "deeprftv2_s": _cfg()})


@register_model
def deeprftv2_b(pretrained: bool = False, **kwargs: Any) -> DeepRFTv2:
    return _create_deeprftv2("deeprftv2_b", pretrained, **kwargs)


@register_model
def deeprftv2_s(pretrained: bool = False, **kwargs: Any) -> DeepRFTv2:
    return _create_deeprftv2("deeprftv2_s", pretrained, **kwargs)
