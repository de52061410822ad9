"""Mask-free CUDA-core Triton kernels for the depthwise op over a zero-padded copy of the input:
the path of `ops.dwconv.triton` for forwards with many taps and for weight-gradients that the
tensor-core kernels (triton_tc.py: fp16/bf16 with wide kernels) do not take, in any dtype.

Notation as in `ops/dwconv/triton.py`. The launchers copy the input once into a buffer `xp`
that holds every element a tile can read, zeros outside the map, laid out so that output pixel
(oh, ow) reads `xp[oh + i dh, ow + j dw]` through tap (i, j) of the live window (taps that only
read padding are cut off first). The hot loops then run without masks or index arithmetic:

- `_slide_forward_kernel`: one output tile [TILE_H x TILE_W pixels, BLOCK_C channels] per
  program; a runtime loop over the tile's live kernel rows and over chunks of TAP_W taps, and
  inside it the chunk's taps unrolled at compile time, so each tap is one load at a constant
  offset from a pointer that steps once per chunk. The input-gradient is the same kernel on
  grad_out with the rotated kernel.
- `_slide_weight_grad_kernel`: one (channel block, kernel row, chunk of TAP_W taps, image share)
  per program; nested runtime loops over its images and output tiles (no divides per
  iteration) accumulate x * grad_out in registers, [taps, pixels, channels]; the pixels are
  summed once at the end into a deterministic fp32 workspace (SPLITS, C, rows, taps), summed
  over the splits after.

The column strides (1 in NCHW, C in channels_last) are compile-time constants, so the
channels_last forward is compiled once per channel count. Launch configurations come from a
per-shape table (FORWARD_TABLE, WEIGHT_GRAD_TABLE); the alternatives a GPU run should time are
FORWARD_CANDIDATES / WEIGHT_GRAD_CANDIDATES (`tools/benchmark_ops.py --device cuda
--slide-candidates`); the sm_90 report compiles every one. None of it has been timed on a GPU.

The copy costs one read and one write of the (padded) input; with k >= 5 the convolution does
2 k^2 FLOPs per element, so it is compute-bound there and the copy is a few per cent (it is
what the dispatcher in triton.py weighs: these kernels are used from `SLIDE_MIN_TAPS` taps up).
Accumulation is fp32 (fp64 for fp64). Under TRITON_INTERPRET=1 the same kernels run with tiles
that cover a whole small map (each tl op costs ~1 ms there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .._geometry import live_taps
from .._layout import is_channels_last
from .._triton import INTERPRETED as _INTERPRETED
from .._triton import jit as _jit
from .._triton import tl, triton

# Taps per compile-time unrolled chunk: larger chunks cut the pointer updates per tap, smaller
# ones the code size; 32 covers k = 31 in one chunk (kw = 129 takes 5 chunks of 26).
MAX_TAP_W = 32
# Below this many live taps the masked direct kernel (no copy) is used: the op is memory-bound.
SLIDE_MIN_TAPS = 25
_GPU_PROGRAMS = 4 * 132  # weight-grad splits aim at ~4 programs per H100 SM
_INT32_MAX = 2**31 - 1


# ----------------------------------------------------------------------------------------------
# Kernels


# NCHW: the output's column stride is passed as a runtime value (SYW = 0, syw not specialised
# to 1): a unit stride would let Triton vectorise the store by 4 pixels, a layout the tap loads
# (unaligned by their tap offset) do not share, and the accumulator would pass through shared
# memory once per chunk (sm_90 report, 1x129: 8 STS/LDS + 8 barriers per chunk iteration).
# channels_last: SYW = C, a compile-time constant like SXW (loads and store are both vectors
# along channels).
_jit_forward = _jit if triton is None else triton.jit(do_not_specialize=["syw"])


@_jit_forward
def _slide_forward_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    N, C, H, HO, WO, off_h,
    sxn, sxc, sxh, SXW: tl.constexpr,
    swc, swh, SWW: tl.constexpr,
    syn, syc, syh, syw, SYW: tl.constexpr,
    KH, dil_h, W_CHUNKS,
    HAS_BIAS: tl.constexpr, ACC: tl.constexpr, IDX: tl.constexpr, DIL_W: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_C: tl.constexpr, TAP_W: tl.constexpr,
):  # fmt: skip
    # The column strides of xp and of the weight (1, or C for channels_last) are compile-time
    # constants so that every tap's load sits at a constant offset from the chunk's pointers.
    # C is a multiple of BLOCK_C: no channel masks, and 16-byte vector loads along channels.
    # One grid axis (axis 0 allows 2^31 - 1 programs; axes 1-2 only 65535): output tiles
    # fastest, so neighbouring programs share halo rows in L2, then images, then channel blocks.
    pid = tl.program_id(0).to(IDX)
    tiles_w = (WO + TILE_W - 1) // TILE_W
    tiles = ((HO + TILE_H - 1) // TILE_H) * tiles_w
    pid_s = pid % tiles
    pid_n = ((pid // tiles) % N).to(tl.int64)
    pid_c = pid // tiles // N
    oh0 = (pid_s // tiles_w) * TILE_H
    ow0 = (pid_s % tiles_w) * TILE_W

    p = tl.arange(0, TILE_H * TILE_W).to(IDX)
    oh = oh0 + p // TILE_W
    ow = ow0 + p % TILE_W
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C).to(IDX)

    # Live kernel rows of this tile: padded row oh + i dh is input row oh + i dh + off_h.
    oh_last = tl.minimum(oh0 + TILE_H, HO) - 1
    i_lo = (tl.maximum(-off_h - oh_last, 0) + dil_h - 1) // dil_h
    i_hi = tl.minimum((tl.maximum(H - 1 - off_h - oh0, -1) + dil_h) // dil_h, KH)

    x_tile = x_ptr + pid_n * sxn + ((oh * sxh + ow * SXW)[:, None] + (c * sxc)[None, :])
    # The weight pointers span the tile's shape (every pixel row the same) so that the weight
    # load gets the layout of x; a [1, BLOCK_C] load gets a layout of its own and a shared-memory
    # conversion per tap. The duplicate loads of a thread are merged by the compiler (checked in
    # the SASS: one weight load per tap).
    if BLOCK_C == 1:
        w_chan = w_ptr + (c * swc)[None, :]
    else:
        w_chan = w_ptr + ((p * 0)[:, None] + (c * swc)[None, :])
    acc = tl.zeros((TILE_H * TILE_W, BLOCK_C), dtype=ACC)
    for i in range(i_lo, i_hi):
        xs = x_tile + i * dil_h * sxh
        ws = w_chan + i * swh
        for _ in range(W_CHUNKS):
            for t in tl.static_range(TAP_W):
                xv = tl.load(xs + t * DIL_W * SXW).to(ACC)
                wv = tl.load(ws + t * SWW).to(ACC)
                acc += xv * wv
            xs += TAP_W * DIL_W * SXW
            ws += TAP_W * SWW

    if HAS_BIAS:
        acc += tl.load(b_ptr + c).to(ACC)[None, :]
    if SYW == 0:
        y_off = (oh * syh + ow * syw)[:, None] + (c * syc)[None, :]
    else:
        y_off = (oh * syh + ow * SYW)[:, None] + (c * syc)[None, :]
    ok = ((oh < HO) & (ow < WO))[:, None]
    tl.store(y_ptr + pid_n * syn + y_off, acc.to(y_ptr.dtype.element_ty), mask=ok)


@_jit
def _slide_weight_grad_kernel(
    x_ptr, dy_ptr, ws_ptr,
    N, C, HO, WO,
    sxn, sxc, sxh, sxw,
    sdn, sdc, sdh, sdw,
    sws, swc, swh, sww,
    dil_h, ROWS, W_CHUNKS, SPLITS,
    ACC: tl.constexpr, IDX: tl.constexpr, DIL_W: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_C: tl.constexpr, TAP_W: tl.constexpr,
    BLOCK_T: tl.constexpr,
):  # fmt: skip
    # axis 0: (tap chunk, kernel row, channel block) with chunks fastest; axis 1: image share
    # (SPLITS <= min(N, 65535) by construction).
    pid = tl.program_id(0).to(IDX)
    split = tl.program_id(1).to(IDX)
    chunk = pid % W_CHUNKS
    row = (pid // W_CHUNKS) % ROWS
    pid_c = pid // W_CHUNKS // ROWS

    p = tl.arange(0, TILE_H * TILE_W).to(IDX)
    p_h = p // TILE_W
    p_w = p % TILE_W
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C).to(IDX)  # C is a multiple of BLOCK_C
    t = tl.arange(0, BLOCK_T).to(IDX)
    tap = chunk * TAP_W + t  # live-window column of each tap
    tap_in = chunk * TAP_W + tl.minimum(t, TAP_W - 1)  # lanes past the chunk re-read its last

    # x at tap (row, tap) for output (oh, ow): xp[oh + row dh, ow + tap dw]; pixels past the
    # output read zeros or real input, and grad_out is masked to zero there. Tensors are
    # [taps, pixels, channels]: Triton spreads the lanes over channels (channels_last) or
    # pixels (NCHW) and, taps coming last, leaves each thread all the taps of its elements, so
    # one grad_out value feeds BLOCK_T FMAs.
    x_off = (
        (tap_in * DIL_W * sxw)[:, None, None]
        + (p_h * sxh + p_w * sxw)[None, :, None]
        + (c * sxc)[None, None, :]
    )
    x_row = x_ptr + row * dil_h * sxh + x_off
    dy_off = (p_h * sdh + p_w * sdw)[None, :, None] + (c * sdc)[None, None, :]  # [1, P, C]
    acc = tl.zeros((BLOCK_T, TILE_H * TILE_W, BLOCK_C), dtype=ACC)
    for n in range(split, N, SPLITS):
        x_img = x_row + tl.cast(n, tl.int64) * sxn
        dy_img = dy_ptr + tl.cast(n, tl.int64) * sdn + dy_off
        for oh0 in range(0, HO, TILE_H):
            p_ok = (oh0 + p_h) < HO
            for ow0 in range(0, WO, TILE_W):
                ok = p_ok & ((ow0 + p_w) < WO)
                dy = tl.load(
                    dy_img + (oh0 * sdh + ow0 * sdw), mask=ok[None, :, None], other=0.0
                ).to(ACC)
                xv = tl.load(x_img + (oh0 * sxh + ow0 * sxw)).to(ACC)
                acc += xv * dy

    partial = tl.sum(acc, axis=1)  # [BLOCK_T, BLOCK_C]
    tl.store(
        ws_ptr + split * sws + (row * swh + tap * sww)[:, None] + (c * swc)[None, :],
        partial,
        mask=(t < TAP_W)[:, None],
    )


# ----------------------------------------------------------------------------------------------
# Launch parameters


@dataclass(frozen=True)
class SlideTiles:
    """One launch configuration: an output tile of TILE_H x TILE_W pixels and BLOCK_C channels,
    TAP_W taps unrolled per chunk."""

    tile_h: int
    tile_w: int
    block_c: int
    tap_w: int
    num_warps: int

    def constexprs(self) -> dict:
        return dict(
            TILE_H=self.tile_h, TILE_W=self.tile_w, BLOCK_C=self.block_c, TAP_W=self.tap_w,
            num_warps=self.num_warps,
        )  # fmt: skip


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def tap_chunks(taps: int, most: int = MAX_TAP_W) -> tuple[int, int]:
    """(chunks, taps per chunk): the fewest chunks of at most `most` taps, as even as possible
    (kw = 129 -> 5 x 26: one zero-weight tap executed, not 31 as with chunks of 32)."""
    chunks = max(1, -(-taps // most))
    return chunks, -(-taps // chunks)


# Per-shape table (no GPU has timed these; the report tool compiles every entry). Keys: layout
# and the map's width class; values: (tile_h, tile_w, block_c, num_warps) for the forward.
# NCHW: lanes run along W (one 128-byte row segment per warp load), 16 outputs per thread so a
# tap's weight load is shared by 16 FMAs. channels_last: 4 channels per 16-byte load, 8 pixels
# per thread (121 registers, 16 warps/SM; 8x8 tiles estimate 5% higher at 211 registers and
# 8 warps/SM: a candidate for a GPU run to decide).
FORWARD_TABLE = {
    ("nchw", 64): (32, 32, 1, 2),
    ("nchw", 32): (32, 32, 1, 2),
    ("nchw", 16): (16, 16, 1, 1),
    ("nchw", 8): (8, 8, 1, 1),
    ("cl", 64): (4, 8, 64, 2),
    ("cl", 32): (4, 8, 64, 2),
    ("cl", 16): (4, 8, 64, 2),
    ("cl", 8): (4, 8, 64, 2),
}
# Weight-grad: [pixels, channels, taps] accumulator of ~4096 fp32 (32 per thread at 4 warps).
WEIGHT_GRAD_TABLE = {
    ("nchw", 64): (4, 32, 1, 4),
    ("nchw", 32): (4, 32, 1, 4),
    ("nchw", 16): (8, 16, 1, 4),
    ("nchw", 8): (8, 8, 1, 2),
    ("cl", 64): (4, 8, 32, 8),
    ("cl", 32): (4, 8, 32, 8),
    ("cl", 16): (4, 8, 32, 8),
    ("cl", 8): (4, 8, 32, 8),
}


# Alternatives a GPU run may pick from (the table's entry first); the sm_90 report compiles every
# one (tools/triton_sm90_scenarios.py, labels "cand_..."). FORCE_CONFIG = (tile_h, tile_w,
# block_c, num_warps) overrides the table for every launch (block_c still capped to divide C).
FORWARD_CANDIDATES = {
    "nchw": [(32, 32, 1, 2), (16, 32, 1, 1), (32, 32, 1, 4), (32, 32, 1, 1)],
    "cl": [(4, 8, 64, 2), (8, 8, 64, 2), (8, 8, 32, 1), (4, 16, 64, 4)],
}
WEIGHT_GRAD_CANDIDATES = {
    "nchw": [(4, 32, 1, 4), (8, 32, 1, 8), (8, 16, 1, 4)],
    "cl": [(4, 8, 32, 8), (4, 8, 64, 8), (2, 8, 64, 8)],
}
FORCE_CONFIG: tuple[int, int, int, int] | None = None


def _width_class(wo: int) -> int:
    return min(64, max(8, _pow2(wo)))


def _channel_block(channels: int, most: int) -> int:
    """The largest power of two <= most that divides `channels` (the kernels have no channel
    masks)."""
    return min(most, channels & -channels)


def _interpreter_tiles(out_hw, channels: int, taps_w: int, weight_grad: bool) -> SlideTiles:
    """The whole (small) map and up to 16 channels per program: the interpreter's cost is per op."""
    ho, wo = out_hw
    tile_w = _pow2(min(wo, 32))
    tile_h = _pow2(max(1, min(ho, 256 // tile_w)))
    _, tap_w = tap_chunks(taps_w, 8 if weight_grad else MAX_TAP_W)
    return SlideTiles(tile_h, tile_w, _channel_block(channels, 16), tap_w, 1)


def forward_tiles(out_hw, channels: int, taps_w: int, channels_last: bool, tuning: str):
    if tuning == "interpreter":
        return _interpreter_tiles(out_hw, channels, taps_w, False)
    key = ("cl" if channels_last else "nchw", _width_class(out_hw[1]))
    tile_h, tile_w, block_c, warps = FORCE_CONFIG or FORWARD_TABLE[key]
    return SlideTiles(
        tile_h, tile_w, _channel_block(channels, block_c), tap_chunks(taps_w)[1], warps
    )


def weight_grad_tiles(out_hw, channels: int, taps_w: int, channels_last: bool, tuning: str):
    if tuning == "interpreter":
        return _interpreter_tiles(out_hw, channels, taps_w, True)
    key = ("cl" if channels_last else "nchw", _width_class(out_hw[1]))
    tile_h, tile_w, block_c, warps = FORCE_CONFIG or WEIGHT_GRAD_TABLE[key]
    block_c = _channel_block(channels, block_c)
    # taps per chunk: up to 8, so the accumulator stays [pixels, channels, <= 8]
    return SlideTiles(tile_h, tile_w, block_c, tap_chunks(taps_w, 8)[1], warps)


# ----------------------------------------------------------------------------------------------
# Launchers


def index_type(*tensors: Tensor):
    """Type of the in-kernel index arithmetic (the batch offset is always int64); shared with
    triton.py.

    int32 on a GPU unless one image's span of memory exceeds it. The interpreter checks every
    int32 add/sub/mul for overflow with ~8 extra numpy ops (int64 is exempt), which tripled its
    run time, so it gets int64.
    """
    # largest element offset inside one image (dims C, H, W)
    span = max(sum((t.shape[d] - 1) * abs(t.stride(d)) for d in (1, 2, 3)) for t in tensors)
    return tl.int64 if _INTERPRETED or span >= _INT32_MAX else tl.int32


def accumulator(dtype: torch.dtype):
    """fp32 accumulation, fp64 for fp64 storage; shared with triton.py."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def _padded_input(x: Tensor, offset: tuple[int, int], hw: tuple[int, int]) -> Tensor:
    """xp (N, C, *hw) with xp[..., a, b] = x[..., a + offset[0], b + offset[1]] (zero outside x),
    in x's memory format (negative offsets pad, positive ones crop)."""
    h, w = x.shape[2], x.shape[3]
    top, left = -offset[0], -offset[1]
    xp = F.pad(x, (left, hw[1] - w - left, top, hw[0] - h - top))
    fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    return xp.contiguous(memory_format=fmt)


def forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    padding: tuple[int, int],
    dilation: tuple[int, int],
    out_hw: tuple[int, int],
    tuning: str,
) -> Tensor:
    """y = x (*) weight (+ bias), stride 1, through `_slide_forward_kernel`."""
    n, c, h, w = x.shape
    ho, wo = out_hw
    kh, kw = weight.shape[2], weight.shape[3]
    dh, dw = dilation
    channels_last = is_channels_last(x)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.empty((n, c, ho, wo), dtype=x.dtype, device=x.device, memory_format=fmt)
    (kh_lo, kh_hi), (kw_lo, kw_hi) = (
        live_taps(h, ho, kh, padding[0], dh),
        live_taps(w, wo, kw, padding[1], dw),
    )
    if y.numel() == 0 or kh_hi == kh_lo or kw_hi == kw_lo:
        return y.zero_() if bias is None else y.copy_(bias.view(1, c, 1, 1).expand_as(y))
    tiles = forward_tiles(out_hw, c, kw_hi - kw_lo, channels_last, tuning)
    chunks, tap_w = tap_chunks(kw_hi - kw_lo, tiles.tap_w)
    rows = kh_hi - kh_lo
    tiles_h, tiles_w = triton.cdiv(ho, tiles.tile_h), triton.cdiv(wo, tiles.tile_w)
    off_h, off_w = kh_lo * dh - padding[0], kw_lo * dw - padding[1]
    xp = _padded_input(
        x,
        (off_h, off_w),
        (
            tiles_h * tiles.tile_h + (rows - 1) * dh,
            tiles_w * tiles.tile_w + (chunks * tap_w - 1) * dw,
        ),
    )
    # the live window, zero-padded to whole chunks; channel-contiguous for channels_last
    wk = F.pad(weight[:, 0, kh_lo:kh_hi, kw_lo:kw_hi], (0, chunks * tap_w - (kw_hi - kw_lo)))
    wk = wk.permute(1, 2, 0).contiguous().permute(2, 0, 1) if channels_last else wk.contiguous()
    block_c = tiles.block_c
    grid = (triton.cdiv(c, block_c) * n * tiles_h * tiles_w,)
    _slide_forward_kernel[grid](
        xp, wk, xp if bias is None else bias, y,
        n, c, h, ho, wo, off_h,
        *xp.stride(), *wk.stride(), *y.stride(), y.stride(3) if channels_last else 0,
        rows, dh, chunks,
        HAS_BIAS=bias is not None, ACC=accumulator(x.dtype), IDX=index_type(xp, y), DIL_W=dw,
        TILE_H=tiles.tile_h, TILE_W=tiles.tile_w, BLOCK_C=block_c, TAP_W=tap_w,
        num_warps=tiles.num_warps,
    )  # fmt: skip
    return y


def backward_weight(
    grad_out: Tensor,
    x: Tensor,
    kernel_hw: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    tuning: str,
) -> Tensor:
    """grad_w (C, 1, kh, kw) in the accumulation dtype, through `_slide_weight_grad_kernel`."""
    n, c, h, w = x.shape
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    kh, kw = kernel_hw
    dh, dw = dilation
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    (kh_lo, kh_hi), (kw_lo, kw_hi) = (
        live_taps(h, ho, kh, padding[0], dh),
        live_taps(w, wo, kw, padding[1], dw),
    )
    if n * c * ho * wo == 0 or kh_hi == kh_lo or kw_hi == kw_lo:
        return torch.zeros((c, 1, kh, kw), dtype=acc_dtype, device=x.device)
    channels_last = is_channels_last(x)
    tiles = weight_grad_tiles((ho, wo), c, kw_hi - kw_lo, channels_last, tuning)
    chunks, tap_w = tap_chunks(kw_hi - kw_lo, tiles.tap_w)
    rows = kh_hi - kh_lo
    tiles_h, tiles_w = triton.cdiv(ho, tiles.tile_h), triton.cdiv(wo, tiles.tile_w)
    off_h, off_w = kh_lo * dh - padding[0], kw_lo * dw - padding[1]
    xp = _padded_input(
        x,
        (off_h, off_w),
        (
            tiles_h * tiles.tile_h + (rows - 1) * dh,
            tiles_w * tiles.tile_w + (chunks * tap_w - 1) * dw,
        ),
    )
    c_blocks = triton.cdiv(c, tiles.block_c)
    programs = chunks * rows * c_blocks
    splits = 1 if tuning == "interpreter" else min(n, 65535, math.ceil(_GPU_PROGRAMS / programs))
    # every (split, channel, live tap) is written by exactly one program
    ws = torch.empty((splits, c, rows, chunks * tap_w), dtype=acc_dtype, device=x.device)
    _slide_weight_grad_kernel[(programs, splits)](
        xp, grad_out, ws,
        n, c, ho, wo,
        *xp.stride(), *grad_out.stride(), *ws.stride(),
        dh, rows, chunks, splits,
        ACC=accumulator(x.dtype), IDX=index_type(xp, grad_out), DIL_W=dw,
        TILE_H=tiles.tile_h, TILE_W=tiles.tile_w, BLOCK_C=tiles.block_c, TAP_W=tap_w,
        BLOCK_T=_pow2(tap_w), num_warps=tiles.num_warps,
    )  # fmt: skip
    grad_w = torch.zeros((c, 1, kh, kw), dtype=acc_dtype, device=x.device)
    grad_w[:, 0, kh_lo:kh_hi, kw_lo:kw_hi] = ws.sum(0)[:, :, : kw_hi - kw_lo]
    return grad_w
