"""The CPU side of ops.dwconv2d's `auto` backend, in float32 against F.conv2d in float64.

- our compiled kernels (ops/dwconv/native.py, ops/dwconv/csrc/dwconv_cpu.c): forward and
  weight-gradient, every compiled kernel height, widths across the 16-float vector boundary,
  maps smaller than the kernel, shifted (asymmetric, negative) windows; determinism;
- oneDNN's kernels phrased as forward convolutions (ops/dwconv/cpu.py): covered in float64 by
  tests/test_dwconv.py (the compiled kernels are float32-only), and here with them disabled;
- the fallback when no compiler works, and the routing cache in front of dwconv2d.
"""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import ops
from ops import _geometry, dwconv2d
from ops._layout import is_channels_last
from ops.dwconv import dispatch, functional
from ops.dwconv import native as dwconv_native

NUM_RANDOM_CASES = 120


def _random_case(rng: random.Random) -> dict:
    kh = rng.choice([1, 2, 3, 4, 5, 7, 9, 11, 13, 15, 16, 17, 31])
    kw = rng.choice([1, 2, 3, 5, 7, 13, 16, 17, 31])
    dilation = rng.choice([(1, 1)] * 4 + [(2, 1), (1, 2), (3, 3)])
    h, w = rng.choice([1, 3, 7, 14, 20]), rng.choice([1, 5, 15, 16, 17, 33])
    extent = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    if kh % 2 and kw % 2 and rng.random() < 0.6:
        padding = "same"
        ref_padding = (dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2)
    else:
        padding = tuple(
            max((e - s + 1) // 2, 0) + rng.choice([0, 0, 1, 3])
            for e, s in zip(extent, (h, w), strict=True)
        )
        ref_padding = padding
    return dict(
        n=rng.choice([1, 2, 3]), c=rng.choice([1, 3, 16, 20, 32]), h=h, w=w, kernel=(kh, kw),
        dilation=dilation, padding=padding, ref_padding=ref_padding,
        channels_last=rng.random() < 0.35, bias=rng.random() < 0.7,
    )  # fmt: skip


CASES = [_random_case(random.Random(1000 + seed)) for seed in range(NUM_RANDOM_CASES)]


def _case_id(case: dict) -> str:
    kh, kw = case["kernel"]
    pad = (
        case["padding"] if isinstance(case["padding"], str) else "".join(map(str, case["padding"]))
    )
    return (
        f"n{case['n']}c{case['c']}_{case['h']}x{case['w']}_k{kh}x{kw}_d{case['dilation'][0]}"
        f"{case['dilation'][1]}_p{pad}_{'cl' if case['channels_last'] else 'nchw'}"
        f"{'_b' if case['bias'] else ''}"
    )


def _run(case: dict, dtype, fn):
    """Output and (dx, dW, db) of fn on the case's tensors (drawn in float64, then cast)."""
    gen = torch.Generator().manual_seed(0)
    n, c, h, w = case["n"], case["c"], case["h"], case["w"]
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(dtype)
    if case["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, *case["kernel"], generator=gen, dtype=torch.float64).to(dtype)
    leaves = [x.requires_grad_(), weight.requires_grad_()]
    if case["bias"]:
        leaves.append(torch.randn(c, generator=gen, dtype=torch.float64).to(dtype).requires_grad_())
    y = fn(*leaves) if case["bias"] else fn(*leaves, None)
    grad = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(dtype)
    return y, torch.autograd.grad(y, leaves, grad)


def _assert_close_to_float64(ours, ref):
    for a, b in zip((ours[0], *ours[1]), (ref[0], *ref[1]), strict=True):
        assert a.dtype == torch.float32
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a.double(), b, rtol=0, atol=5e-6 * scale)


def _fresh_plans(monkeypatch):
    """Empty route caches, so routes are chosen anew under the test's monkeypatches."""
    monkeypatch.setattr(functional, "_plans", {})
    monkeypatch.setattr(dispatch, "_routes", {})


def _kernel_forward(x, weight, bias, top, left, out_hw, dilation=(1, 1), channels_last=False):
    """The C forward kernel itself, with an explicit (top, left) window."""
    run = dwconv_native.kernel_forward_plan(
        tuple(x.shape), tuple(weight.shape[2:]), top, left, out_hw, dilation, channels_last
    )
    return run(x, weight, bias)


def test_native_kernels_build_on_this_machine():
    # CI machines have gcc; if this fails, `auto` silently runs the slower oneDNN paths.
    assert dwconv_native.available()


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_auto_float32_matches_conv2d_float64(case):
    padding, ref_padding, dilation = case["padding"], case["ref_padding"], case["dilation"]
    ours = _run(
        case,
        torch.float32,
        lambda x, w, b: dwconv2d(x, w, b, padding=padding, dilation=dilation, backend="auto"),
    )
    ref = _run(
        case,
        torch.float64,
        lambda x, w, b: F.conv2d(x, w, b, 1, ref_padding, dilation, case["c"]),
    )
    _assert_close_to_float64(ours, ref)
    assert is_channels_last(ours[0]) == is_channels_last(ref[0])  # F.conv2d's layout rule


@pytest.mark.parametrize("kernel_height", [1, 2, 3, 7, 13, 15, 16, 17, 31])
@pytest.mark.parametrize("shift", [(0, 0), (3, -2), (-1, 4)])
@pytest.mark.parametrize("dilation", [(1, 1), (2, 3)])
def test_native_kernels_match_shifted_conv2d(kernel_height, shift, dilation):
    """y[y, x] = sum w[i, j] x[y - top + i dh, x - left + j dw] for any (top, left)."""
    top, left = shift
    dh, dw = dilation
    gen = torch.Generator().manual_seed(kernel_height)
    x = torch.randn(2, 5, 11, 19, generator=gen)
    weight = torch.randn(5, 1, kernel_height, 6, generator=gen)
    bias = torch.randn(5, generator=gen)
    out_hw = (9, 21)
    # reference: pad (or crop) x so that a padding-0 conv gives exactly out_hw
    bottom = out_hw[0] + dh * (kernel_height - 1) - 11 - top
    right = out_hw[1] + dw * (6 - 1) - 19 - left
    shifted = F.pad(x.double(), (left, right, top, bottom))
    y_ref = F.conv2d(shifted, weight.double(), bias.double(), 1, 0, dilation, 5)
    y = _kernel_forward(x, weight, bias, top, left, out_hw, dilation)
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=1e-5)
    grad = torch.randn(y.shape, generator=gen)
    grad_w_ref = torch.ops.aten.convolution_backward(
        grad.double(), shifted, weight.double(), None, [1, 1], [0, 0], list(dilation),
        False, [0, 0], 5, [False, True, False],
    )[1]  # fmt: skip
    grad_w = dwconv_native.kernel_weight_grad(grad, x, (kernel_height, 6), top, left, dilation)
    torch.testing.assert_close(grad_w.double(), grad_w_ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (7, 7), (13, 13), (31, 1), (5, 31)])
@pytest.mark.parametrize("shift", [(0, 0), (4, -3)])
@pytest.mark.parametrize("dilation", [(1, 1), (2, 3)])
def test_channels_last_kernels_match_shifted_conv2d(kernel, shift, dilation):
    top, left = shift
    dh, dw = dilation
    kh, kw = kernel
    gen = torch.Generator().manual_seed(kh * 100 + kw)
    x = torch.randn(2, 32, 12, 21, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(32, 1, kh, kw, generator=gen)
    out_hw = (10, 17)
    bottom = out_hw[0] + dh * (kh - 1) - 12 - top
    right = out_hw[1] + dw * (kw - 1) - 21 - left
    shifted = F.pad(x.double(), (left, right, top, bottom))
    if dilation == (1, 1):  # the channels_last forward has no dilation
        bias = torch.randn(32, generator=gen)
        run = dwconv_native.kernel_forward_plan(
            tuple(x.shape), kernel, top, left, out_hw, channels_last=True
        )
        y = run(x, weight, bias)
        assert y.is_contiguous(memory_format=torch.channels_last)
        y_ref = F.conv2d(shifted, weight.double(), bias.double(), 1, 0, 1, 32)
        torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=4e-6 * (kh * kw) ** 0.5)
    grad = torch.randn(2, 32, *out_hw, generator=gen).contiguous(memory_format=torch.channels_last)
    grad_w_ref = torch.ops.aten.convolution_backward(
        grad.double(), shifted, weight.double(), None, [1, 1], [0, 0], list(dilation),
        False, [0, 0], 32, [False, True, False],
    )[1]  # fmt: skip
    grad_w = dwconv_native.kernel_weight_grad(
        grad, x, kernel, top, left, dilation, channels_last=True
    )
    torch.testing.assert_close(grad_w.double(), grad_w_ref, rtol=0, atol=1e-4)


def test_native_kernels_bitwise_deterministic_across_thread_counts():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 30, 37, generator=gen)
    weight = torch.randn(40, 1, 13, 13, generator=gen)
    grad = torch.randn(3, 40, 30, 37, generator=gen)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 2):
            torch.set_num_threads(count)
            results.append(
                (
                    _kernel_forward(x, weight, None, 6, 6, (30, 37)),
                    dwconv_native.kernel_weight_grad(grad, x, (13, 13), 6, 6),
                )
            )
    finally:
        torch.set_num_threads(threads)
    for y, grad_w in results[1:]:
        assert torch.equal(y, results[0][0]) and torch.equal(grad_w, results[0][1])


@pytest.mark.parametrize("channels_last", [False, True])
def test_auto_routes_float32_training_to_the_native_kernels(monkeypatch, channels_last):
    _fresh_plans(monkeypatch)
    calls = []
    make_forward = dwconv_native.kernel_forward_plan

    def counting_forward_plan(*args, **kwargs):
        run = make_forward(*args, **kwargs)
        layout = "cl" if args[-1] else "nchw"
        return lambda *tensors: calls.append(f"forward_{layout}") or run(*tensors)

    weight_grad = dwconv_native.kernel_weight_grad
    monkeypatch.setattr(dwconv_native, "kernel_forward_plan", counting_forward_plan)
    monkeypatch.setattr(
        dwconv_native,
        "kernel_weight_grad",
        lambda *a: calls.append(f"weight_grad_{'cl' if a[-1] else 'nchw'}") or weight_grad(*a),
    )
    x = torch.randn(2, 16, 20, 20)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(16, 1, 13, 13, requires_grad=True)
    y = dwconv2d(x.requires_grad_(), weight, backend="auto")
    y.backward(
        torch.ones_like(y).contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )
    )
    layout = "cl" if channels_last else "nchw"
    # forward and input-gradient (the forward of the rotated kernel), then the weight-gradient
    # (13 rows: too tall for the channels_last one, which streams the map once per row)
    assert calls == [f"forward_{layout}", f"forward_{layout}", "weight_grad_nchw"]
    calls.clear()
    short = torch.randn(16, 1, 5, 9, requires_grad=True)
    y = dwconv2d(x, short, backend="auto")
    y.backward(torch.ones_like(y))
    assert calls[-1] == f"weight_grad_{layout}"


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


FALLBACK_CHECK = """
import warnings
import torch, torch.nn.functional as F
warnings.simplefilter("always")
from ops import dwconv2d
from ops.dwconv import native as dwconv_native
x = torch.randn(2, 8, 12, 12, requires_grad=True)
w = torch.randn(8, 1, 7, 7, requires_grad=True)
y = dwconv2d(x, w)
y.sum().backward()
xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
F.conv2d(xr, wr, None, 1, 3, 1, 8).sum().backward()
assert (x.grad.double() - xr.grad).abs().max() < 1e-4
assert (w.grad.double() - wr.grad).abs().max() < 1e-3
print("available", dwconv_native.available())
"""


def test_without_a_compiler_auto_falls_back_to_onednn_with_a_warning(tmp_path):
    result = _python(FALLBACK_CHECK, CC=str(tmp_path / "no-such-cc"), ZOO_CACHE_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "available False" in result.stdout
    assert "could not build dwconv_cpu.c" in result.stderr


AVX2_CHECK = """
import torch, torch.nn.functional as F
from ops.dwconv import native as dwconv_native
assert dwconv_native.available()
gen = torch.Generator().manual_seed(0)
for kh, kw in [(13, 13), (1, 31), (31, 1), (3, 3), (17, 5)]:
    x = torch.randn(2, 5, 23, 37, generator=gen)
    w = torch.randn(5, 1, kh, kw, generator=gen)
    g = torch.randn(2, 5, 23, 37, generator=gen)
    p = (kh // 2, kw // 2)
    y = dwconv_native.kernel_forward_plan(tuple(x.shape), (kh, kw), p[0], p[1], (23, 37))(
        x, w, None
    )
    dw = dwconv_native.kernel_weight_grad(g, x, (kh, kw), p[0], p[1])
    xr, wr = x.double(), w.double().requires_grad_()
    yr = F.conv2d(xr, wr, None, 1, p, 1, 5)
    yr.backward(g.double())
    assert (y.double() - yr).abs().max() < 1e-4, (kh, kw)
    assert (dw.double() - wr.grad).abs().max() < 1e-3, (kh, kw)
    xc = torch.randn(2, 16, 23, 37, generator=gen).contiguous(memory_format=torch.channels_last)
    wc = torch.randn(16, 1, kh, kw, generator=gen)
    run = dwconv_native.kernel_forward_plan(
        tuple(xc.shape), (kh, kw), p[0], p[1], (23, 37), channels_last=True
    )
    ref = F.conv2d(xc.double(), wc.double(), None, 1, p, 1, 16)
    assert (run(xc, wc, None).double() - ref).abs().max() < 1e-4, ("channels_last", kh, kw)
    gc = torch.randn(2, 16, 23, 37, generator=gen).contiguous(memory_format=torch.channels_last)
    dwc = dwconv_native.kernel_weight_grad(gc, xc, (kh, kw), p[0], p[1], channels_last=True)
    wr = wc.double().requires_grad_()
    F.conv2d(xc.double(), wr, None, 1, p, 1, 16).backward(gc.double())
    assert (dwc.double() - wr.grad).abs().max() < 1e-3, ("channels_last dW", kh, kw)
print("ok")
"""


@pytest.mark.skipif(
    platform.machine() != "x86_64" or "avx2" not in open("/proc/cpuinfo").read(),
    reason="builds for x86-64-v3 (AVX2) and runs the result",
)
def test_native_kernels_also_correct_when_built_for_avx2(tmp_path):
    # The kernels' 16-float vectors span two AVX2 registers there: a different code path.
    result = _python(AVX2_CHECK, ZOO_MARCH="x86-64-v3", ZOO_CACHE_DIR=str(tmp_path))
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_zoo_dwconv_native_0_disables_the_native_kernels_quietly(tmp_path):
    result = _python(FALLBACK_CHECK, ZOO_DWCONV_NATIVE="0", ZOO_CACHE_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "available False" in result.stdout
    assert "could not build" not in result.stderr


def test_onednn_formulations_match_conv2d_float32_when_native_is_off(monkeypatch):
    _fresh_plans(monkeypatch)
    monkeypatch.setattr(dwconv_native.LIBRARY, "get", lambda: None)
    for case in CASES[:30]:
        padding, ref_padding, dilation = case["padding"], case["ref_padding"], case["dilation"]
        ours = _run(
            case,
            torch.float32,
            lambda x, w, b, p=padding, d=dilation: dwconv2d(x, w, b, padding=p, dilation=d),
        )
        ref = _run(
            case,
            torch.float64,
            lambda x, w, b, p=ref_padding, d=dilation, c=case["c"]: F.conv2d(x, w, b, 1, p, d, c),
        )
        _assert_close_to_float64(ours, ref)


def test_live_taps_are_the_taps_that_read_the_map():
    # 31-tap kernel, "same" padding 15, on a 7-wide map: taps 9..21 reach it
    assert _geometry.live_taps(7, 7, 31, 15, 1) == (9, 22)
    # every tap is live when the map is larger than the kernel
    assert _geometry.live_taps(56, 56, 13, 6, 1) == (0, 13)
    # dilation 3, 3 taps, padding 3, 2-wide map: tap 0 reads -3..-2, tap 2 reads 3..4
    assert _geometry.live_taps(2, 2, 3, 3, 3) == (1, 2)


def test_routing_cache_keeps_validation_for_new_arguments():
    x = torch.randn(1, 4, 9, 9)
    w = torch.randn(4, 1, 5, 5)
    dwconv2d(x, w)  # cached
    with pytest.raises(ValueError, match="channel mismatch"):
        dwconv2d(x, torch.randn(3, 1, 5, 5))
    with pytest.raises(ValueError, match="dtype mismatch"):
        dwconv2d(x, w.double())
    with pytest.raises(ValueError, match="unknown dwconv backend"):
        dwconv2d(x, w, backend="cudnn")


def test_routing_cache_separates_grad_mode_backend_and_autocast():
    x = torch.randn(1, 4, 9, 9)
    w = torch.randn(4, 1, 5, 5, requires_grad=True)
    with torch.no_grad():
        assert not dwconv2d(x, w).requires_grad
    y = dwconv2d(x, w)
    assert y.requires_grad and y.grad_fn is not None
    before = set(functional._plans)
    previous = ops.get_backend()
    try:
        ops.set_backend("fft")
        torch.testing.assert_close(dwconv2d(x, w), y)
    finally:
        ops.set_backend(previous)
    assert len(set(functional._plans) - before) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dwconv2d(x, w).dtype == torch.bfloat16


def test_c_geometry_struct_and_its_ctypes_mirror_have_the_same_fields():
    """The C kernels take one named struct; its Python mirror must list the same fields in the
    same order (a drift would make the C side read the wrong numbers)."""
    import ctypes
    import re

    source = dwconv_native.SOURCE.read_text()
    body = re.search(r"typedef struct \{(.*?)\} dwconv_geometry;", source, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    c_fields = [name for decl in body.split(";") for name in re.findall(r"\w+", decl)[1:]]
    assert c_fields == [name for name, _ in dwconv_native.Geometry._fields_]
    library = dwconv_native.LIBRARY.require()
    assert library.dwconv_geometry_size() == ctypes.sizeof(dwconv_native.Geometry)
