"""Mask-free fp32/fp64 sliding kernels (ops/dwconv/triton_slide.py) against F.conv2d.

Under TRITON_INTERPRET=1 (tests/conftest.py) with tiny shapes, on the GPU tile table (the
launchers' `tuning="gpu"`) and on the interpreter tiles; the masked kernels of triton.py are made
unusable to prove which kernels ran. A subprocess compiles every launch for sm_90 and runs ptxas
on it: no spills, and no shared-memory layout conversions in the forward.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import sm90_compile
import torch
import torch.nn.functional as F
from test_dwconv_triton import _make, _randn

import ops
from ops.dwconv import triton as dwconv_triton
from ops.dwconv import triton_slide

pytestmark = pytest.mark.skipif(dwconv_triton.triton is None, reason="triton is not importable")


class _Refuse:
    def __getitem__(self, grid):
        raise AssertionError("another kernel ran instead of the one under test")


@pytest.fixture(params=["gpu", "interpreter"])
def slide_only(request, monkeypatch):
    monkeypatch.setattr(dwconv_triton, "_TUNING", request.param)
    monkeypatch.setattr(dwconv_triton, "_direct_kernel", _Refuse())
    return request.param


# (n, c, h, w, kernel, padding, dilation, channels_last, bias); every case has >= 25 live taps
CASES = [
    (2, 3, 9, 10, (5, 5), (2, 2), (1, 1), False, True),
    (1, 4, 7, 9, (7, 7), (3, 3), (1, 1), True, True),  # channel block of 4
    (1, 6, 6, 5, (31, 31), (15, 15), (1, 1), True, False),  # kernel >> map: live window 11x9
    (2, 2, 9, 8, (5, 5), (4, 4), (2, 2), False, False),  # dilation
    (1, 2, 3, 70, (3, 51), (1, 75), (1, 3), False, True),  # 51 taps at dilation 3: 2 chunks
    (1, 2, 2, 140, (1, 129), (0, 64), (1, 1), True, True),  # 129 taps: 5 chunks of 26
    (1, 2, 5, 6, (5, 5), (6, 7), (1, 1), False, True),  # padding beyond the kernel
    (2, 3, 9, 9, (5, 6), (0, 0), (1, 1), True, False),  # no padding, even kernel
]


def _case_id(case) -> str:
    n, c, h, w, (kh, kw), (ph, pw), (dh, dw), cl, bias = case
    fmt = "cl" if cl else "nchw"
    return f"n{n}c{c}_{h}x{w}_k{kh}x{kw}_p{ph}{pw}_d{dh}{dw}_{fmt}{'_bias' if bias else ''}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_slide_kernels_match_conv2d_float64(slide_only, case):
    n, c, h, w, kernel, pad, dil, channels_last, bias = case
    x, weight, b = _make(n, c, h, w, kernel, channels_last, bias)
    y = dwconv_triton.forward(x, weight, b, pad, dil)
    y_ref = F.conv2d(x, weight, b, padding=pad, dilation=dil, groups=c)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.shape == y_ref.shape and y.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)
    grad = _randn(y.shape, y.dtype)
    grad_x = dwconv_triton.backward_input(grad, weight, (h, w), pad, dil)
    grad_w = dwconv_triton.backward_weight(grad, x, kernel, pad, dil)
    ref_x, ref_w, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], list(pad), list(dil), False, [0, 0], c, [True, True, False]
    )
    torch.testing.assert_close(grad_x, ref_x, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad_w, ref_w, atol=1e-10, rtol=0)


def test_slide_kernels_float32_through_the_op(slide_only):
    """fp32 storage through ops.dwconv2d (autograd, bias-grad), against float64 F.conv2d."""
    x, weight, b = _make(2, 8, 9, 11, (7, 7), True, True, torch.float32)
    leaves = [t.clone().requires_grad_(True) for t in (x, weight, b)]
    y = ops.dwconv2d(*leaves, padding=3, backend="triton")
    grad = _randn(y.shape, torch.float32)
    got = torch.autograd.grad(y, leaves, grad)
    ref_leaves = [t.double().requires_grad_(True) for t in (x, weight, b)]
    y_ref = F.conv2d(*ref_leaves, padding=3, groups=8)
    want = torch.autograd.grad(y_ref, ref_leaves, grad.double())
    assert y.dtype == torch.float32
    for a, e in zip((y, *got), (y_ref, *want), strict=True):
        torch.testing.assert_close(a.double(), e, atol=2e-5 * e.abs().max().item(), rtol=0)


def test_slide_weight_grad_deterministic_with_splits(monkeypatch):
    """GPU tiles with several image shares (SPLITS = 3): bitwise equal over two runs."""
    monkeypatch.setattr(dwconv_triton, "_TUNING", "gpu")
    x, weight, _ = _make(3, 4, 6, 7, (5, 5), True, False, torch.float32)
    grad = _randn((3, 4, 6, 7), torch.float32).contiguous(memory_format=torch.channels_last)
    first = dwconv_triton.backward_weight(grad, x, (5, 5), (2, 2), (1, 1))
    second = dwconv_triton.backward_weight(grad, x, (5, 5), (2, 2), (1, 1))
    assert torch.equal(first, second)
    ref = torch.ops.aten.convolution_backward(
        grad.double(), x.double(), weight.double(), None, [1, 1], [2, 2], [1, 1], False, [0, 0],
        4, [False, True, False],
    )[1]  # fmt: skip
    torch.testing.assert_close(first.double(), ref, atol=1e-5, rtol=0)


def test_slide_never_reads_taps_that_only_see_padding(slide_only):
    x, weight, _ = _make(2, 3, 5, 5, (31, 31), False, False)
    reachable = torch.zeros(31, 31, dtype=torch.bool)
    reachable[11:20, 11:20] = True
    y = dwconv_triton.forward(
        x, weight.masked_fill(~reachable, float("nan")), None, (15, 15), (1, 1)
    )
    ref = F.conv2d(x, weight.masked_fill(~reachable, 0.0), padding=15, groups=3)
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=0)


def test_tap_chunks_cap_the_unrolled_width():
    assert triton_slide.tap_chunks(31) == (1, 31)
    assert triton_slide.tap_chunks(129) == (5, 26)  # 130 executed for 129: one zero tap
    assert triton_slide.tap_chunks(51) == (2, 26)
    assert triton_slide.tap_chunks(8, 8) == (1, 8)
    for taps in range(1, 300):
        chunks, width = triton_slide.tap_chunks(taps)
        assert width <= triton_slide.MAX_TAP_W and chunks * width - taps < chunks


def test_index_type_is_int64_only_when_an_image_spans_2_31_elements():
    small = torch.empty(4, 384, 64, 64, device="meta")
    big = torch.empty(1, 2**15, 2**8, 2**8 + 1, device="meta")  # one image > 2^31 elements
    if not triton_slide._INTERPRETED:
        assert triton_slide.index_type(small) == triton_slide.tl.int32
    assert triton_slide.index_type(big) == triton_slide.tl.int64


class _Record:
    def __init__(self):
        self.grids = []

    def __getitem__(self, grid):
        self.grids.append(grid)
        return lambda *args, **kwargs: None


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_slide_grids_stay_within_hardware_limits_for_any_channel_count(monkeypatch, channels_last):
    """Grid axis 0 < 2^31, axes 1-2 <= 65535 (launches recorded on meta tensors)."""
    fwd, wgrad = _Record(), _Record()
    monkeypatch.setattr(triton_slide, "_slide_forward_kernel", fwd)
    monkeypatch.setattr(triton_slide, "_slide_weight_grad_kernel", wgrad)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for n, c in ((1, 200_003), (70_000, 8)):
        x = torch.empty(n, c, 16, 16, device="meta", memory_format=fmt)
        w = torch.empty(c, 1, 7, 7, device="meta")
        triton_slide.forward(x, w, None, (3, 3), (1, 1), (16, 16), "gpu")
        triton_slide.backward_weight(x, x, (7, 7), (3, 3), (1, 1), "gpu")
    for grid in fwd.grids + wgrad.grids:
        assert grid[0] < 2**31 and all(g <= 65535 for g in grid[1:]), grid


# Every launch of the scenario shapes compiled for an H100 with Triton's launch-time
# specialisation (launchers on meta tensors), then ptxas -v on the PTX.
_COMPILE_FOR_H100 = r"""
from ops.dwconv import triton_slide as S

assert not S._INTERPRETED


def compile_all(tag):
    for name, k in compiled():
        ptx = k.asm["ptx"]
        print(tag, name, spill_bytes(k), ptx.count("bar.sync"), ptx.count("fma.rn.f32"))


shapes = [((31, 31), 1, 32), ((13, 13), 1, 32), ((13, 13), 1, 14), ((1, 129), 1, 160),
          ((3, 51), 3, 160)]
for fmt, tag in ((torch.contiguous_format, "nchw"), (torch.channels_last, "cl")):
    for (kh, kw), dil, hw in shapes[: 1 if sys.argv[1] == "fast" else None]:
        x = torch.empty(8, 384, hw, hw, device="meta", memory_format=fmt)
        w = torch.empty(384, 1, kh, kw, device="meta")
        pad = (dil * (kh - 1) // 2, dil * (kw - 1) // 2)
        S.forward(x, w, None, pad, (dil, dil), (hw, hw), "gpu")
        S.backward_weight(x, x, (kh, kw), pad, (dil, dil), "gpu")
        compile_all(f"{tag}:{kh}x{kw}:d{dil}:{hw}")
    if sys.argv[1] == "all":  # bf16 where the tensor-core kernels do not apply (7x7 d2)
        x = torch.empty(8, 320, 14, 14, dtype=torch.bfloat16, device="meta", memory_format=fmt)
        w = torch.empty(320, 1, 7, 7, dtype=torch.bfloat16, device="meta")
        S.forward(x, w, None, (6, 6), (2, 2), (14, 14), "gpu")
        S.backward_weight(x, x, (7, 7), (6, 6), (2, 2), "gpu")
        compile_all(f"{tag}:bf16:7x7:d2:14")
"""


def _compile_for_h100(which: str) -> list[list[str]]:
    rows = [r for r in sm90_compile.run(_COMPILE_FOR_H100, which) if re.match(r"(nchw|cl):", r[0])]
    for tag, kernel, spills, barriers, fmas in rows:
        assert int(spills) == 0, (tag, kernel)
        assert int(fmas) > 0, (tag, kernel)
        # no layout conversion through shared memory anywhere in the forward
        if kernel == "_slide_forward_kernel":
            assert int(barriers) == 0, (tag, kernel, barriers)
    return rows


def test_slide_kernels_compile_for_h100_without_spills():
    """k = 31 on 32x32 maps, both layouts (the issue's example shape; 4 launches)."""
    assert len(_compile_for_h100("fast")) == 4


@pytest.mark.slow
def test_slide_kernels_compile_for_h100_without_spills_at_the_limits():
    """13x13 on 32x32 and 14x14, 1x129 (5 chunks), 3x51 at dilation 3, bf16 7x7 at dilation 2;
    both layouts."""
    assert len(_compile_for_h100("all")) == 2 * 2 * 6


_SCENARIO_LABELS = r"""
import sys
sys.path.insert(0, "tools")
import triton_sm90_scenarios as S
for label, fn, flops in S.scenarios():
    print(label, flops)
"""


def test_sm90_scenario_file_has_every_issue_label():
    """tools/triton_sm90_scenarios.py (the sm_90 report's input) names every
    {fp32|bf16}_{nchw|cl}_k{13|31}_{fwd|dgrad|wgrad} launch once, with 2 N C Ho Wo kh kw FLOPs."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", _SCENARIO_LABELS], env=env, capture_output=True, text=True, cwd=root
    )
    assert done.returncode == 0, done.stderr[-3000:]
    flops = dict(line.split() for line in done.stdout.splitlines())
    assert len(flops) == len(done.stdout.splitlines())  # labels are unique
    for dtype in ("fp32", "bf16"):
        for layout in ("nchw", "cl"):
            for k in (13, 31):
                for direction in ("fwd", "dgrad", "wgrad"):
                    label = f"{dtype}_{layout}_k{k}_{direction}"
                    assert int(flops[label]) == 2 * 64 * 384 * 32 * 32 * k * k, label


def test_slide_candidate_lists_start_with_the_table_entry():
    """The table stays the default: each candidate list (what a GPU run may pick from, every
    entry compiled by the sm_90 report) starts with the table's entry for 32-wide maps."""
    for layout in ("nchw", "cl"):
        assert (
            triton_slide.FORWARD_CANDIDATES[layout][0] == triton_slide.FORWARD_TABLE[(layout, 32)]
        )
        wgrad = triton_slide.WEIGHT_GRAD_CANDIDATES[layout]
        assert wgrad[0] == triton_slide.WEIGHT_GRAD_TABLE[(layout, 32)]
        for th, tw, bc, warps in triton_slide.FORWARD_CANDIDATES[layout] + wgrad:
            assert all(v & (v - 1) == 0 for v in (th * tw, bc, warps))  # powers of two


# ----------------------------------------------------------------------------------------------
# Opt-in TF32 for fp32 storage (ops/dwconv/triton_tc.py ALLOW_TF32): the tensor-core kernels
# with input_precision="tf32"; the interpreter emulates the operands' truncation to TF32.

# max |error| / max |reference| against float64, measured here at x = (2, 8, 16, 16), k = 13:
# y 8.1e-4, grad_x 8.0e-4, grad_w 6.9e-4 (the exact fp32 path: 2.9e-7, 4.5e-7, 1.0e-7)
TF32_ERROR = 2e-3


def test_tf32_is_off_by_default_and_fp32_takes_the_exact_kernels(monkeypatch):
    from ops.dwconv import triton_tc

    assert os.environ.get("ZOO_DWCONV_TF32") is None and triton_tc.ALLOW_TF32 is False
    monkeypatch.setattr(triton_tc, "ENABLED", True)
    x = torch.zeros(1, 2, 8, 8)
    assert not triton_tc.applies(x, 13) and triton_tc.applies(x.bfloat16(), 13)
    monkeypatch.setattr(triton_tc, "ALLOW_TF32", True)
    assert triton_tc.applies(x, 13) and not triton_tc.applies(x.double(), 13)
    monkeypatch.setenv("ZOO_DWCONV_TF32", "1")
    assert triton_tc.tf32_from_environment() is True
    monkeypatch.setenv("ZOO_DWCONV_TF32", "yes")
    with pytest.raises(ValueError, match="ZOO_DWCONV_TF32 must be 0 or 1, got 'yes'"):
        triton_tc.tf32_from_environment()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_tf32_mode_accuracy_against_float64(monkeypatch, channels_last):
    from ops.dwconv import triton_tc

    monkeypatch.setattr(dwconv_triton, "_TUNING", "gpu")
    monkeypatch.setattr(triton_tc, "ENABLED", True)
    monkeypatch.setattr(triton_tc, "ALLOW_TF32", True)
    monkeypatch.setattr(triton_slide, "_slide_forward_kernel", _Refuse())
    monkeypatch.setattr(triton_slide, "_slide_weight_grad_kernel", _Refuse())
    x, weight, _ = _make(2, 4, 12, 12, (13, 13), channels_last, False)
    grad = _randn(x.shape, torch.float64)
    y = dwconv_triton.forward(x.float(), weight.float(), None, (6, 6), (1, 1))
    gx = dwconv_triton.backward_input(grad.float(), weight.float(), (12, 12), (6, 6), (1, 1))
    gw = dwconv_triton.backward_weight(grad.float(), x.float(), (13, 13), (6, 6), (1, 1))
    ref_y = F.conv2d(x, weight, padding=6, groups=4)
    ref_x, ref_w, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [6, 6], [1, 1], False, [0, 0], 4, [True, True, False]
    )
    for name, got, want in (("y", y, ref_y), ("grad_x", gx, ref_x), ("grad_w", gw, ref_w)):
        error = ((got.double() - want).abs().max() / want.abs().max()).item()
        # above fp32 rounding (the TF32 truncation is in effect), within the documented bound
        assert 1e-5 < error < TF32_ERROR, (name, error)


# fp16 / bf16 storage where the tensor-core kernels do not apply (kernels narrower than 13):
# fp32 accumulation; tolerances relative to the largest fp32 reference value, as in
# tests/test_dwconv_triton.py (the interpreter truncates fp32 -> bf16 on store).
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_slide_kernels_half_precision(slide_only, dtype, channels_last):
    x, weight, b = _make(2, 4, 9, 8, (7, 7), channels_last, True, dtype)
    y = dwconv_triton.forward(x, weight, b, (6, 6), (2, 2))
    grad = _randn(y.shape, dtype)
    grad_w = dwconv_triton.backward_weight(grad, x, (7, 7), (6, 6), (2, 2))
    ref_y = F.conv2d(x.float(), weight.float(), b.float(), padding=6, dilation=2, groups=4)
    ref_w = torch.ops.aten.convolution_backward(
        grad.float(), x.float(), weight.float(), None, [1, 1], [6, 6], [2, 2], False, [0, 0], 4,
        [False, True, False],
    )[1]  # fmt: skip
    tolerance = {torch.float16: 1e-3, torch.bfloat16: 1e-2}[dtype]
    assert y.dtype == dtype and grad_w.dtype == torch.float32
    for got, want in ((y, ref_y), (grad_w, ref_w)):
        assert (got.float() - want).abs().max() <= tolerance * want.abs().max()


def test_direct_kernel_grids_stay_within_hardware_limits(monkeypatch):
    """The masked direct kernel (forwards with fewer than SLIDE_MIN_TAPS live taps) launches
    once per slice of at most 65535 channel blocks (NCHW: one channel per block)."""
    record = _Record()
    monkeypatch.setattr(dwconv_triton, "_TUNING", "gpu")
    monkeypatch.setattr(dwconv_triton, "_direct_kernel", record)
    x = torch.empty(1, 140_000, 8, 8, device="meta")
    dwconv_triton.forward(x, torch.empty(140_000, 1, 3, 3, device="meta"), None, (1, 1), (1, 1))
    assert [grid[1] for grid in record.grids] == [65535, 65535, 140_000 - 2 * 65535]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_direct_kernel_channel_slices_match_conv2d(monkeypatch, channels_last):
    """The per-slice launches (here slices of 2 channel blocks) give F.conv2d's result."""
    monkeypatch.setattr(dwconv_triton, "_TUNING", "gpu")
    monkeypatch.setattr(dwconv_triton, "_MAX_GRID_YZ", 2)
    x, weight, b = _make(2, 5, 6, 7, (3, 3), channels_last, True)
    y = dwconv_triton.forward(x, weight, b, (1, 1), (1, 1))
    ref = F.conv2d(x, weight, b, padding=1, groups=5)
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=0)
    grad = _randn(y.shape, y.dtype)
    grad_x = dwconv_triton.backward_input(grad, weight, (6, 7), (1, 1), (1, 1))
    ref_x = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 5, [True, False, False]
    )[0]
    torch.testing.assert_close(grad_x, ref_x, atol=1e-12, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tf32_mode_accuracy_on_a_gpu(monkeypatch):
    """The documented TF32 error on real tensor cores: (8, 64, 32, 32), k = 31, all directions."""
    from ops.dwconv import triton_tc

    monkeypatch.setattr(triton_tc, "ALLOW_TF32", True)
    x, weight, _ = _make(8, 64, 32, 32, (31, 31), False, False)
    x, weight = x.cuda(), weight.cuda()
    grad = _randn(x.shape, torch.float64).cuda()
    y = dwconv_triton.forward(x.float(), weight.float(), None, (15, 15), (1, 1))
    gx = dwconv_triton.backward_input(grad.float(), weight.float(), (32, 32), (15, 15), (1, 1))
    gw = dwconv_triton.backward_weight(grad.float(), x.float(), (31, 31), (15, 15), (1, 1))
    ref_y = F.conv2d(x, weight, padding=15, groups=64)
    ref_x, ref_w, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [15, 15], [1, 1], False, [0, 0], 64, [True, True, False]
    )
    for name, got, want in (("y", y, ref_y), ("grad_x", gx, ref_x), ("grad_w", gw, ref_w)):
        error = ((got.double() - want).abs().max() / want.abs().max()).item()
        assert error < TF32_ERROR, (name, error)
