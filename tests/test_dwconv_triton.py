"""Triton depthwise kernels (ops/dwconv/triton.py) against F.conv2d.

Without a GPU the kernels run in Triton's CPU interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), so shapes are tiny; the `gpu` group checks realistic shapes on a CUDA device.
Every comparison is forward, input-grad, weight-grad (and bias-grad through `ops.dwconv2d`).
"""

from __future__ import annotations

import itertools
import math
import os
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import ops
from ops import _geometry
from ops.dwconv import reference
from ops.dwconv import triton as dwconv_triton

pytestmark = pytest.mark.skipif(dwconv_triton.triton is None, reason="triton is not importable")


def _padding_pair(kernel, padding, dilation):
    if padding == "same":
        return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
    return padding


def _make(n, c, h, w, kernel, channels_last, bias, dtype=torch.float64, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    weight = (
        torch.randn(c, 1, *kernel, generator=gen, dtype=torch.float64) / math.prod(kernel) ** 0.5
    )
    b = torch.randn(c, generator=gen, dtype=torch.float64) if bias else None
    x, weight = x.to(device, dtype), weight.to(device, dtype)
    b = None if b is None else b.to(device, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, weight, b


def _randn(shape, dtype, device="cpu", seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device, dtype)


def _run(fn, x, weight, bias, grad):
    """Output and grads (x, weight[, bias]) of fn for the upstream gradient `grad`."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, weight, bias) if t is not None]
    y = fn(*leaves, *([None] if bias is None else []))
    grads = torch.autograd.grad(y, leaves, grad)
    return y, grads


def _compare(case, dtype=torch.float64, atol=1e-10):
    n, c, h, w, kernel, padding, dilation, channels_last, bias = case
    x, weight, b = _make(n, c, h, w, kernel, channels_last, bias, dtype)
    pad = _padding_pair(kernel, padding, dilation)

    def ours(x_, w_, b_):
        return ops.dwconv2d(x_, w_, b_, padding=padding, dilation=dilation, backend="triton")

    def reference(x_, w_, b_):
        return F.conv2d(x_, w_, b_, padding=pad, dilation=dilation, groups=c)

    grad = _randn(F.conv2d(x, weight, None, 1, pad, dilation, groups=c).shape, dtype)
    y, grads = _run(ours, x, weight, b, grad)
    y_ref, grads_ref = _run(reference, x, weight, b, grad)
    assert y.dtype == dtype and y.shape == y_ref.shape
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(y, y_ref, atol=atol, rtol=0)
    names = ("grad_x", "grad_w", "grad_b")[: len(grads)]
    for name, got, want in zip(names, grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


# (n, c, h, w, kernel, padding, dilation, channels_last, bias)
CASES = [
    (2, 3, 7, 7, (3, 3), "same", (1, 1), False, True),
    (2, 3, 7, 7, (3, 3), "same", (1, 1), True, True),
    (1, 5, 9, 9, (7, 7), "same", (1, 1), True, False),  # batch 1, odd channels
    (1, 1, 5, 5, (5, 5), "same", (1, 1), False, False),  # one channel
    (1, 3, 1, 1, (7, 7), "same", (1, 1), False, True),  # 1x1 map
    (2, 4, 5, 5, (31, 31), "same", (1, 1), False, True),  # kernel much larger than the map
    (1, 5, 9, 9, (31, 31), "same", (1, 1), True, True),  # taps split into several chunks
    (1, 3, 6, 8, (1, 51), "same", (1, 1), True, True),  # band kernels
    (2, 2, 9, 4, (51, 1), "same", (1, 1), False, False),
    (1, 3, 8, 7, (1, 7), "same", (1, 1), False, True),
    (2, 3, 6, 7, (2, 4), (1, 2), (1, 1), False, True),  # even kernels, explicit padding
    (1, 2, 6, 9, (4, 6), (3, 3), (2, 1), True, False),
    (2, 3, 9, 9, (5, 5), (0, 0), (1, 1), False, True),  # no padding: output smaller than input
    (1, 2, 5, 6, (3, 3), (4, 6), (1, 1), True, True),  # padding beyond the kernel: larger output
    (2, 3, 9, 8, (3, 5), "same", (3, 2), False, True),  # dilation
    (2, 2, 3, 2, (13, 13), "same", (2, 2), True, True),  # dilated kernel much larger than the map
    (2, 17, 4, 5, (3, 3), "same", (1, 1), True, True),  # more channels than one channel block
    (1, 2, 20, 20, (3, 3), "same", (1, 1), False, True),  # more pixels than one tile
    (1, 2, 12, 40, (1, 31), "same", (1, 1), True, False),
]


def _case_id(case) -> str:
    n, c, h, w, (kh, kw), padding, (dh, dw), channels_last, bias = case
    pad = padding if isinstance(padding, str) else "p{}{}".format(*padding)
    fmt = "cl" if channels_last else "nchw"
    return f"n{n}c{c}_{h}x{w}_k{kh}x{kw}_{pad}_d{dh}{dw}_{fmt}{'_bias' if bias else ''}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_triton_matches_conv2d_float64(case):
    _compare(case)


@pytest.mark.parametrize("case", CASES[:2] + CASES[10:12], ids=_case_id)
def test_triton_matches_conv2d_float32(case):
    _compare(case, dtype=torch.float32, atol=2e-5)


def test_triton_backend_runs_kernels_not_the_torch_fallback(monkeypatch):
    """Without this, a backend that silently fell back to torch would pass every test above."""
    if not torch.cuda.is_available():
        assert dwconv_triton.is_available(torch.zeros(1))  # TRITON_INTERPRET=1 from conftest

    def refuse(*args, **kwargs):
        raise AssertionError("the triton backend called the torch reference")

    for direction in ("forward", "backward_input", "backward_weight"):
        monkeypatch.setattr(reference, direction, refuse)
    x, weight, b = _make(1, 2, 5, 5, (3, 3), False, True, torch.float64)
    x.requires_grad_(True)
    y = ops.dwconv2d(x, weight, b, backend="triton")
    y.sum().backward()
    torch.testing.assert_close(y, F.conv2d(x, weight, b, padding=1, groups=2))


def test_triton_reads_strided_views_and_expanded_gradients():
    """A sliced (non-contiguous) input and the stride-0 gradient of `y.sum()` (the dispatcher
    hands both to the kernels unchanged) are read through their strides."""
    base, weight, b = _make(2, 6, 9, 16, (5, 3), True, True)
    x = base[:, ::2, :, ::2].detach().requires_grad_(True)  # (2, 3, 9, 8), neither layout
    weight, b = weight[:3].requires_grad_(True), b[:3].requires_grad_(True)
    y = ops.dwconv2d(x, weight, b, padding=(2, 1), backend="triton")
    y.sum().backward()
    x_ref, w_ref, b_ref = (t.detach().clone().requires_grad_(True) for t in (x, weight, b))
    y_ref = F.conv2d(x_ref, w_ref, b_ref, padding=(2, 1), groups=3)
    y_ref.sum().backward()
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    for got, want in ((x.grad, x_ref.grad), (weight.grad, w_ref.grad), (b.grad, b_ref.grad)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    ones = torch.ones((), dtype=y.dtype).expand(y.shape)  # all strides 0
    grad_x = dwconv_triton.backward_input(ones, weight.detach(), (9, 8), (2, 1), (1, 1))
    grad_w = dwconv_triton.backward_weight(ones, x.detach(), (5, 3), (2, 1), (1, 1))
    torch.testing.assert_close(grad_x, x_ref.grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_w, w_ref.grad, atol=1e-12, rtol=0)


def test_triton_launchers_keep_memory_format_and_shapes():
    x, weight, b = _make(2, 3, 6, 5, (3, 5), True, True, torch.float32)
    y = dwconv_triton.forward(x, weight, b, (2, 3), (1, 2))
    ref = F.conv2d(x, weight, b, padding=(2, 3), dilation=(1, 2), groups=3)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)
    grad = _randn(ref.shape, torch.float32).contiguous(memory_format=torch.channels_last)
    grad_x = dwconv_triton.backward_input(grad, weight, (6, 5), (2, 3), (1, 2))
    assert grad_x.shape == x.shape and grad_x.is_contiguous(memory_format=torch.channels_last)
    grad_w = dwconv_triton.backward_weight(grad, x, (3, 5), (2, 3), (1, 2))
    assert grad_w.shape == weight.shape and grad_w.dtype == torch.float32


# fp16 / bf16 storage, fp32 accumulation. Reference: fp32 F.conv2d on the same rounded inputs and
# upstream gradient. Tolerance, relative to the largest reference value: fp16 1e-3 (2x its final
# rounding, 2^-11); bf16 1e-2: the CPU interpreter truncates fp32 -> bf16 on store (error < one
# bf16 ulp, 2^-7 = 7.8e-3), where a GPU rounds to nearest (half that).
HALF_TOLERANCE = {torch.float16: 1e-3, torch.bfloat16: 1e-2}
HALF_CASES = [
    (2, 5, 9, 9, (7, 7), "same", (1, 1), True, True),
    (1, 3, 6, 8, (1, 31), "same", (1, 1), False, True),
    (2, 3, 5, 7, (4, 3), (2, 3), (1, 2), False, False),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", HALF_CASES, ids=_case_id)
def test_triton_half_precision_close_to_fp32_reference(dtype, case):
    n, c, h, w, kernel, padding, dilation, channels_last, bias = case
    x, weight, b = _make(n, c, h, w, kernel, channels_last, bias, dtype)
    pad = _padding_pair(kernel, padding, dilation)
    shape = F.conv2d(x.float(), weight.float(), None, 1, pad, dilation, groups=c).shape
    grad = _randn(shape, dtype)

    def ours(x_, w_, b_):
        return ops.dwconv2d(x_, w_, b_, padding=padding, dilation=dilation, backend="triton")

    def reference(x_, w_, b_):
        return F.conv2d(x_, w_, b_, padding=pad, dilation=dilation, groups=c)

    y, grads = _run(ours, x, weight, b, grad)
    as_fp32 = [None if t is None else t.float() for t in (x, weight, b)]
    y_ref, grads_ref = _run(reference, *as_fp32, grad.float())
    assert y.dtype == dtype and all(g.dtype == dtype for g in grads)
    names = ("y", "grad_x", "grad_w", "grad_b")[: 1 + len(grads)]
    for name, got, want in zip(names, (y, *grads), (y_ref, *grads_ref), strict=True):
        error = (got.float() - want).abs().max().item()
        scale = want.abs().max().item()
        assert error <= HALF_TOLERANCE[dtype] * scale, f"{name}: {error:.3g} vs max {scale:.3g}"


@pytest.mark.parametrize("tuning", ["interpreter", "gpu"])
def test_triton_weight_grad_two_runs_bitwise_equal(monkeypatch, tuning):
    monkeypatch.setattr(dwconv_triton, "_TUNING", tuning)
    x, weight, _ = _make(2, 3, 6, 7, (3, 3), tuning == "gpu", False, torch.float32)
    grad = _randn((2, 3, 6, 7), torch.float32)
    first = dwconv_triton.backward_weight(grad, x, (3, 3), (1, 1), (1, 1))
    second = dwconv_triton.backward_weight(grad, x, (3, 3), (1, 1), (1, 1))
    assert torch.equal(first, second)
    reference = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 3, [False, True, False]
    )[1]
    torch.testing.assert_close(first, reference, atol=1e-5, rtol=0)


def check_dead_taps_are_never_read(h: int, w: int, rows: slice, cols: slice) -> None:
    """31x31 kernel on an h x w map whose taps outside [rows, cols] never touch it: poisoning
    them with NaN proves the kernels never load them (0 * NaN would be NaN), and every result
    equals F.conv2d with those taps zeroed (forward, input- and weight-gradient)."""
    x, weight, _ = _make(2, 3, h, w, (31, 31), False, False)
    reachable = torch.zeros(31, 31, dtype=torch.bool)
    reachable[rows, cols] = True
    poisoned = weight.masked_fill(~reachable, float("nan"))
    clean = weight.masked_fill(~reachable, 0.0)
    y = dwconv_triton.forward(x, poisoned, None, (15, 15), (1, 1))
    torch.testing.assert_close(y, F.conv2d(x, clean, padding=15, groups=3), atol=1e-12, rtol=0)
    grad = _randn(y.shape, y.dtype)
    grad_x = dwconv_triton.backward_input(grad, poisoned, (h, w), (15, 15), (1, 1))
    ref_x, ref_w, _ = torch.ops.aten.convolution_backward(
        grad, x, clean, None, [1, 1], [15, 15], [1, 1], False, [0, 0], 3, [True, True, False]
    )
    torch.testing.assert_close(grad_x, ref_x, atol=1e-12, rtol=0)
    grad_w = dwconv_triton.backward_weight(grad, x, (31, 31), (15, 15), (1, 1))
    torch.testing.assert_close(grad_w, ref_w, atol=1e-12, rtol=0)
    assert torch.all(grad_w[:, :, ~reachable] == 0)


def test_triton_skips_taps_that_only_read_padding():
    """5x5 map: taps more than 4 away from the centre never touch it."""
    check_dead_taps_are_never_read(5, 5, slice(11, 20), slice(11, 20))


def test_tap_span_matches_brute_force_enumeration():
    rng = random.Random(0)
    for _ in range(500):
        size, k, dil = rng.randint(1, 9), rng.randint(1, 31), rng.randint(1, 3)
        pad = rng.randint(-dil * (k - 1), dil * (k - 1) + 3)
        out = size + 2 * pad - dil * (k - 1)
        if out < 1:
            continue
        touching = [t for t in range(k) if any(0 <= o - pad + t * dil < size for o in range(out))]
        lo, hi = _geometry.live_taps(size, out, k, pad, dil)
        assert list(range(lo, hi)) == touching, (size, k, dil, pad)


# The GPU tile shapes (one tap per loop iteration, channel blocks of up to 64, several
# weight-grad splits) run here under the interpreter on small maps; slower, so few cases.
GPU_TILING_CASES = [
    (2, 3, 7, 7, (3, 3), "same", (1, 1), False, True),
    (2, 4, 5, 6, (2, 4), (5, 2), (2, 2), True, False),
]
GPU_TILING_SLOW_CASES = [
    (2, 70, 10, 9, (3, 5), (1, 2), (1, 1), True, True),  # two channel blocks of 64
    (2, 20, 10, 70, (3, 5), (1, 2), (1, 1), False, True),  # two NCHW tiles along W
    (2, 5, 9, 9, (13, 13), "same", (1, 1), True, False),
]


@pytest.mark.parametrize(
    "case",
    GPU_TILING_CASES + [pytest.param(c, marks=pytest.mark.slow) for c in GPU_TILING_SLOW_CASES],
    ids=_case_id,
)
def test_triton_gpu_tiling_matches_conv2d(monkeypatch, case):
    monkeypatch.setattr(dwconv_triton, "_TUNING", "gpu")
    _compare(case)


# The interpreter never runs Triton's compiler, so compile the kernels for an H100 (sm_90)
# here, with the specialisation a real launch gets (unit strides become constants, sizes and
# strides divisible by 16 are marked so): a GPU-only compile error fails here, and the
# channels_last tiles must turn into 16-byte vector loads of contiguous channels. (The
# tensor-core kernels of triton_tc.py are compiled in tests/test_dwconv_triton_tc.py.)
_COMPILE_FOR_H100 = """
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from ops.dwconv import triton as T

assert not T._INTERPRETED
target = GPUTarget("cuda", 90, 32)


def build(fn, pointers, unit_strides, divisible, tiles, **consts):
    consts["IDX"] = tl.int32
    if tiles is not None:
        consts.update({k: v for k, v in tiles.constexprs().items() if k != "num_warps"})
    consts.update({name: 1 for name in unit_strides})
    signature = {
        name: "constexpr" if name in consts else pointers.get(name, "i32") for name in fn.arg_names
    }
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in divisible}
    source = ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs)
    warps = 4 if tiles is None else tiles.num_warps
    return triton.compile(source, target=target, options=dict(num_warps=warps)).asm["ptx"]


for channels_last in (False, True):
    cl = channels_last
    tiles = T._direct_tiles((56, 56), 128, (31, 31), cl)
    ptx_fwd = build(
        T._direct_kernel,
        {p: "*bf16" for p in ("x_ptr", "w_ptr", "b_ptr", "y_ptr")},
        ("sxc", "swc", "syc") if cl else ("sxw", "sww", "syw"),
        ("x_ptr", "w_ptr", "b_ptr", "y_ptr", "C", "sxn", "syn")
        + (("sxh", "sxw", "swh", "sww", "syh", "syw") if cl else ("sxc", "swc", "syc")),
        tiles, HAS_BIAS=True, ACC=tl.float32,
    )
    print(cl, ptx_fwd.count("ld.global.v4"))

"""


def test_triton_kernels_compile_for_h100_with_vector_loads_and_tensor_cores():
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", _COMPILE_FOR_H100], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts = {
        line.split()[0]: list(map(int, line.split()[1:]))
        for line in done.stdout.split("\n")
        if line
    }
    # channels_last: vector loads (the weight-grad's kernels compile in test_dwconv_triton_slide.py
    # and test_dwconv_triton_tc.py)
    assert counts["True"][0] > 0, counts


# ----------------------------------------------------------------------------------------------
# Realistic shapes on a GPU (run with `pytest -m gpu` on a CUDA machine)

GPU_KERNELS = [(7, 7), (13, 13), (31, 31), (1, 31), (31, 1)]
GPU_TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "kernel, dtype, channels_last",
    list(itertools.product(GPU_KERNELS, GPU_TOLERANCE, [False, True])),
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v),
)
def test_triton_gpu_realistic_shapes_match_conv2d(kernel, dtype, channels_last):
    """(8, 128, 56, 56): forward, grad_x, grad_w against float64 F.conv2d on the same rounded
    inputs; error relative to the largest reference value."""
    x, weight, b = _make(8, 128, 56, 56, kernel, channels_last, True, dtype, device="cuda")
    grad = _randn(x.shape, dtype, "cuda")
    if channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)

    def ours(x_, w_, b_):
        return ops.dwconv2d(x_, w_, b_, backend="triton")

    def reference(x_, w_, b_):
        return F.conv2d(x_, w_, b_, padding=(kernel[0] // 2, kernel[1] // 2), groups=128)

    y, grads = _run(ours, x, weight, b, grad)
    as_fp64 = [t.double() for t in (x, weight, b)]
    y_ref, grads_ref = _run(reference, *as_fp64, grad.double())
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    assert y.dtype == dtype and y.is_contiguous(memory_format=memory_format)
    names = ("y", "grad_x", "grad_w", "grad_b")[: 1 + len(grads)]
    for name, got, want in zip(names, (y, *grads), (y_ref, *grads_ref), strict=True):
        error = (got.double() - want).abs().max().item()
        scale = want.abs().max().item()
        assert error <= GPU_TOLERANCE[dtype] * scale, f"{name}: {error:.3g} vs max {scale:.3g}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_triton_gpu_weight_grad_deterministic_and_clipped(channels_last):
    """31x31 on 7x7 maps (only the central 13x13 taps reach the map): bitwise-equal weight-grads
    over two runs, NaN-poisoned unreachable taps never read, results equal F.conv2d."""
    x, weight, _ = _make(16, 96, 7, 7, (31, 31), channels_last, False, torch.bfloat16, "cuda")
    reachable = torch.zeros(31, 31, dtype=torch.bool, device="cuda")
    reachable[9:22, 9:22] = True
    grad = _randn(x.shape, torch.bfloat16, "cuda")
    first = dwconv_triton.backward_weight(grad, x, (31, 31), (15, 15), (1, 1))
    second = dwconv_triton.backward_weight(grad, x, (31, 31), (15, 15), (1, 1))
    assert torch.equal(first, second)
    y = dwconv_triton.forward(
        x, weight.masked_fill(~reachable, float("nan")), None, (15, 15), (1, 1)
    )
    y_ref = F.conv2d(x.double(), weight.masked_fill(~reachable, 0).double(), padding=15, groups=96)
    assert (y.double() - y_ref).abs().max() <= 1.6e-2 * y_ref.abs().max()
    _, w_ref, _ = torch.ops.aten.convolution_backward(
        grad.double(), x.double(), weight.double(), None, [1, 1], [15, 15], [1, 1], False, [0, 0],
        96, [False, True, False],
    )  # fmt: skip
    assert (first.double() - w_ref).abs().max() <= 1e-4 * w_ref.abs().max()
