"""DeepRFTv2's reversible U-Net columns and its Fourier Kernel Estimator (FKE), with the
official attribute names (`alpha{l}`, `level{l}.fusion.{down,concat_conv,up}`,
`level{l}.blocks`; `feature_extract`, `intro`, `subnets_ker`, `end_ker1`, `deblur_feature1`,
`end_feature1`), so official checkpoints keep their keys. Used by zoo/models/deeprftv2.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.layers import LayerNorm2d
from torch import Tensor

from .nafnet import EVSS, NAFBlock, NAFEVSBlock
from .reversible import ReversibleColumn

__all__ = ["ConvDown", "FourierKernelEstimator", "UNetColumn"]


def _make_blocks(kind: str, c: int, n: int, d_state: int, dd: dict[str, Any]) -> nn.Sequential:
    if kind == "naf":
        return nn.Sequential(*[NAFBlock(c, **dd) for _ in range(n)])
    if kind == "NAFEVSBlock":
        return nn.Sequential(*[NAFEVSBlock(c, idx=i, d_state=d_state, **dd) for i in range(n)])
    if kind == "EVSS":
        return nn.Sequential(*[EVSS(c, d_state=d_state, **dd) for _ in range(n)])
    raise ValueError(f"unknown block type {kind!r}: expected 'naf', 'NAFEVSBlock' or 'EVSS'")


class ConvDown(nn.Module):
    """2x2 stride-2 conv, no bias (the official DownSample, mode 'conv')."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 2, 2, bias=False, device=device, dtype=dtype)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class ShuffleUp(nn.Module):
    """1x1 conv to 4x channels (no bias) + PixelShuffle(2) (the official 'conv1x1_shuffle')."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d(c_in, 4 * c_out, 1, bias=False, device=device, dtype=dtype)
        self.body = nn.Sequential(conv, nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class LevelFusion(nn.Module):
    """What a column level does to its input before (encoders) or after (decoders) its blocks;
    attributes as the official fusion modules: `down`, `concat_conv`, `up`."""

    def __init__(
        self,
        kind: str,
        level: int,
        channels: Sequence[int],
        fuse: bool,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.kind = kind
        c = channels[level]
        if kind in ("encoder", "mid_encoder") and level > 0:
            self.down = nn.Sequential(ConvDown(channels[level - 1], c, **dd))
        if kind == "mid_encoder":
            self.concat_conv = nn.Sequential(nn.Conv2d(2 * c, c, 1, **dd))
        if kind == "decoder" and level < len(channels) - 1:
            self.up = nn.Sequential(ShuffleUp(c, channels[level + 1], **dd))
        if kind == "kernel" and fuse and level < len(channels) - 1:
            self.down = nn.Sequential(nn.Conv2d(2 * c, c, 1, **dd))

    def forward(self, x: Tensor, side: Tensor | None) -> Tensor:
        if self.kind in ("encoder", "mid_encoder") and hasattr(self, "down"):
            x = self.down(x)
        if self.kind == "mid_encoder" and side is not None:
            x = self.concat_conv(torch.cat([x, side], dim=1))
        if self.kind == "kernel" and side is not None and hasattr(self, "down"):
            x = self.down(torch.cat([x, side], dim=1))
        if self.kind == "decoder" and hasattr(self, "up"):
            x = self.up(x)
        return x


class ColumnLevel(nn.Module):
    """One level of a column: encoders fuse then run their blocks, decoders the reverse."""

    def __init__(self, fusion: LevelFusion, blocks: nn.Sequential) -> None:
        super().__init__()
        self.fusion = fusion
        self.blocks = blocks

    def forward(self, x: Tensor, side: Tensor | None) -> Tensor:
        if self.fusion.kind == "decoder":
            return self.fusion(self.blocks(x), side)
        return self.blocks(self.fusion(x, side))


class UNetColumn(ReversibleColumn):
    """A reversible column: an encoder or decoder of a sub-U-Net, or the FKE's spectrum column.

    kind "encoder": levels at channels [C, 2C, 4C], each a 2x2 stride-2 conv (not level 0)
    then blocks; "mid_encoder": the same, then a 1x1 fusion with the max encoder's level
    (given as side input); "decoder": channels [4C, 2C, C], blocks then a 1x1 + pixel-shuffle
    up (not the last level), alphas of the level outputs; "kernel": constant width, a 1x1
    fusion with the previous stage's next-level state (`fuse`, stages after the first).
    """

    SIDES = {"encoder": "none", "mid_encoder": "given", "decoder": "none", "kernel": "next"}

    def __init__(
        self,
        kind: str,
        channels: Sequence[int],
        layers: Sequence[int],
        blocks: Sequence[str],
        save_memory: bool,
        fuse: bool = False,
        d_state: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        n = len(channels)
        super().__init__(n, self.SIDES[kind], save_memory)
        for lvl in range(n):
            out_c = channels[min(lvl + 1, n - 1)] if kind == "decoder" else channels[lvl]
            self.register_parameter(
                f"alpha{lvl}", nn.Parameter(torch.full((1, out_c, 1, 1), 0.5, **dd))
            )
        for lvl in range(n):
            fusion = LevelFusion(kind, lvl, channels, fuse, **dd)
            body = _make_blocks(blocks[lvl], channels[lvl], layers[lvl], d_state, dd)
            setattr(self, f"level{lvl}", ColumnLevel(fusion, body))


class FeatureProjections(nn.Module):
    """The FKE's two 1x1 projections of the decoder feature (`inp_feature: feature`)."""

    def __init__(
        self,
        c: int,
        c_ker: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.intro_inp = nn.Sequential(nn.Conv2d(c, c_ker, 1, bias=False, **dd))
        self.intro_deconv = nn.Sequential(nn.Conv2d(c, c, 1, bias=False, **dd))


class SpectrumEmbed(nn.Module):
    """1x1 conv of [Re; Im] of a spectrum (the official GetPSF's `ending`)."""

    def __init__(
        self,
        c_ker: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.ending = nn.Sequential(
            nn.Conv2d(2 * c_ker, c_ker, 1, bias=False, device=device, dtype=dtype)
        )

    def forward(self, spectrum: Tensor) -> Tensor:
        return self.ending(torch.cat([spectrum.real, spectrum.imag], dim=1))


class OTFHead(nn.Module):
    """LayerNorm2d + 1x1 conv to 2 x num_ker channels = Re, Im of num_ker OTFs (EstOTF)."""

    def __init__(
        self,
        c_ker: int,
        num_ker: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.norm = LayerNorm2d(c_ker, eps=1e-6, **dd)
        self.ending = nn.Sequential(nn.Conv2d(c_ker, 2 * num_ker, 1, **dd))

    def forward(self, x: Tensor) -> Tensor:
        real, imag = self.ending(self.norm(x)).chunk(2, dim=1)
        return torch.complex(real, imag)


class FourierKernelEstimator(nn.Module):
    """FKE: out = B + Conv3x3(Conv1x1[irfft2(rfft2(W_b d) * K); d]),
    K = OTFHead(column(Conv1x1[Re; Im] rfft2(W_a d))), FFTs with norm 'backward'."""

    def __init__(
        self,
        c: int,
        c_ker: int,
        layers: Sequence[int],
        blocks: Sequence[str],
        first: bool,
        save_memory: bool,
        out_chans: int = 3,
        d_state: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.feature_extract = FeatureProjections(c, c_ker, **dd)
        self.intro = SpectrumEmbed(c_ker, **dd)
        self.subnets_ker = UNetColumn(
            "kernel", [c_ker] * len(layers), layers, blocks, save_memory, not first, d_state, **dd
        )
        self.end_ker1 = OTFHead(c_ker, c, **dd)
        self.deblur_feature1 = nn.Sequential(nn.Conv2d(2 * c, c, 1, bias=False, **dd))
        self.end_feature1 = nn.Sequential(nn.Conv2d(c, out_chans, 3, padding=1, **dd))

    def forward(
        self, d: Tensor, blurry: Tensor, states: list[Tensor | None]
    ) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
        """-> (image, fused feature F_dk, column states, OTFs K)."""
        a = self.feature_extract.intro_inp(d)
        b = self.feature_extract.intro_deconv(d)
        r0 = self.intro(torch.fft.rfft2(a, norm="backward"))
        states = self.subnets_ker(r0, states)
        otf = self.end_ker1(states[-1])
        deconv = torch.fft.irfft2(torch.fft.rfft2(b, norm="backward") * otf, norm="backward")
        feature = self.deblur_feature1(torch.cat([deconv, d], dim=1))
        return self.end_feature1(feature) + blurry, feature, states, otf
