"""Sliding-window inference for image-to-image models: tile positions, linear-ramp blending
weights, and reflect padding to a size multiple, so a large image runs in bounded memory.

Tile positions follow basicsr's `grids` (the validation of NAFNet, DeepRFTv2, ...): start at
0, step `tile - overlap`, and the last tile is moved back to end exactly at the border. Each
tile's weight is a separable linear ramp over the parts it shares with its neighbours (1 in
its interior, falling towards 0 across an overlap), and the sum of the weighted tiles is divided
by the sum of the weights: the weights form a partition of unity wherever tiles overlap, so a
constant image is reproduced exactly whatever the tile positions, and a pixel covered by one
tile only gets that tile's value.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pad_to_multiple", "ramp", "tile_starts"]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length min(tile, size) covering [0, size) with `overlap`."""
    tile = min(tile, size)
    if tile == size:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


def ramp(length: int, start: int, starts: list[int], tile: int, dtype, device) -> Tensor:
    """1-D weight of the tile at `start` (all tiles of length `tile`, ordered by `starts`): a
    linear ramp (0, 1] over the overlap with the previous tile, [1, 0) over the next one's."""
    w = torch.ones(tile, dtype=dtype, device=device)
    i = starts.index(start)
    if i > 0:
        shared = starts[i - 1] + tile - start
        w[:shared] = torch.arange(1, shared + 1, dtype=dtype, device=device) / (shared + 1)
    if i < len(starts) - 1:
        shared = start + tile - starts[i + 1]
        down = torch.arange(shared, 0, -1, dtype=dtype, device=device) / (shared + 1)
        w[tile - shared :] = torch.minimum(w[tile - shared :], down)
    return w


def pad_to_multiple(x: Tensor, multiple: int = 8) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Reflect-pad (N, C, H, W) at the bottom and right to multiples of `multiple`, as basicsr's
    validation does; returns (padded, crop) where crop(y) cuts any (..., H', W') output with the
    padded size back to H x W (outputs at other scales are cut proportionally)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h >= h or pad_w >= w:
        # reflect padding needs more pixels than it adds; replicate what reflect cannot
        raise ValueError(
            f"pad_to_multiple: a {h}x{w} image is too small to reflect-pad to a multiple of "
            f"{multiple} (needs at least {pad_h + 1}x{pad_w + 1})"
        )
    padded = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x
    full_h, full_w = h + pad_h, w + pad_w

    def crop(y: Tensor) -> Tensor:
        yh, yw = y.shape[-2:]
        if yh < 1 or full_h % yh or full_w % yw or full_h // yh != full_w // yw:
            raise ValueError(
                f"crop: output size {yh}x{yw} is not a scale of the padded input {full_h}x{full_w}"
            )
        scale = full_h // yh
        return y[..., : -(-h // scale), : -(-w // scale)]

    return padded, crop
