"""NAFNet's block (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022) and the
EVSS / NAFEVSBlock blocks DeepRFTv2 builds from it (EVSSM, Kong et al., CVPR 2025): a
selective scan over the raster order of a feature map.

Attribute names are the official ones (NAFNet's `conv1..conv5`, `sca.1`, `norm1/2`, `beta`,
`gamma`; EVSSM's `in_proj`, `conv2d`, `x_proj_weight`, `x_conv`, `dt_projs_*`, `A_logs`, `Ds`,
`out_norm`, `out_proj`), so official checkpoints load without renaming.

NAFNet's LayerNorm2d (a custom autograd function: per-pixel mean and biased variance over the
channels, eps 1e-6) is timm's `LayerNorm2d(eps=1e-6)`, the same function. Depthwise convs are
`ops.DepthwiseConv2d` (the 1-D one along the scan, too: a (1, k) kernel on an (N, C, 1, L) view,
its weight kept (C, 1, k) like `nn.Conv1d`'s); the scan is `ops.selective_scan`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import Tensor

from ops import DepthwiseConv2d, dwconv2d, selective_scan

__all__ = ["EVSS", "EVSS2D", "NAFBlock", "NAFEVSBlock", "simple_gate"]


def simple_gate(x: Tensor) -> Tensor:
    """NAFNet's SimpleGate: split the channels in two halves and multiply them."""
    x1, x2 = x.chunk(2, dim=1)
    return x1 * x2


class NAFBlock(nn.Module):
    """NAFNet block: LN -> 1x1 (x2) -> DW3x3 -> gate -> SCA -> 1x1, then LN -> 1x1 (x2) -> gate ->
    1x1; both residual with zero-initialised per-channel scales beta, gamma."""

    def __init__(
        self,
        c: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        dw = 2 * c
        self.conv1 = nn.Conv2d(c, dw, 1, **dd)
        self.conv2 = DepthwiseConv2d(dw, 3, padding=1, **dd)
        self.conv3 = nn.Conv2d(dw // 2, c, 1, **dd)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1, **dd))
        self.conv4 = nn.Conv2d(c, 2 * c, 1, **dd)
        self.conv5 = nn.Conv2d(c, c, 1, **dd)
        self.norm1 = LayerNorm2d(c, eps=1e-6, **dd)
        self.norm2 = LayerNorm2d(c, eps=1e-6, **dd)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1, **dd))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1, **dd))

    def _gated(self, inp: Tensor) -> Tensor:  # LN -> 1x1 -> DW3x3 -> gate: (N, C, H, W)
        return simple_gate(self.conv2(self.conv1(self.norm1(inp))))

    def _ffn(self, y: Tensor) -> Tensor:  # the second residual half
        return y + self.conv5(simple_gate(self.conv4(self.norm2(y)))) * self.gamma

    def forward(self, inp: Tensor) -> Tensor:
        x = self._gated(inp)
        return self._ffn(inp + self.conv3(x * self.sca(x)) * self.beta)


class DepthwiseConv1d(nn.Conv1d):
    """A depthwise `nn.Conv1d` (same parameters and keys) computed by `ops.dwconv2d`."""

    def forward(self, x: Tensor) -> Tensor:  # (N, C, L)
        weight = self.weight.unsqueeze(2)  # (C, 1, k) -> (C, 1, 1, k)
        return dwconv2d(x.unsqueeze(2), weight, self.bias, padding=(0, self.padding[0])).squeeze(2)


class EVSS2D(nn.Module):
    """EVSSM's single-direction visual state space module on (N, C, H, W).

    in_proj (C -> 2 x 2C) gives x and the gate z; x: DW3x3 + GELU, then per pixel a projection
    to (dt_rank + 2 d_state) values smoothed along the raster sequence by a depthwise 1-D conv
    (k 7); the selective scan runs over the H*W raster order; LayerNorm, times GELU(z), out_proj.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_state = d_state
        self.d_inner = 2 * d_model
        self.dt_rank = math.ceil(d_model / 16)
        proj = self.dt_rank + 2 * d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False, **dd)
        self.conv2d = DepthwiseConv2d(self.d_inner, 3, padding=1, **dd)
        self.x_proj_weight = nn.Parameter(torch.empty(1, proj, self.d_inner, **dd))
        self.x_conv = DepthwiseConv1d(proj, proj, 7, padding=3, groups=proj, **dd)
        self.dt_projs_weight = nn.Parameter(torch.empty(1, self.d_inner, self.dt_rank, **dd))
        self.dt_projs_bias = nn.Parameter(torch.empty(1, self.d_inner, **dd))
        self.A_logs = nn.Parameter(torch.empty(self.d_inner, d_state, **dd))
        self.Ds = nn.Parameter(torch.empty(self.d_inner, **dd))
        self.out_norm = nn.LayerNorm(self.d_inner, **dd)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False, **dd)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Mamba's initialisation: S4D-real A, D = 1, dt bias = softplus^-1 of a log-uniform
        step in [1e-3, 0.1], dt and x projections uniform like nn.Linear."""
        if self.A_logs.is_meta:
            return
        d_inner, rank = self.d_inner, self.dt_rank
        bound = d_inner**-0.5
        self.x_proj_weight.uniform_(-bound, bound)
        self.dt_projs_weight.uniform_(-(rank**-0.5), rank**-0.5)
        dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        dt = dt.clamp(min=1e-4)
        self.dt_projs_bias.copy_((dt + torch.log(-torch.expm1(-dt))).unsqueeze(0))
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32).expand(d_inner, -1)
        self.A_logs.copy_(torch.log(a))
        self.Ds.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        xz = self.in_proj(x.permute(0, 2, 3, 1))  # (N, H, W, 4C)
        u, z = xz.chunk(2, dim=-1)
        u = F.gelu(self.conv2d(u.permute(0, 3, 1, 2).contiguous())).flatten(2)  # (N, 2C, L)
        x_dbl = self.x_conv(torch.einsum("ndl,cd->ncl", u, self.x_proj_weight[0]))
        dts, bs, cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=1)
        dts = torch.einsum("nrl,dr->ndl", dts, self.dt_projs_weight[0])
        # the scan runs in float32 (as officially) unless the model runs in float64
        f = torch.float64 if u.dtype == torch.float64 else torch.float32
        y = selective_scan(
            u.to(f),
            dts.contiguous().to(f),
            -torch.exp(self.A_logs.to(f)),
            bs.to(f).unsqueeze(1),  # one group: (N, 1, d_state, L)
            cs.to(f).unsqueeze(1),
            self.Ds.to(f),
            delta_bias=self.dt_projs_bias.to(f).view(-1),
            delta_softplus=True,
        )
        y = self.out_norm(y.transpose(1, 2).reshape(n, h, w, -1)) * F.gelu(z)
        return self.out_proj(y).permute(0, 3, 1, 2)


class NAFEVSBlock(NAFBlock):
    """A NAFBlock whose gated features also feed EVSS2D: mix = lamb_l * local + lamb_g * global.

    The input is transformed first and the result is NOT transformed back (as officially):
    block index idx even -> H and W transposed, odd -> both axes flipped, -1 -> neither. So the
    scan direction alternates, and an even number of blocks restores the orientation.
    """

    def __init__(
        self,
        c: int,
        idx: int = 0,
        d_state: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__(c, **dd)
        self.idx = idx
        self.norm_mamba = LayerNorm2d(c, eps=1e-6, **dd)
        self.attn = EVSS2D(c, d_state=d_state, **dd)
        self.lamb_l = nn.Parameter(torch.ones(1, c, 1, 1, **dd))
        self.lamb_g = nn.Parameter(torch.zeros(1, c, 1, 1, **dd))
        self.alpha = nn.Parameter(torch.ones(1, c, 1, 1, **dd))

    def forward(self, inp: Tensor) -> Tensor:
        if self.idx != -1:
            if self.idx % 2 == 1:
                inp = torch.flip(inp, dims=(-2, -1))
            else:
                inp = inp.transpose(-2, -1)
            inp = inp.contiguous()
        x = self._gated(inp)
        local = self.conv3(x * self.sca(x))
        glob = self.attn(self.norm_mamba(x)) * (self.alpha + 1.0)
        return self._ffn(inp + (local * self.lamb_l + glob * self.lamb_g) * self.beta)


class EVSS(nn.Module):
    """x + EVSS2D(LayerNorm2d(x)): the Fourier Kernel Estimator's block (no FFN, no scale)."""

    def __init__(
        self,
        dim: int,
        d_state: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-6, **dd)
        self.attn = EVSS2D(dim, d_state=d_state, **dd)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.attn(self.norm1(x))
