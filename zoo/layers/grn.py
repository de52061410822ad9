"""Global Response Normalization (ConvNeXt V2, arXiv:2301.00808) with an optional bias.

timm's `GlobalResponseNorm` always carries a bias; re-parameterised models (UniRepLKNet's deploy
form) fold that bias into the next linear layer and need the layer without one. Parameter names
follow timm's layer, so its checkpoints map onto this one unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor


class GlobalResponseNorm(nn.Module):
    """out = x + bias + weight * x * N(x), N(x) = ||x||_HW / (mean_C ||x||_HW + eps).

    Args:
        dim: number of channels.
        eps: added to the channel mean of the spatial L2 norms.
        bias: whether the layer has the additive `bias` (False in deploy forms).
        channels_last: input is (N, H, W, C) if True, else (N, C, H, W).
    """

    def __init__(
        self,
        dim: int,
        eps: float = 1e-6,
        bias: bool = True,
        channels_last: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.eps = eps
        self.channels_last = channels_last
        self.channel_dim = -1 if channels_last else 1
        self.wb_shape = (1, 1, 1, -1) if channels_last else (1, -1, 1, 1)
        # zero init: the layer starts as the identity
        self.weight = nn.Parameter(torch.zeros(dim, **dd))
        self.bias = nn.Parameter(torch.zeros(dim, **dd)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        # L2 norm over H*W as one flattened dim: on CPU ~2x faster than reducing (H, W) together
        if self.channels_last:
            x_g = torch.linalg.vector_norm(x.flatten(1, 2), dim=1, keepdim=True).unsqueeze(1)
        else:
            x_g = torch.linalg.vector_norm(x.flatten(2), dim=2, keepdim=True).unsqueeze(-1)
        x_n = x_g / (x_g.mean(dim=self.channel_dim, keepdim=True) + self.eps)
        # (weight * N(x) + 1) * x + bias: the per-(sample, channel) scale is formed on the small
        # tensor first, so the full-size tensor is read once
        scale = torch.addcmul(torch.ones_like(x_n), self.weight.view(self.wb_shape), x_n)
        if self.bias is None:
            return x * scale
        return torch.addcmul(self.bias.view(self.wb_shape), x, scale)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}"
