"""OFA-KD exit branches: a student stage's feature -> logits, trained to match the teacher.

Sizes and layers are those of the official code (Hao840/OFAKD `distillers/ofa.py`, `utils.py`):

- `ConvBranch` (CNN students): `4 - stage` SepConvs, each halving the resolution and doubling
  the channels, the last one producing `width = max(student final dim, teacher final dim)`; at
  stage 4 one biased 1x1 conv to `width` instead. Then global average pooling and a Linear.
- `TokenBranch` (ViT / Swin / MLP students): Swin patch merging down to a 7x7 grid, the prefix
  (class / distillation / register) tokens kept aside and put back in front, `max(4 - stage, 1)`
  ViT blocks (4 heads) at the student's final dim, the class token (or the token mean), Linear.

Differences, none of which the official sizes at 224x224 reach: an odd grid is padded before a
merge (timm's `PatchMerging`; the official one asserts even sizes), and a stage whose grid needs
no merge but whose width is not the student's final dim starts with a bias-free Linear to it
(the official branch would fail there, e.g. Swin's stage 2 on small inputs).
"""

from __future__ import annotations

import math

import torch
from timm.layers import trunc_normal_
from timm.models.swin_transformer import PatchMerging
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ops import DepthwiseConv2d

__all__ = ["ConvBranch", "SepConv", "TokenBranch", "init_branch_weights"]

# the official branches merge token grids down to 7x7 (49 tokens), the grid of a stride-32 map
# at 224x224
FINAL_GRID = 7
BRANCH_HEADS = 4


class SepConv(nn.Sequential):
    """Two depthwise-separable 3x3 convs (BN + ReLU after each pointwise one); the first
    depthwise conv has stride 2. `in_chs -> out_chs`, resolution halved."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__(
            DepthwiseConv2d(in_chs, 3, stride=2, padding=1, bias=False),
            nn.Conv2d(in_chs, in_chs, 1, bias=False),
            nn.BatchNorm2d(in_chs),
            nn.ReLU(),
            DepthwiseConv2d(in_chs, 3, padding=1, bias=False),
            nn.Conv2d(in_chs, out_chs, 1, bias=False),
            nn.BatchNorm2d(out_chs),
            nn.ReLU(),
        )


class ConvBranch(nn.Module):
    """(B, in_chs, H, W) -> (B, num_classes). `num_downsamples = 4 - stage` SepConvs with
    channels in_chs -> 2 in_chs -> ... -> width, or one biased 1x1 conv when it is 0."""

    def __init__(self, in_chs: int, num_downsamples: int, width: int, num_classes: int) -> None:
        super().__init__()
        if num_downsamples == 0:
            self.proj = nn.Conv2d(in_chs, width, 1)
        else:
            chs = [in_chs * 2**i for i in range(num_downsamples)] + [width]
            self.proj = nn.Sequential(
                *(SepConv(c, o) for c, o in zip(chs[:-1], chs[1:], strict=True))
            )
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.proj(x).mean(dim=(2, 3)))


class TokenBranch(nn.Module):
    """(B, in_dim, H, W) patch tokens (+ (B, P, in_dim) prefix tokens) -> (B, num_classes).

    `grid` is (H, W) of the stage; `dim` the student's final width; `class_token` reads out the
    first prefix token, otherwise the mean of the patch tokens.
    """

    def __init__(
        self,
        in_dim: int,
        grid: tuple[int, int],
        dim: int,
        num_blocks: int,
        num_classes: int,
        num_prefix_tokens: int = 0,
        class_token: bool = False,
    ) -> None:
        super().__init__()
        if dim % BRANCH_HEADS:
            raise ValueError(
                f"the token branch runs {BRANCH_HEADS}-head ViT blocks at the student's final "
                f"dim, which must be divisible by {BRANCH_HEADS}; got {dim}"
            )
        if num_prefix_tokens and in_dim != dim:
            raise ValueError(
                f"prefix tokens of width {in_dim} cannot join merged tokens of width {dim}"
            )
        if class_token and not num_prefix_tokens:
            raise ValueError("class_token=True needs num_prefix_tokens >= 1")
        self.num_prefix_tokens, self.class_token = num_prefix_tokens, class_token
        # int() truncates towards zero like the official `int(np.log2(grid / 7))`
        num_merges = max(int(math.log2(min(grid) / FINAL_GRID)), 0)
        layers: list[nn.Module] = []
        for i in range(num_merges):
            layers.append(PatchMerging(in_dim if i == 0 else dim, dim))
            # GELU after every merge but the last of several (the official rule)
            layers.append(nn.GELU() if i == 0 or i < num_merges - 1 else nn.Identity())
        if not layers and in_dim != dim:
            layers.append(nn.Linear(in_dim, dim, bias=False))
        self.merge = nn.Sequential(*layers)  # (B, H, W, C) -> (B, H', W', dim)
        # nn.LayerNorm (eps 1e-5): the default norm of timm 0.6's Block, which the official ran
        self.blocks = nn.Sequential(
            *(Block(dim, BRANCH_HEADS, norm_layer=nn.LayerNorm) for _ in range(num_blocks))
        )
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor, prefix: Tensor | None = None) -> Tensor:
        x = self.merge(x.permute(0, 2, 3, 1)).flatten(1, 2)  # (B, C, H, W) -> (B, H'W', dim)
        if self.num_prefix_tokens:
            if prefix is None or prefix.shape[1] != self.num_prefix_tokens:
                got = None if prefix is None else tuple(prefix.shape)
                raise ValueError(
                    f"this branch expects {self.num_prefix_tokens} prefix tokens, got {got}"
                )
            x = torch.cat([prefix, x], dim=1)
        x = self.blocks(x)
        x = x[:, 0] if self.class_token else x[:, self.num_prefix_tokens :].mean(dim=1)
        return self.head(x)


def init_branch_weights(module: nn.Module) -> None:
    """The official initialisation: convs kaiming-normal (fan_out, ReLU), BN weight 1 / bias 0,
    Linears (those in the ViT blocks included) truncated normal std 0.02 with zero bias;
    LayerNorms and conv biases keep PyTorch's defaults."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
