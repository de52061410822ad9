"""Tensor-core Triton kernels of the depthwise op (ops/dwconv/triton_tc.py) against F.conv2d.

Without a GPU they run in Triton's CPU interpreter (tests/conftest.py sets TRITON_INTERPRET=1):
the tile table is the GPU's (stacked images, Toeplitz bands, tensor descriptors), only the
16-bit operands are upcast before tl.dot. The float64 harness opens the kernels to float64 and
every kernel width; both input paths (TMA descriptors, and the pointer loads used where
descriptors cannot address the map) run on every case. A subprocess compiles the kernels for
sm_90 and checks for wgmma and TMA instructions.
"""

from __future__ import annotations

import dataclasses

import pytest
import sm90_compile
import torch
import torch.nn.functional as F
from test_dwconv_triton import _make, _randn, check_dead_taps_are_never_read

import ops
from ops.dwconv import triton as dwconv_triton
from ops.dwconv import triton_slide, triton_tc

pytestmark = pytest.mark.skipif(dwconv_triton.triton is None, reason="triton is not importable")


def _padding_pair(kernel, padding):
    return tuple(k // 2 for k in kernel) if padding == "same" else padding


class _Refuse:
    def __getitem__(self, grid):
        raise AssertionError("a direct kernel ran instead of a tensor-core kernel")


@pytest.fixture
def tc_everywhere(monkeypatch):
    """The tensor-core kernels for float64 and every kernel width; the direct kernels refuse."""
    monkeypatch.setattr(triton_tc, "ENABLED", True)
    monkeypatch.setattr(triton_tc, "DTYPES", (torch.float64,))
    monkeypatch.setattr(triton_tc, "MIN_WIDTH", 1)
    monkeypatch.setattr(dwconv_triton, "_direct_kernel", _Refuse())
    monkeypatch.setattr(triton_slide, "_slide_weight_grad_kernel", _Refuse())


@pytest.fixture(params=["tma", "pointers"])
def input_path(request, monkeypatch):
    """Which loads the kernels use; records every descriptor decision of the launchers."""
    taken = []
    real = triton_tc._descriptor

    def descriptor(t, box):
        got = real(t, box) if request.param == "tma" else (t, False)
        taken.append(got[1])
        return got

    monkeypatch.setattr(triton_tc, "_descriptor", descriptor)
    return request.param, taken


# (n, c, h, w, kernel, padding, dilation, channels_last, bias); W even keeps float64 rows
# 16-byte aligned, so the "tma" runs take descriptors (checked), odd W would not.
CASES = [
    (2, 3, 8, 16, (3, 13), "same", (1, 1), False, True),
    (3, 2, 7, 10, (5, 31), "same", (1, 1), True, False),  # 3 images in groups of 4, cl
    (1, 2, 9, 12, (3, 7), (0, 9), (1, 3), False, True),  # dilation, padding beyond the kernel
    (2, 2, 6, 6, (2, 4), (5, 2), (2, 2), True, False),  # even kernel, negative dgrad padding
    (1, 2, 5, 6, (31, 31), "same", (1, 1), False, True),  # kernel larger than the map
]


def _case_id(case) -> str:
    n, c, h, w, (kh, kw), padding, (dh, dw), channels_last, bias = case
    pad = padding if isinstance(padding, str) else "p{}{}".format(*padding)
    fmt = "cl" if channels_last else "nchw"
    return f"n{n}c{c}_{h}x{w}_k{kh}x{kw}_{pad}_d{dh}{dw}_{fmt}{'_bias' if bias else ''}"


def _check_float64(case):
    n, c, h, w, kernel, padding, dilation, channels_last, bias = case
    x, weight, b = _make(n, c, h, w, kernel, channels_last, bias)
    pad = _padding_pair(kernel, padding)
    leaves = [t.clone().requires_grad_(True) for t in (x, weight) + ((b,) if bias else ())]
    y = ops.dwconv2d(*leaves[:2], leaves[2] if bias else None, padding=padding,
                     dilation=dilation, backend="triton")  # fmt: skip
    refs = [t.clone().requires_grad_(True) for t in (x, weight) + ((b,) if bias else ())]
    y_ref = F.conv2d(refs[0], refs[1], refs[2] if bias else None, padding=pad,
                     dilation=dilation, groups=c)  # fmt: skip
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)
    grad = _randn(y.shape, y.dtype)
    got = torch.autograd.grad(y, leaves, grad)
    want = torch.autograd.grad(y_ref, refs, grad)
    for name, g, r in zip(("grad_x", "grad_w", "grad_b"), got, want, strict=False):
        torch.testing.assert_close(g, r, atol=1e-10, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_tc_kernels_match_conv2d_float64(tc_everywhere, input_path, case):
    path, taken = input_path
    _check_float64(case)
    assert taken and all(taken) == (path == "tma"), taken


def test_tc_kernels_several_row_and_column_tiles(tc_everywhere, monkeypatch):
    """Small tiles force several row tiles, column tiles and image groups per launch."""
    real = triton_tc.config

    def small(*args):
        cfg = real(*args)
        return dataclasses.replace(cfg, img=2, block_h=8, block_n=16)

    monkeypatch.setattr(triton_tc, "config", small)
    _check_float64((3, 2, 20, 40, (5, 13), "same", (1, 1), False, True))


def test_tc_kernels_read_strided_views_and_expanded_gradients(tc_everywhere):
    """A stride-0 upstream gradient (y.sum()) cannot be a descriptor: pointer loads take it."""
    x, weight, _ = _make(2, 3, 6, 8, (3, 13), False, False)
    ones = torch.ones((), dtype=x.dtype).expand(2, 3, 6, 8)
    ref_x, ref_w, _ = torch.ops.aten.convolution_backward(
        ones.contiguous(), x, weight, None, [1, 1], [1, 6], [1, 1], False, [0, 0], 3,
        [True, True, False],
    )  # fmt: skip
    grad_x = dwconv_triton.backward_input(ones, weight, (6, 8), (1, 6), (1, 1))
    grad_w = dwconv_triton.backward_weight(ones, x, (3, 13), (1, 6), (1, 1))
    torch.testing.assert_close(grad_x, ref_x, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad_w, ref_w, atol=1e-10, rtol=0)


def test_tc_kernels_never_read_taps_that_only_see_padding(tc_everywhere):
    """31x31 on a 5x6 map: NaN in the taps that never reach the map must not leak (0 * NaN)."""
    check_dead_taps_are_never_read(5, 6, slice(11, 20), slice(10, 21))


# fp16 / bf16 storage through the default selection (kernel width >= 13), fp32 accumulation.
# Reference: fp32 F.conv2d on the same rounded inputs; tolerance relative to the largest
# reference value (as in test_dwconv_triton.py: bf16 1e-2 since the interpreter truncates on
# store, fp16 1e-3). (2, 3, 32, 32) k=31 takes the table's tiles of the example shape
# (two images stacked, BLOCK_N 32, BLOCK_K 64).
HALF_TOLERANCE = {torch.float16: 1e-3, torch.bfloat16: 1e-2}
HALF_CASES = [
    (2, 3, 32, 32, (31, 31), "same", (1, 1), False, True),
    (2, 2, 7, 12, (13, 13), "same", (1, 1), True, True),
    (1, 2, 6, 7, (3, 13), (1, 6), (1, 1), False, False),  # odd W: pointer loads
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", HALF_CASES, ids=_case_id)
def test_tc_half_precision_close_to_fp32_reference(monkeypatch, dtype, case):
    monkeypatch.setattr(triton_tc, "ENABLED", True)
    monkeypatch.setattr(dwconv_triton, "_direct_kernel", _Refuse())
    monkeypatch.setattr(triton_slide, "_slide_weight_grad_kernel", _Refuse())
    n, c, h, w, kernel, padding, dilation, channels_last, bias = case
    x, weight, b = _make(n, c, h, w, kernel, channels_last, bias, dtype)
    pad = _padding_pair(kernel, padding)
    leaves = [t.clone().requires_grad_(True) for t in (x, weight) + ((b,) if bias else ())]
    y = ops.dwconv2d(*leaves[:2], leaves[2] if bias else None, padding=padding,
                     dilation=dilation, backend="triton")  # fmt: skip
    refs = [t.float().requires_grad_(True) for t in (x, weight) + ((b,) if bias else ())]
    y_ref = F.conv2d(refs[0], refs[1], refs[2] if bias else None, padding=pad,
                     dilation=dilation, groups=c)  # fmt: skip
    grad = _randn(y.shape, dtype)
    got = torch.autograd.grad(y, leaves, grad)
    want = torch.autograd.grad(y_ref, refs, grad.float())
    assert y.dtype == dtype and all(g.dtype == dtype for g in got)
    names = ("y", "grad_x", "grad_w", "grad_b")
    for name, g, r in zip(names, (y, *got), (y_ref, *want), strict=False):
        error = (g.float() - r).abs().max().item()
        scale = r.abs().max().item()
        assert error <= HALF_TOLERANCE[dtype] * scale, f"{name}: {error:.3g} vs max {scale:.3g}"


def test_tc_weight_grad_two_runs_bitwise_equal(monkeypatch):
    monkeypatch.setattr(triton_tc, "ENABLED", True)
    x, _, _ = _make(3, 2, 8, 16, (5, 13), True, False, torch.bfloat16)
    grad = _randn(x.shape, torch.bfloat16)
    first = triton_tc.backward_weight(grad, x, (5, 13), (2, 6), (1, 1))
    second = triton_tc.backward_weight(grad, x, (5, 13), (2, 6), (1, 1))
    assert first.dtype == torch.float32 and torch.equal(first, second)


def test_tc_table_tiles_and_useful_fraction():
    """The table's choices for the issue's example shape, from the rules in `config`."""
    k31 = triton_tc.config("forward", 64, (32, 32), 31, 15, 1, 2)
    assert (k31.img, k31.block_h, k31.block_n, k31.block_k, k31.shift) == (4, 32, 32, 64, 1)
    assert k31.block_m == 128 and k31.useful_fraction(31) == 31 / 64
    k13 = triton_tc.config("forward", 64, (32, 32), 13, 6, 1, 2)
    assert (k13.img, k13.block_n, k13.block_k, k13.shift) == (8, 16, 32, 2)
    wg13 = triton_tc.config("weight_grad", 64, (32, 32), 13, 6, 1, 2)
    assert wg13.block_k == 64 and wg13.block_n == 32  # wgmma needs M_gemm = BLOCK_K >= 64
    assert triton_tc.config("forward", 8, (56, 56), 129, 64, 3, 2) is None  # band > 256
    # the bands' table stays under MAX_TABLE_BYTES: narrower tiles, then the direct kernels
    wide = triton_tc.config("forward", 64, (56, 56), 51, 25, 1, 2, 384 * 51)
    assert (wide.block_n, wide.block_k) == (16, 128)
    assert triton_tc.config("forward", 64, (56, 56), 51, 25, 1, 2, 1024 * 51) is None
    cands = triton_tc.candidates(k31)
    assert cands[0] == k31 and len(set(cands)) == len(cands)


# Compile the launches for an H100 (sm_90) with Triton's own launch-time specialisation, the
# launchers called on meta tensors (nothing runs): descriptors must become TMA loads
# (cp.async.bulk.tensor) and the dots wgmma.
_COMPILE_FOR_H100 = r"""
from ops.dwconv import triton_tc as TC

assert not TC._INTERPRETED


def meta(shape, fmt=torch.contiguous_format):
    return torch.empty(shape, dtype=torch.bfloat16, device="meta", memory_format=fmt)


which = sys.argv[1]
cases = [((64, 384, 32, 32), 31), ((64, 384, 32, 32), 13), ((64, 160, 28, 28), 13)]
for shape, k in cases:
    n, c, h, w = shape
    x, wt = meta(shape), meta((c, 1, k, k))
    fwd = TC.config("forward", n, (h, w), k, k // 2, 1, 2)
    count = len(TC.candidates(fwd)) if which == "all" else 1
    for i in range(count):
        TC.FORCE_CANDIDATE = i if which == "all" else None
        TC.forward(x, wt, None, (k // 2, k // 2), (1, 1), (h, w))
        TC.backward_weight(x, x, (k, k), (k // 2, k // 2), (1, 1))
        for name, kernel in compiled():
            ptx = kernel.asm["ptx"]
            tma = ptx.count("cp.async.bulk.tensor.4d")
            print(f"{w}:{k}:{i}", name, ptx.count("wgmma.mma_async"), tma)
"""


def _compile_for_h100(which: str) -> list[list[str]]:
    return sm90_compile.run(_COMPILE_FOR_H100, which)


def _check_compiled(rows):
    assert rows
    for tag, kernel, wgmma, tma in rows:
        assert int(wgmma) > 0, (tag, kernel)  # Hopper tensor-core instructions
        # the input boxes: W = 32 rows are 16-byte aligned (4-D TMA), W = 28 are not (pointer
        # loads; the forward's bands are 2-D TMA loads in both)
        assert (int(tma) > 0) == tag.startswith("32:"), (tag, kernel, tma)


def test_tc_kernels_compile_for_h100_with_wgmma_and_tma():
    rows = _compile_for_h100("table")
    assert len(rows) == 6
    _check_compiled(rows)


@pytest.mark.slow
def test_tc_every_candidate_config_compiles_for_h100():
    rows = _compile_for_h100("all")
    assert len(rows) == 2 * sum(
        len(triton_tc.candidates(triton_tc.config("forward", 64, (w, w), k, k // 2, 1, 2)))
        for w, k in ((32, 31), (32, 13), (28, 13))
    )
    _check_compiled(rows)


_COMPILE_LIMITS_FOR_H100 = r"""
from ops.dwconv import triton_tc as TC

for fmt in (torch.contiguous_format, torch.channels_last):
    for (kh, kw), dil in (((1, 129), 1), ((3, 51), 3)):
        x = torch.empty(8, 384, 32, 160, dtype=torch.bfloat16, device="meta", memory_format=fmt)
        pad = (dil * (kh - 1) // 2, dil * (kw - 1) // 2)
        assert TC.backward_weight(x, x, (kh, kw), pad, (dil, dil)) is not None
        for name, kernel in compiled():
            print(f"{kh}x{kw}", name, kernel.metadata.num_warps, spill_bytes(kernel))
"""


@pytest.mark.slow
def test_tc_weight_grad_compiles_without_spills_at_the_widest_bands():
    """BLOCK_K = 256 (kw = 129; 51 taps at dilation 3): 4 warps spilled 364-384 B; 8 do not."""
    rows = [r for r in sm90_compile.run(_COMPILE_LIMITS_FOR_H100) if "x" in r[0]]
    assert len(rows) == 4
    for tag, kernel, warps, spills in rows:
        assert kernel == "_tc_weight_grad_kernel" and int(warps) == 8, (tag, kernel, warps)
        assert int(spills) == 0, (tag, kernel)


# ----------------------------------------------------------------------------------------------
# On a CUDA device (`pytest -m gpu`): both input paths at a realistic shape, against float64.


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("k", [13, 31])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_tc_gpu_both_input_paths_match_float64(monkeypatch, input_path, k, channels_last, dtype):
    x, weight, b = _make(8, 64, 32, 32, (k, k), channels_last, True, dtype)
    x, weight, b = x.cuda(), weight.cuda(), b.cuda()
    grad = _randn(x.shape, dtype).cuda()
    pad = (k // 2, k // 2)
    y = triton_tc.forward(x, weight, b, pad, (1, 1), (32, 32))
    grad_x = dwconv_triton.backward_input(grad, weight, (32, 32), pad, (1, 1))
    grad_w = triton_tc.backward_weight(grad, x, (k, k), pad, (1, 1))
    x64, w64, g64 = x.double(), weight.double(), grad.double()
    y_ref = F.conv2d(x64, w64, b.double(), padding=pad, groups=64)
    ref_x, ref_w, _ = torch.ops.aten.convolution_backward(
        g64, x64, w64, None, [1, 1], list(pad), [1, 1], False, [0, 0], 64, [True, True, False]
    )
    tolerance = 1.6e-2 if dtype == torch.bfloat16 else 2e-3
    for name, got, want in (("y", y, y_ref), ("grad_x", grad_x, ref_x), ("grad_w", grad_w, ref_w)):
        error = (got.double() - want).abs().max().item()
        assert error <= tolerance * want.abs().max().item(), f"{name}: {error:.3g}"
    assert torch.equal(grad_w, triton_tc.backward_weight(grad, x, (k, k), pad, (1, 1)))
