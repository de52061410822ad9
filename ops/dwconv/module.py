"""`DepthwiseConv2d`: the nn.Conv2d that every depthwise conv in the zoo is."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .._geometry import pair
from .dispatch import check_backend
from .functional import dwconv2d, same_padding

# fx symbolic tracing (timm's feature extraction, torchvision's create_feature_extractor) keeps
# the call below as one node instead of tracing into dwconv2d's Python-level argument checks
# (fx.wrap patches this module's global name, so it is declared where the call is).
torch.fx.wrap("dwconv2d")


class DepthwiseConv2d(nn.Conv2d):
    """`nn.Conv2d(channels, channels, kernel_size, groups=channels)` computed by `dwconv2d`.

    Same parameters and state_dict keys as the nn.Conv2d it replaces, so checkpoints of models
    written with nn.Conv2d load unchanged. `padding="same"` is resolved to integers here.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = "same",
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
        backend: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        kernel_hw = pair(kernel_size, "kernel_size")
        dilation_hw = pair(dilation, "dilation")
        if isinstance(padding, str):
            padding = same_padding(kernel_hw, dilation_hw, padding)
        if backend is not None:
            check_backend(backend)
        super().__init__(
            channels,
            channels,
            kernel_hw,
            stride=stride,
            padding=padding,
            dilation=dilation_hw,
            groups=channels,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.backend = backend
        # TorchScript calls the registered op directly and needs plain typed attributes.
        self._padding_list: list[int] = [int(p) for p in self.padding]
        self._dilation_list: list[int] = [int(d) for d in self.dilation]
        self._strided: bool = tuple(self.stride) != (1, 1)
        self._script_backend: str = "auto" if backend is None else backend

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            if self._strided:
                return self._conv_forward(x, self.weight, self.bias)
            return torch.ops.zoo.dwconv2d(
                x,
                self.weight,
                self.bias,
                self._padding_list,
                self._dilation_list,
                self._script_backend,
            )
        return dwconv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.backend
        )

    def extra_repr(self) -> str:
        backend = "" if self.backend is None else f", backend={self.backend}"
        return super().extra_repr() + backend
