"""Triton depthwise convolution kernels (forward, input-gradient, weight-gradient), stride 1.

Notation: x (N, C, H, W), weight (C, 1, kh, kw), padding (ph, pw) >= 0, dilation (dh, dw) >= 1,
output (N, C, Ho, Wo) with Ho = H + 2 ph - dh (kh - 1). Output pixel (oh, ow) reads the input at
(oh - ph + i dh, ow - pw + j dw) for tap (i, j); reads outside the map are zero padding.

Four kernels:
- `_direct_kernel` computes y = x (*) w for one output tile [TILE_H x TILE_W pixels, BLOCK_C
  channels] of one image per program, looping over (chunks of) taps. The input-gradient is the
  same kernel run on grad_out with the 180-degree-rotated kernel and padding dh (kh - 1) - ph
  (negative when the padding exceeds the kernel extent; the kernels treat padding as an offset).
- The fp16/bf16 tensor-core forms (forward, input-gradient and weight-gradient with wide kernels
  on a GPU) live in ops/dwconv/triton_tc.py; `_direct` and `backward_weight` route to them
  (fp32 too when TF32 is allowed: `triton_tc.ALLOW_TF32`, ZOO_DWCONV_TF32=1, off by default).
- Forwards with at least `triton_slide.SLIDE_MIN_TAPS` live taps and every weight-gradient
  that the tensor-core kernels do not take (fp32/fp64 always; fp16/bf16 with narrow kernels)
  go to the mask-free kernels of
  ops/dwconv/triton_slide.py (a zero-padded copy of the input, the tap chunk unrolled at
  compile time, nested image/tile loops; the weight-gradient writes per-split partial sums to
  an fp32 workspace that is summed after: deterministic, no atomics).

All kernels address memory through strides, so NCHW and channels_last (and any other strided
view) run unchanged; outputs are allocated in the input's memory format. Accumulation is fp32
(fp64 for fp64 storage). Every load is upcast to that type before arithmetic, except the 16-bit
tensor-core operands on a GPU (Triton's CPU interpreter computes bf16 arithmetic wrongly, so
there they are upcast too).

Taps that only read padding are never loaded: each program clips its tap loop to the range
that can reach the map, separately along H and W.

Tile shapes come from a heuristic table (`_direct_tiles`) with two
targets. On a GPU: NHWC tiles of [32-128 pixels, up to 64 contiguous channels], NCHW tiles of
one plane's [TILE_H x up to 64] pixels, one tap per loop iteration (loads hit L1), and the
tensor-core kernels of triton_tc.py for fp16/bf16 with kw >= 13. None of it was timed (no GPU
was available when this was written); the tests compile every kernel for sm_90. Under
TRITON_INTERPRET=1 (CPU tests) each tl op costs ~0.1-2 ms per program, so programs cover a whole
small map and all channels and vectorise a whole block of taps, bounded by an element budget
per op.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._geometry import live_taps, output_hw, rotated_padding
from .._layout import is_channels_last
from .._triton import INTERPRETED as _INTERPRETED
from .._triton import (
    is_available,  # noqa: F401  (the backend's own check, for the dispatcher)
    tl,
    triton,
)
from .._triton import jit as _jit
from . import triton_slide, triton_tc
from .triton_slide import accumulator as _accumulator
from .triton_slide import index_type as _index_type

# ----------------------------------------------------------------------------------------------
# Kernels


@_jit
def _direct_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    C, H, W, HO, WO,
    sxn, sxc, sxh, sxw,
    swc, swh, sww,
    syn, syc, syh, syw,
    pad_h, pad_w, dil_h, dil_w, KH, KW,
    HAS_BIAS: tl.constexpr, ACC: tl.constexpr, IDX: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    TAP_H: tl.constexpr, TAP_W: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    # axis 0 enumerates (image, spatial tile) with tiles fastest, so neighbouring programs share
    # halo rows in L2; axis 1 is the channel block (grid axes 1 and 2 are limited to 65535).
    pid = tl.program_id(0).to(IDX)
    pid_c = tl.program_id(1).to(IDX)
    tiles_w = (WO + TILE_W - 1) // TILE_W
    tiles = ((HO + TILE_H - 1) // TILE_H) * tiles_w
    pid_n = (pid // tiles).to(tl.int64)
    pid_s = pid % tiles
    oh0 = (pid_s // tiles_w) * TILE_H
    ow0 = (pid_s % tiles_w) * TILE_W

    p = tl.arange(0, BLOCK_P).to(IDX)
    oh = oh0 + p // TILE_W
    ow = ow0 + p % TILE_W
    p_ok = (p < TILE_H * TILE_W) & (oh < HO) & (ow < WO)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C).to(IDX)
    c_ok = c < C
    t = tl.arange(0, BLOCK_T).to(IDX)
    t_h = t // TAP_W
    t_w = t % TAP_W
    t_ok = t < TAP_H * TAP_W

    # Taps [lo, hi) through which some output of this tile reads the map (a tap t reads input
    # o - pad + t * dil). Only non-negative operands reach `//` (Triton truncates, numpy floors);
    # tl.cdiv is avoided because every nested jit call costs ~2 ms in the interpreter.
    kh_lo = (tl.maximum(pad_h - (tl.minimum(oh0 + TILE_H, HO) - 1), 0) + dil_h - 1) // dil_h
    kh_hi = tl.minimum((tl.maximum(H - 1 + pad_h - oh0, -1) + dil_h) // dil_h, KH)
    kw_lo = (tl.maximum(pad_w - (tl.minimum(ow0 + TILE_W, WO) - 1), 0) + dil_w - 1) // dil_w
    kw_hi = tl.minimum((tl.maximum(W - 1 + pad_w - ow0, -1) + dil_w) // dil_w, KW)

    x_base = x_ptr + pid_n * sxn
    x_chan = (c * sxc)[None, :, None]
    chan_ok = c_ok[None, :, None]
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    for th0 in range(kh_lo, kh_hi, TAP_H):
        th = th0 + t_h  # [BLOCK_T]
        ih = oh[:, None] + (th * dil_h - pad_h)[None, :]  # [BLOCK_P, BLOCK_T]
        row_ok = p_ok[:, None] & (t_ok & (th < kh_hi))[None, :] & (ih >= 0) & (ih < H)
        row_off = ih * sxh
        for tw0 in range(kw_lo, kw_hi, TAP_W):
            tw = tw0 + t_w
            iw = ow[:, None] + (tw * dil_w - pad_w)[None, :]
            ok = row_ok & (tw < kw_hi)[None, :] & (iw >= 0) & (iw < W)
            xv = tl.load(
                x_base + (row_off + iw * sxw)[:, None, :] + x_chan,
                mask=ok[:, None, :] & chan_ok,
                other=0.0,
            ).to(ACC)
            tap_ok = t_ok & (th < kh_hi) & (tw < kw_hi)
            wv = tl.load(
                w_ptr + (c * swc)[:, None] + (th * swh + tw * sww)[None, :],
                mask=c_ok[:, None] & tap_ok[None, :],
                other=0.0,
            ).to(ACC)
            acc += tl.sum(xv * wv[None, :, :], axis=2)

    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(ACC)[None, :]
    y_off = (oh * syh + ow * syw)[:, None] + (c * syc)[None, :]
    tl.store(
        y_ptr + pid_n * syn + y_off,
        acc.to(y_ptr.dtype.element_ty),
        mask=p_ok[:, None] & c_ok[None, :],
    )


# ----------------------------------------------------------------------------------------------
# Launch parameters

# "interpreter": few programs with large blocks (the interpreter's cost is per tl op);
# "gpu": tiles sized for an H100 (tests switch to it to check those code paths on CPU).
_TUNING = "interpreter" if _INTERPRETED else "gpu"
_MAX_GRID_YZ = 65535  # CUDA's limit on grid axes 1 and 2
_INTERPRETER_BLOCK_ELEMENTS = 1 << 16  # per-op element budget: ~1 ms per op in numpy


@dataclass(frozen=True)
class _Tiles:
    tile_h: int
    tile_w: int
    block_c: int
    tap_h: int
    tap_w: int
    num_warps: int = 4

    @property
    def block_p(self) -> int:
        return triton.next_power_of_2(self.tile_h * self.tile_w)

    @property
    def block_t(self) -> int:
        return triton.next_power_of_2(self.tap_h * self.tap_w)

    def constexprs(self) -> dict:
        return dict(
            TILE_H=self.tile_h, TILE_W=self.tile_w, BLOCK_P=self.block_p, BLOCK_C=self.block_c,
            TAP_H=self.tap_h, TAP_W=self.tap_w, BLOCK_T=self.block_t, num_warps=self.num_warps,
        )  # fmt: skip


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def _interpreter_tiles(out_hw, channels, taps_hw) -> _Tiles:
    """Whole small map and all channels in one program; as many taps per op as the budget allows."""
    ho, wo = out_hw
    block_c = min(_pow2(channels), 16)
    if ho * wo <= 256:
        tile_h, tile_w = ho, wo
    else:
        tile_w = min(wo, 32)
        tile_h = max(1, min(ho, 256 // tile_w))
    tap_h, tap_w = max(taps_hw[0], 1), max(taps_hw[1], 1)
    block_p = _pow2(tile_h * tile_w)

    def elements(th: int, tw: int) -> int:
        return block_p * block_c * _pow2(th * tw)

    while tap_h > 1 and elements(tap_h, tap_w) > _INTERPRETER_BLOCK_ELEMENTS:
        tap_h = (tap_h + 1) // 2
    while tap_w > 1 and elements(tap_h, tap_w) > _INTERPRETER_BLOCK_ELEMENTS:
        tap_w = (tap_w + 1) // 2
    return _Tiles(tile_h, tile_w, block_c, tap_h, tap_w, num_warps=1)


def _warps(elements: int, most: int) -> int:
    """~4-8 elements of the tile per thread; small maps get fewer warps, not idle ones."""
    return max(1, min(most, _pow2(elements) // 256))


def _direct_tiles(out_hw, channels, taps_hw, channels_last: bool) -> _Tiles:
    if _TUNING == "interpreter":
        return _interpreter_tiles(out_hw, channels, taps_hw)
    ho, wo = out_hw
    if channels_last:
        # [pixels, channels] with the channel vector contiguous (16-byte loads at >= 8 fp16).
        block_c = min(_pow2(channels), 64)
        block_p = max(32, 2048 // block_c)
        tile_w = min(_pow2(wo), 16, block_p)
        tile_h = max(1, min(_pow2(ho), block_p // tile_w))
        return _Tiles(tile_h, tile_w, block_c, 1, 1, _warps(tile_h * tile_w * block_c, 4))
    # NCHW: a tile of one plane, W contiguous.
    tile_w = min(_pow2(wo), 64)
    tile_h = max(1, min(_pow2(ho), 1024 // tile_w))
    return _Tiles(tile_h, tile_w, 1, 1, 1, _warps(tile_h * tile_w, 8))


# ----------------------------------------------------------------------------------------------
# Launchers


def _kernel_view(weight: Tensor, channels_last: bool) -> Tensor:
    """(C, kh, kw) view of the weight; channel-contiguous for channels_last tiles."""
    w = weight[:, 0]
    if channels_last:
        return w.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    return w.contiguous()


def _slide_applies(live_taps: int) -> bool:
    """Forwards from SLIDE_MIN_TAPS live taps that the tensor-core kernels do not take (any
    dtype) run on the mask-free kernels of triton_slide.py; below, the op is memory-bound and the
    padded copy would cost more than the masks. Every weight-grad the tensor-core kernels do not
    take goes there too."""
    return live_taps >= triton_slide.SLIDE_MIN_TAPS


def _direct(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    padding: tuple[int, int],
    dilation: tuple[int, int],
    out_hw: tuple[int, int],
) -> Tensor:
    n, c, h, w = x.shape
    ho, wo = out_hw
    kh, kw = weight.shape[2], weight.shape[3]
    channels_last = is_channels_last(x)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.empty((n, c, ho, wo), dtype=x.dtype, device=x.device, memory_format=fmt)
    if y.numel() == 0:
        return y
    if triton_tc.applies(x, kw):
        y_tc = triton_tc.forward(x, weight, bias, padding, dilation, out_hw)
        if y_tc is not None:
            return y_tc
    taps_hw = (
        live_taps(h, ho, kh, padding[0], dilation[0]),
        live_taps(w, wo, kw, padding[1], dilation[1]),
    )
    if _slide_applies((taps_hw[0][1] - taps_hw[0][0]) * (taps_hw[1][1] - taps_hw[1][0])):
        return triton_slide.forward(x, weight, bias, padding, dilation, out_hw, _TUNING)
    wk = _kernel_view(weight, channels_last)
    flags = dict(HAS_BIAS=bias is not None, ACC=_accumulator(x.dtype), IDX=_index_type(x, y))
    taps = (taps_hw[0][1] - taps_hw[0][0], taps_hw[1][1] - taps_hw[1][0])
    tiles = _direct_tiles(out_hw, c, taps, channels_last)
    spatial = n * triton.cdiv(ho, tiles.tile_h) * triton.cdiv(wo, tiles.tile_w)
    # grid axis 1 holds at most 65535 channel blocks: more channels launch once per slice
    step = _MAX_GRID_YZ * tiles.block_c
    for c0 in range(0, c, step):
        cs = slice(c0, min(c, c0 + step))
        xs, ws, ys = x[:, cs], wk[cs], y[:, cs]
        _direct_kernel[(spatial, triton.cdiv(cs.stop - c0, tiles.block_c))](
            xs, ws, xs if bias is None else bias[cs], ys,
            cs.stop - c0, h, w, ho, wo,
            *xs.stride(), *ws.stride(), *ys.stride(),
            padding[0], padding[1], dilation[0], dilation[1], kh, kw,
            **flags, **tiles.constexprs(),
        )  # fmt: skip
    return y


def forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    out_hw = output_hw(x.shape[2:], weight.shape[2:], padding, dilation)
    return _direct(x, weight, bias, padding, dilation, out_hw)


def backward_input(
    grad_out: Tensor,
    weight: Tensor,
    input_hw: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """grad_x = grad_out correlated with the 180-degree-rotated kernel.

    Input pixel ih receives grad_out[ih + ph - i dh] * w[i]; with i' = kh - 1 - i that is a
    correlation with padding dh (kh - 1) - ph, which is negative when ph > dh (kh - 1).
    """
    flipped_padding = rotated_padding(weight.shape[2:], padding, dilation)
    hw = (int(input_hw[0]), int(input_hw[1]))
    return _direct(grad_out, weight.flip((2, 3)), None, flipped_padding, dilation, hw)


def backward_weight(
    grad_out: Tensor,
    x: Tensor,
    kernel_hw: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """grad_w (C, 1, kh, kw) in the accumulation dtype (fp32, fp64 for fp64 inputs)."""
    n, c, h, w = x.shape
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    kh, kw = kernel_hw
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    (kh_lo, kh_hi), (kw_lo, kw_hi) = (
        live_taps(h, ho, kh, padding[0], dilation[0]),
        live_taps(w, wo, kw, padding[1], dilation[1]),
    )
    if n * c * ho * wo == 0 or kh_hi == kh_lo or kw_hi == kw_lo:
        return torch.zeros((c, 1, kh, kw), dtype=acc_dtype, device=x.device)
    if triton_tc.applies(x, kw):
        grad_w = triton_tc.backward_weight(grad_out, x, kernel_hw, padding, dilation)
        if grad_w is not None:
            return grad_w
    return triton_slide.backward_weight(grad_out, x, kernel_hw, padding, dilation, _TUNING)
