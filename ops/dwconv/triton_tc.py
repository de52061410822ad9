"""Tensor-core (fp16/bf16) Triton kernels of the depthwise convolution: forward, input-gradient
(the forward on grad_out with the 180-degree-rotated kernel) and weight-gradient, stride 1.

Notation as in ops/dwconv/triton.py: x (N, C, H, W), weight (C, 1, kh, kw), padding (ph, pw),
dilation (dh, dw), output (N, C, Ho, Wo).

Row-Toeplitz formulation. For one channel c and kernel row i, output rows r of IMG images
stacked along the GEMM's M axis (IMG x BLOCK_H rows, >= 64 so Hopper's wgmma applies) and
output columns ow0 ... ow0 + BLOCK_N:

    y[(n, r), ow0 + q] += sum_k X_i[(n, r), k] * T_ci[k, q],
    X_i[(n, r), k] = x[n, c, r - ph + i dh, col0 + k],   T_ci[k, q] = w[c, i, j] if k = q + s + j dw

with col0 = ow0 - pw - s, where the shift s = (-pw) mod (16 bytes / element size) makes every
column offset 16-byte aligned (a tensor-descriptor requirement in Triton's interpreter; free on a
GPU). BLOCK_K >= BLOCK_N + s + dw (kw - 1), so of the BLOCK_K MACs per output and kernel row,
kw are useful: the useful fraction of the executed math is kw / BLOCK_K (times the share of
stacked rows and columns inside the map).

- The bands T_ci are built once per call by `_bands` (one gather on the device writing
  C kh BLOCK_K BLOCK_N elements: 48.8 MB at C=384, k=31, ~15 us of HBM; 5.1 MB at k=13) and
  read with tensor-descriptor (TMA) loads, so the hot loop has no gather: per kernel row one TMA
  load of the input box [IMG, 1, BLOCK_H, BLOCK_K] (its out-of-bounds zero fill is the
  padding), one TMA load of the band [BLOCK_K, BLOCK_N] and wgmma, pipelined over `num_stages`.
  Compiled for sm_90, merging the box's IMG and BLOCK_H axes into M is not a shared-memory
  view in Triton 3.8: the A operand goes through registers (LDSM, then wgmma with A from
  registers); with IMG = 1 (maps of >= 64 rows) it stays in shared memory.
- Tensor descriptors need 16-byte aligned strides (W a multiple of 8 for fp16/bf16). Other maps
  (W = 28, 14, 7, ...) get the same kernel with pointer loads of the input box
  (`TMA=False`, `_box`), masks supplying the padding; the bands are always read through a
  descriptor.
- Weight-gradient: per (kernel row i, channel c) program, G = sum over images and tiles of
  X_i^T @ dY ([BLOCK_K, M] @ [M, BLOCK_N], wgmma with M_gemm = BLOCK_K >= 64), then
  dW[c, i, j] = sum_q G[q + s + j dw, q] (one tl.gather skews the diagonals into rows). Nested
  loops (row tile, column tile, image group), no divides in the loop; every dW element is
  written by one program: deterministic, no atomics.
- channels_last: depthwise has no channel reduction, so the GEMM's K must be the input columns of
  one channel, which are strided by C in channels_last memory (no 16-byte TMA box along W,
  uncoalesced pointer loads). Those tensors go through a layout change to NCHW around the same
  kernels: x and y (forward), grad_out and grad_x (input-gradient), x and grad_out
  (weight-gradient), each read and written once: 4 x 50.3 MB ~ 60 us of HBM at 3.35 TB/s per
  direction at (64, 384, 32, 32) bf16, against ~101 us (k=31) / ~39 us (k=13) for the kernel at
  its useful ceiling estimate. An estimate, not a measurement. The alternative, a kernel that
  loads channels_last boxes [rows, BLOCK_K, 8 channels] by TMA and runs a batched dot per
  channel (tried in the sm_90 report at k=31: mma.sync, not wgmma, 128 registers, 131 KB of
  shared memory, L1-bound at ~357 TFLOP/s executed = ~173 useful) would skip the copies; by
  the same model it is slower at k=31 (~280 vs ~161 us) and, if its L1 bound held at k=13 (not
  compiled there), faster at k=13 (~59 vs ~99 us). A GPU run decides.

Under TRITON_INTERPRET=1 the 16-bit operands are upcast to fp32 before tl.dot (the interpreter
computes bf16 arithmetic wrongly); the descriptors, bands, tiling and indexing are the same.
Tile choices (`config`) are a per-shape table; `candidates` lists the alternatives a GPU run
should time (every one compiles for sm_90 in the tests). Nothing here has been timed on a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .._geometry import live_taps
from .._layout import is_channels_last
from .._triton import INTERPRETED as _INTERPRETED
from .._triton import jit as _jit
from .._triton import tl, triton

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # no triton: the backend reports itself unavailable before reaching here
    TensorDescriptor = None

# ----------------------------------------------------------------------------------------------
# Kernels


@_jit
def _box(plane, img, rows, cols, N, H, W, sn, sh, sw):
    """The pointer-load form of a descriptor's input box: [IMG, ROWS, COLS] of one channel's
    planes (`plane` points at image 0), zero outside the map, as [IMG x ROWS, COLS]."""
    box = tl.load(
        plane
        + (img.to(tl.int64) * sn)[:, None, None]
        + (rows * sh)[None, :, None]
        + (cols * sw)[None, None, :],
        mask=(img < N)[:, None, None]
        & ((rows >= 0) & (rows < H))[None, :, None]
        & ((cols >= 0) & (cols < W))[None, None, :],
        other=0.0,
    )
    return box.reshape(img.shape[0] * rows.shape[0], cols.shape[0])


@_jit
def _tf32(v):
    """fp32 -> TF32 by dropping the 13 low mantissa bits, as the tensor cores read fp32
    registers in TF32 mode: the interpreter's tl.dot is an exact fp32 matmul, so its TF32 runs
    emulate the operand rounding with this (the sm_90 code passes input_precision="tf32")."""
    return (v.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)


@_jit
def _tc_forward_kernel(
    x_ptr, x_desc, t_desc, b_ptr, y_ptr,
    N, H, W, HO, WO, KH,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    pad_h, col_off, dil_h, row_tiles, col_tiles,
    HAS_BIAS: tl.constexpr, TMA: tl.constexpr,
    ACC: tl.constexpr, DOT: tl.constexpr,
    IMG: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr = "ieee", TRUNCATE_TF32: tl.constexpr = False,
):  # fmt: skip
    """y for channel program_id(1) and one tile [IMG images x BLOCK_H rows, BLOCK_N columns]."""
    pid = tl.program_id(0)
    c = tl.program_id(1)
    # axis 0: (image group, row tile, column tile), column tiles fastest (shared halo in L2)
    tiles = row_tiles * col_tiles
    n0 = (pid // tiles) * IMG
    r0 = ((pid % tiles) // col_tiles) * BLOCK_H
    ow0 = (pid % col_tiles) * BLOCK_N
    col0 = ow0 + col_off

    # kernel rows through which some row of the tile reads the map (as in _direct_kernel)
    kh_lo = (tl.maximum(pad_h - (tl.minimum(r0 + BLOCK_H, HO) - 1), 0) + dil_h - 1) // dil_h
    kh_hi = tl.minimum((tl.maximum(H - 1 + pad_h - r0, -1) + dil_h) // dil_h, KH)

    img = n0 + tl.arange(0, IMG)
    rows = tl.arange(0, BLOCK_H)
    cols = col0 + tl.arange(0, BLOCK_K)
    x_chan = x_ptr + c.to(tl.int64) * sxc
    acc = tl.zeros((IMG * BLOCK_H, BLOCK_N), dtype=ACC)
    for i in range(kh_lo, kh_hi):
        ih0 = r0 - pad_h + i * dil_h
        if TMA:
            xi = x_desc.load([n0, c, ih0, col0]).reshape(IMG * BLOCK_H, BLOCK_K)
        else:
            xi = _box(x_chan, img, ih0 + rows, cols, N, H, W, sxn, sxh, sxw)
        ti = t_desc.load([(c * KH + i) * BLOCK_K, 0])
        if TRUNCATE_TF32:
            xi, ti = _tf32(xi), _tf32(ti)
        acc = tl.dot(xi.to(DOT), ti.to(DOT), acc, input_precision=PRECISION)

    if HAS_BIAS:
        acc += tl.load(b_ptr + c).to(ACC)
    oh = r0 + rows
    ow = ow0 + tl.arange(0, BLOCK_N)
    y_off = (
        (img.to(tl.int64) * syn)[:, None, None]
        + (oh * syh)[None, :, None]
        + (ow * syw)[None, None, :]
    )
    tl.store(
        y_ptr + c.to(tl.int64) * syc + y_off,
        acc.reshape(IMG, BLOCK_H, BLOCK_N).to(y_ptr.dtype.element_ty),
        mask=(img < N)[:, None, None] & (oh < HO)[None, :, None] & (ow < WO)[None, None, :],
    )


@_jit
def _tc_weight_grad_kernel(
    x_ptr, x_desc, dy_ptr, dy_desc, dw_ptr,
    N, H, W, HO, WO,
    sxn, sxc, sxh, sxw,
    sdn, sdc, sdh, sdw,
    swc, swh, sww,
    pad_h, col_off, band_shift, dil_h, dil_w, kh_first, kw_first, kw_last,
    TMA: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr, TAPS: tl.constexpr,
    IMG: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr = "ieee", TRUNCATE_TF32: tl.constexpr = False,
):  # fmt: skip
    """dW[c, i, :] for kernel row i = kh_first + program_id(0) and channel c = program_id(1)."""
    i = kh_first + tl.program_id(0)
    c = tl.program_id(1)
    # output rows whose input row (through kernel row i) lies in the map
    oh_lo = tl.maximum(pad_h - i * dil_h, 0)
    oh_hi = tl.minimum(H + pad_h - i * dil_h, HO)
    rows = tl.arange(0, BLOCK_H)
    k = tl.arange(0, BLOCK_K)
    q = tl.arange(0, BLOCK_N)
    img0 = tl.arange(0, IMG)
    x_chan = x_ptr + c.to(tl.int64) * sxc
    dy_chan = dy_ptr + c.to(tl.int64) * sdc
    g = tl.zeros((BLOCK_K, BLOCK_N), dtype=ACC)
    for r0 in range(oh_lo, oh_hi, BLOCK_H):
        ih0 = r0 - pad_h + i * dil_h
        for ow0 in range(0, WO, BLOCK_N):
            col0 = ow0 + col_off
            for n0 in range(0, N, IMG):
                if TMA:
                    xi = x_desc.load([n0, c, ih0, col0]).reshape(IMG * BLOCK_H, BLOCK_K)
                    dyi = dy_desc.load([n0, c, r0, ow0]).reshape(IMG * BLOCK_H, BLOCK_N)
                else:
                    img = n0 + img0
                    xi = _box(x_chan, img, ih0 + rows, col0 + k, N, H, W, sxn, sxh, sxw)
                    dyi = _box(dy_chan, img, r0 + rows, ow0 + q, N, HO, WO, sdn, sdh, sdw)
                if TRUNCATE_TF32:
                    xi, dyi = _tf32(xi), _tf32(dyi)
                g = tl.dot(tl.trans(xi.to(DOT)), dyi.to(DOT), g, input_precision=PRECISION)

    # dW[c, i, j] = sum_q G[q + s + j dw, q]: one gather skews the diagonals into rows
    # (skewed[t, q] = G[q + s + (kw_first + t) dw, q]), then one reduction over q.
    t = tl.arange(0, TAPS)
    diagonal = q[None, :] + band_shift + ((kw_first + t) * dil_w)[:, None]  # [TAPS, BLOCK_N]
    tap_ok = kw_first + t < kw_last
    skewed = tl.gather(g, tl.minimum(diagonal, BLOCK_K - 1), 0)
    total = tl.sum(tl.where(tap_ok[:, None], skewed, 0.0), axis=1)
    tl.store(dw_ptr + c * swc + i * swh + (kw_first + t) * sww, total, mask=tap_ok)


# ----------------------------------------------------------------------------------------------
# Tiles: a per-shape table (the default until a GPU run picks) and the alternatives to time

# Chosen for fp16/bf16 with kernels at least this wide (below, the band's useful fraction
# kw / BLOCK_K drops under ~1/3 and the direct kernels do fewer wasted MACs). Not measured.
DTYPES = (torch.float16, torch.bfloat16)
MIN_WIDTH = 13
MAX_BLOCK_K = 256  # a TMA box dimension holds at most 256 elements
MAX_TABLE_BYTES = 128 << 20  # the forward's bands (written once per call; 48.8 MB at C=384 k=31)
MAX_CHANNELS = 65535  # grid axis 1
# On a GPU by default; the CPU tests switch it on to run the kernels in the interpreter.
ENABLED = not _INTERPRETED


# Opt-in TF32 for fp32 storage (off by default): fp32 convolutions with kernels at least
# MIN_WIDTH wide then run on these kernels with TF32 tensor-core math (10-bit mantissa operands,
# fp32 accumulation) instead of the exact fp32 CUDA-core kernels of triton_slide.py. Switched
# on by ZOO_DWCONV_TF32=1 in the environment (read at import) or by setting this attribute.
# Accuracy (measured under the interpreter with the operand truncation emulated, float64
# reference, tests/test_dwconv_triton_slide.py): see TF32_ERROR in that test and the README.
def tf32_from_environment() -> bool:
    """ZOO_DWCONV_TF32: "1" allows TF32, "0" or unset does not; anything else is an error."""
    value = os.environ.get("ZOO_DWCONV_TF32", "0")
    if value not in ("0", "1"):
        raise ValueError(f"ZOO_DWCONV_TF32 must be 0 or 1, got {value!r}")
    return value == "1"


ALLOW_TF32 = tf32_from_environment()


@dataclass(frozen=True)
class Config:
    img: int  # images stacked along M
    block_h: int  # output rows per image along M
    block_n: int  # output columns
    block_k: int  # input columns (the band's height): >= block_n + shift + dw (kw - 1)
    shift: int  # (-pw) mod (16 bytes / element size): aligns every column offset
    num_warps: int = 4
    num_stages: int = 3

    @property
    def block_m(self) -> int:
        return self.img * self.block_h

    def useful_fraction(self, kw: int) -> float:
        """Useful MACs per executed MAC along the band (kw of BLOCK_K), map edges not counted."""
        return kw / self.block_k

    def constexprs(self) -> dict:
        return dict(
            IMG=self.img, BLOCK_H=self.block_h, BLOCK_N=self.block_n, BLOCK_K=self.block_k,
            num_warps=self.num_warps, num_stages=self.num_stages,
        )  # fmt: skip


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def config(
    direction: str,
    images: int,
    out_hw,
    kernel_w: int,
    pad_w: int,
    dil_w: int,
    itemsize: int,
    bands: int = 0,
) -> Config | None:
    """The table's tiles for `direction` ("forward" or "weight_grad"), or None when the band
    would need more than MAX_BLOCK_K columns or the forward's table of `bands` (C kh) bands
    more than MAX_TABLE_BYTES.

    BLOCK_N minimises BLOCK_K (the executed MACs per output and kernel row), ties to the wider
    tile (fewer input re-reads, BLOCK_K / BLOCK_N per input element); the weight-gradient's
    GEMM has BLOCK_K as its M, so it takes BLOCK_K >= 64 (wgmma). M = IMG x BLOCK_H aims at
    4096 / BLOCK_N rows in the forward (at most 256; 128 in the weight-gradient): whole maps of
    up to that many rows, several images for smaller ones. (At the example shape, k=13, M = 256
    doubles the math per loop iteration against M = 128 for the same loop overhead: issue
    estimate 562 vs 323 TFLOP/s executed, in the sm_90 report.)
    """
    shift = (-pad_w) % (16 // itemsize)
    extra = shift + dil_w * (kernel_w - 1)
    least_k = 64 if direction == "weight_grad" else 16
    widths = [n for n in (16, 32, 64) if n <= max(16, _pow2(out_hw[1]))]
    fitting = [
        (block_k, -n)
        for n in widths
        if (block_k := max(least_k, _pow2(n + extra))) <= MAX_BLOCK_K
        and bands * block_k * n * itemsize <= MAX_TABLE_BYTES
    ]
    if not fitting:
        return None
    block_k, block_n = min(fitting)
    block_n = -block_n
    # forward: M x BLOCK_N = 4096 accumulators (32 per thread); the weight-gradient's
    # accumulator is [BLOCK_K, BLOCK_N], its M the reduction step
    rows = min(256, 4096 // block_n) if direction == "forward" else 128
    block_h = min(_pow2(out_hw[0]), rows)
    img = max(1, min(rows // block_h, _pow2(images)), 16 // block_h)
    # A [256, BLOCK_N] weight-gradient accumulator plus its diagonal gather spilled with 4 warps
    # (255 registers, 364-384 B at kw = 129 and 51 at dilation 3 in the sm_90 report).
    warps = 8 if direction == "weight_grad" and block_k > 128 else 4
    return Config(img, block_h, block_n, block_k, shift, num_warps=warps)


def candidates(base: Config) -> list[Config]:
    """The table's choice and the alternatives a GPU run should time: half / double the stacked
    images (M = 64 / 256), 8 warps, 2 and 4 stages."""
    out = [base]
    for img in (base.img // 2, base.img * 2):
        if img >= 1 and 16 <= img * base.block_h <= 256:
            out.append(replace(base, img=img))
    out += [replace(base, num_warps=8), replace(base, num_stages=2), replace(base, num_stages=4)]
    return out


# Tests and the sm_90 report pick a candidate by index (None: the table's choice).
FORCE_CANDIDATE: int | None = None


def _chosen(base: Config | None) -> Config | None:
    if base is None or FORCE_CANDIDATE is None:
        return base
    return candidates(base)[FORCE_CANDIDATE]


def applies(x: Tensor, kernel_w: int) -> bool:
    """Whether the tensor-core kernels are the route for this input (the tile table may still
    decline: then `forward` / `backward_weight` return None)."""
    return (
        ENABLED
        and (x.dtype in DTYPES or (x.dtype == torch.float32 and ALLOW_TF32))
        and kernel_w >= MIN_WIDTH
        and x.shape[1] <= MAX_CHANNELS
        and x.shape[0] * x.shape[1] > 0
    )


# ----------------------------------------------------------------------------------------------
# Launchers


def _dot_type(dtype: torch.dtype):
    # the interpreter gets fp32 operands: it computes bf16 arithmetic wrongly
    if dtype == torch.float64:
        return tl.float64
    if _INTERPRETED or dtype == torch.float32:
        return tl.float32
    return tl.float16 if dtype == torch.float16 else tl.bfloat16


def _accumulator(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _precision(dtype: torch.dtype) -> dict:
    """tl.dot's input precision: TF32 for fp32 storage (only routed here when ALLOW_TF32),
    emulated by operand truncation under the interpreter; exact otherwise."""
    if dtype != torch.float32:
        return {}
    return dict(PRECISION="tf32", TRUNCATE_TF32=_INTERPRETED)


def _nchw(t: Tensor) -> Tensor:
    """The layout change for channels_last (see the module docstring); other views as they are."""
    return t.contiguous() if is_channels_last(t) and t.shape[1] > 1 else t


def _descriptor(t: Tensor, box) -> tuple[object, bool]:
    """A 4-D TMA descriptor of t with block `box`, or (t, False) where TMA cannot address it
    (strides not 16-byte aligned, W not contiguous, unaligned base)."""
    item = t.element_size()
    ok = (
        t.stride(3) == 1
        and all(t.stride(d) * item % 16 == 0 for d in range(3))
        and t.data_ptr() % 16 == 0
    )
    if not ok:
        return t, False
    return TensorDescriptor(t, list(t.shape), list(t.stride()), list(box)), True


# Pointer loads hold the input box in registers: at most this many elements (sm_90 report,
# 13x13 forward at UniRepLKNet-T's 7x7 stage: 8192-element boxes 252 registers, 4096 122).
MAX_POINTER_BOX = 4096


def _pointer_tiles(cfg: Config) -> Config:
    """Fewer stacked images where the input box comes through pointer loads."""
    img = cfg.img
    while img > 1 and img * cfg.block_h * cfg.block_k > MAX_POINTER_BOX and img * cfg.block_h > 64:
        img //= 2
    return replace(cfg, img=img)


def _bands(weight: Tensor, cfg: Config, dil_w: int, live_w: tuple[int, int]) -> Tensor:
    """The Toeplitz bands of every (channel, kernel row) as a (C kh BLOCK_K, BLOCK_N) matrix:
    T[c, i, k, q] = w[c, i, j] where k = q + shift + j dw and tap j is live, else 0. One gather
    (one write of the table) from the kernel rows with a zero prepended: entries off the band
    and taps that only read padding index that zero, so a NaN there never reaches the table."""
    c, _, kh, kw = weight.shape
    dev = weight.device
    d = (
        torch.arange(cfg.block_k, device=dev)[:, None]
        - torch.arange(cfg.block_n, device=dev)[None, :]
        - cfg.shift
    )
    j = torch.div(d, dil_w, rounding_mode="floor")
    on = (d >= 0) & (d % dil_w == 0) & (j >= live_w[0]) & (j < live_w[1])
    index = torch.where(on, j + 1, 0)
    rows = torch.cat([weight.new_zeros(c, kh, 1), weight[:, 0]], dim=2)
    return rows[:, :, index].reshape(c * kh * cfg.block_k, cfg.block_n)


def forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    padding: tuple[int, int],
    dilation: tuple[int, int],
    out_hw: tuple[int, int],
) -> Tensor | None:
    """y = x (*) weight (+ bias) in x's memory format, or None when the tile table declines."""
    n, c, h, w = x.shape
    ho, wo = out_hw
    kh, kw = weight.shape[2], weight.shape[3]
    item = x.element_size()
    cfg = _chosen(config("forward", n, out_hw, kw, padding[1], dilation[1], item, c * kh))
    if cfg is None:
        return None
    fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    xs = _nchw(x)
    y = torch.empty((n, c, ho, wo), dtype=x.dtype, device=x.device)
    live_w = live_taps(w, wo, kw, padding[1], dilation[1])
    bands = _bands(weight.to(x.dtype), cfg, dilation[1], live_w)
    x_desc, tma = _descriptor(xs, (cfg.img, 1, cfg.block_h, cfg.block_k))
    cfg = cfg if tma else _pointer_tiles(cfg)
    t_desc = TensorDescriptor.from_tensor(bands, [cfg.block_k, cfg.block_n])
    row_tiles = triton.cdiv(ho, cfg.block_h)
    col_tiles = triton.cdiv(wo, cfg.block_n)
    grid = (triton.cdiv(n, cfg.img) * row_tiles * col_tiles, c)
    _tc_forward_kernel[grid](
        xs, x_desc, t_desc, xs if bias is None else bias, y,
        n, h, w, ho, wo, kh,
        *xs.stride(), *y.stride(),
        padding[0], -padding[1] - cfg.shift, dilation[0], row_tiles, col_tiles,
        HAS_BIAS=bias is not None, TMA=tma, ACC=_accumulator(x.dtype), DOT=_dot_type(x.dtype),
        **_precision(x.dtype), **cfg.constexprs(),
    )  # fmt: skip
    return y.contiguous(memory_format=fmt)


def backward_weight(
    grad_out: Tensor,
    x: Tensor,
    kernel_hw: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor | None:
    """grad_w (C, 1, kh, kw) in fp32 (fp64 for fp64 inputs), or None when the table declines."""
    n, c, h, w = x.shape
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    kh, kw = kernel_hw
    item = x.element_size()
    cfg = _chosen(config("weight_grad", n, (ho, wo), kw, padding[1], dilation[1], item))
    if cfg is None:
        return None
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    grad_w = torch.zeros((c, kh, kw), dtype=acc_dtype, device=x.device)
    (kh_lo, kh_hi) = live_taps(h, ho, kh, padding[0], dilation[0])
    (kw_lo, kw_hi) = live_taps(w, wo, kw, padding[1], dilation[1])
    if kh_hi == kh_lo or kw_hi == kw_lo or n * c * ho * wo == 0:
        return grad_w.unsqueeze(1)
    xs, dys = _nchw(x), _nchw(grad_out)
    x_desc, x_tma = _descriptor(xs, (cfg.img, 1, cfg.block_h, cfg.block_k))
    dy_desc, dy_tma = _descriptor(dys, (cfg.img, 1, cfg.block_h, cfg.block_n))
    if not (x_tma and dy_tma):  # one code path per launch: pointers for both
        x_desc, dy_desc, cfg = xs, dys, _pointer_tiles(cfg)
    _tc_weight_grad_kernel[(kh_hi - kh_lo, c)](
        xs, x_desc, dys, dy_desc, grad_w,
        n, h, w, ho, wo,
        *xs.stride(), *dys.stride(), *grad_w.stride(),
        padding[0], -padding[1] - cfg.shift, cfg.shift, dilation[0], dilation[1],
        kh_lo, kw_lo, kw_hi,
        TMA=x_tma and dy_tma, ACC=_accumulator(x.dtype), DOT=_dot_type(x.dtype),
        TAPS=_pow2(kw_hi - kw_lo), **_precision(x.dtype), **cfg.constexprs(),
    )  # fmt: skip
    return grad_w.unsqueeze(1)
