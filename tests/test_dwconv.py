"""Correctness harness for ops.dwconv2d: every backend against F.conv2d.

- a sweep of random cases (float64: forward, dx, dW, db) per backend,
- float64 gradcheck, fp16/bf16 against an fp32 reference, bitwise determinism,
- memory format / dtype preservation, torch.compile, torch.export, TorchScript, fx, meta device,
- clear ValueErrors for bad input.
Triton kernels run under TRITON_INTERPRET=1 on CPU (tests/conftest.py), so shapes stay tiny.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from functools import partial

import pytest
import torch
import torch.nn.functional as F

import ops
from ops import DepthwiseConv2d, dwconv2d

BACKENDS = ["torch", "fft", "auto", "triton"]
NUM_RANDOM_CASES = 210


def _random_case(rng: random.Random) -> dict:
    """One random geometry covering squares 1..31, bands up to 1x51, dilation 1..3, maps smaller
    than the kernel, 1x1 maps, batch 1, odd channel counts, channels_last, bias on/off."""
    kind = rng.choice(["square", "square", "band_w", "band_h", "rect", "even"])
    if kind == "square":
        k = rng.choice([1, 3, 5, 7, 9, 13, 17, 21, 27, 31])
        kernel = (k, k)
    elif kind == "band_w":
        kernel = (1, rng.choice([3, 7, 11, 17, 31, 51]))
    elif kind == "band_h":
        kernel = (rng.choice([3, 7, 11, 17, 31, 51]), 1)
    elif kind == "rect":
        kernel = (rng.choice([1, 3, 5, 7]), rng.choice([3, 5, 9, 13]))
    else:  # even kernels need explicit padding
        kernel = (rng.choice([2, 4, 6]), rng.choice([2, 4, 6]))
    dilation = (rng.choice([1, 1, 2, 3]), rng.choice([1, 1, 2, 3]))
    h = rng.choice([1, 2, 3, 5, 6, 8, 9])
    w = rng.choice([1, 2, 4, 5, 7, 9])
    extent = [d * (k - 1) + 1 for d, k in zip(dilation, kernel, strict=True)]
    if kind == "even" or rng.random() < 0.25:
        # explicit symmetric padding, just enough (or more) to keep the output non-empty
        padding = tuple(
            max((e - s + 1) // 2, 0) + rng.choice([0, 0, 1, 2])
            for e, s in zip(extent, (h, w), strict=True)
        )
    else:
        padding = "same"
    return _case(
        rng.choice([1, 1, 2]), rng.choice([1, 2, 3, 5]), h, w, kernel, dilation, padding,
        channels_last=rng.random() < 0.4, bias=rng.random() < 0.6,
    )  # fmt: skip


def _case(n, c, h, w, kernel, dilation=(1, 1), padding="same", channels_last=False, bias=True):
    """A fixed geometry in the same form as `_random_case`'s."""
    return dict(
        n=n, c=c, h=h, w=w, kernel=kernel, dilation=dilation, padding=padding,
        channels_last=channels_last, bias=bias,
    )  # fmt: skip


CASES = [_random_case(random.Random(seed)) for seed in range(NUM_RANDOM_CASES)]


def _case_id(case: dict) -> str:
    kh, kw = case["kernel"]
    fmt = "cl" if case["channels_last"] else "nchw"
    pad = case["padding"]
    pad = pad if isinstance(pad, str) else "".join(map(str, pad))
    return (
        f"n{case['n']}c{case['c']}_{case['h']}x{case['w']}_k{kh}x{kw}_d{case['dilation'][0]}"
        f"{case['dilation'][1]}_p{pad}_{fmt}{'_b' if case['bias'] else ''}"
    )


def _tensors(case: dict, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(case["n"], case["c"], case["h"], case["w"], generator=gen, dtype=dtype)
    if case["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(case["c"], 1, *case["kernel"], generator=gen, dtype=dtype)
    bias = torch.randn(case["c"], generator=gen, dtype=dtype) if case["bias"] else None
    return x, weight, bias


def _reference_padding(case: dict) -> tuple[int, int]:
    if case["padding"] == "same":
        return tuple(
            d * (k - 1) // 2 for d, k in zip(case["dilation"], case["kernel"], strict=True)
        )
    return case["padding"]


def _forward_and_grads(fn, x, weight, bias, grad_seed: int = 1, grad_dtype=None):
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, weight)]
    if bias is not None:
        leaves.append(bias.detach().clone().requires_grad_(True))
    x_, w_ = leaves[:2]
    b_ = leaves[2] if bias is not None else None
    y = fn(x_, w_, b_)
    # drawn in float64 and rounded, so every dtype sees the same upstream gradient
    gen = torch.Generator().manual_seed(grad_seed)
    grad = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
    if grad_dtype is not None:
        grad = grad.to(grad_dtype).to(y.dtype)
    grads = torch.autograd.grad(y, leaves, grad)
    return y, grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_dwconv_matches_conv2d_float64_random_sweep(backend, case):
    x, weight, bias = _tensors(case)
    padding = _reference_padding(case)

    def ours(a, b, c):
        return dwconv2d(
            a, b, c, padding=case["padding"], dilation=case["dilation"], backend=backend
        )

    def reference(a, b, c):
        return F.conv2d(a, b, c, 1, padding, case["dilation"], case["c"])

    y, grads = _forward_and_grads(ours, x, weight, bias)
    y_ref, grads_ref = _forward_and_grads(reference, x, weight, bias)
    assert y.shape == y_ref.shape and y.dtype == torch.float64
    assert y.is_contiguous(memory_format=torch.channels_last) or not case["channels_last"]
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-9)
    for name, g, g_ref in zip(("dx", "dw", "db"), grads, grads_ref, strict=False):
        torch.testing.assert_close(
            g, g_ref, rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f"{n}: {m}"
        )


GRADCHECK_CASES = [
    _case(1, 2, 4, 5, (5, 5)),
    _case(1, 2, 3, 6, (1, 9), dilation=(1, 2), channels_last=True),
    _case(1, 2, 3, 3, (7, 7), bias=False),
    _case(2, 1, 4, 3, (2, 4), dilation=(2, 1), padding=(1, 2)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=_case_id)
def test_dwconv_gradcheck_float64(backend, case):
    x, weight, bias = _tensors(case)
    inputs = [t.requires_grad_(True) for t in (x, weight, bias) if t is not None]

    def fn(*args):
        b = args[2] if len(args) > 2 else None
        return dwconv2d(
            args[0], args[1], b, padding=case["padding"], dilation=case["dilation"], backend=backend
        )

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


# Half precision: storage in fp16/bf16, accumulation in fp32. The tolerance is relative to the
# output scale (sqrt of the number of taps for unit-variance data): bf16 keeps 8 mantissa bits
# (rel. 2^-8 ~ 4e-3 per rounding), fp16 11 bits (~5e-4); inputs are rounded too, so allow 3x.
HALF_TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
HALF_CASES = [
    _case(2, 4, 9, 8, (7, 7)),
    _case(1, 3, 8, 9, (13, 13), channels_last=True),
    _case(1, 5, 6, 9, (1, 31), bias=False),
    _case(2, 2, 7, 5, (5, 3), dilation=(2, 3), channels_last=True),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", HALF_CASES, ids=_case_id)
def test_dwconv_half_precision_close_to_fp32_reference(dtype, backend, case):
    x, weight, bias = _tensors(case, dtype=torch.float32)
    xh, wh = x.to(dtype), weight.to(dtype)
    bh = None if bias is None else bias.to(dtype)
    padding = _reference_padding(case)

    def ours(a, b, c):
        return dwconv2d(
            a, b, c, padding=case["padding"], dilation=case["dilation"], backend=backend
        )

    def reference(a, b, c):
        return F.conv2d(a, b, c, 1, padding, case["dilation"], case["c"])

    y, grads = _forward_and_grads(ours, xh, wh, bh)
    # the reference sees the same rounded inputs, computed in fp32
    y_ref, grads_ref = _forward_and_grads(
        reference, xh.float(), wh.float(), None if bh is None else bh.float(), grad_dtype=dtype
    )
    assert y.dtype == dtype and all(g.dtype == dtype for g in grads)
    tol = HALF_TOLERANCE[dtype]
    for name, a, b in zip(("y", "dx", "dw", "db"), (y, *grads), (y_ref, *grads_ref), strict=False):
        scale = b.abs().max().item() + 1e-6
        err = (a.float() - b).abs().max().item()
        assert err <= tol * scale * 3, f"{name}: max error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_dwconv_two_runs_are_bitwise_equal(backend):
    case = _case(2, 3, 9, 9, (9, 9), channels_last=True)
    x, weight, bias = _tensors(case, dtype=torch.float32)

    def fn(a, b, c):
        return dwconv2d(a, b, c, backend=backend)

    first = _forward_and_grads(fn, x, weight, bias)
    second = _forward_and_grads(fn, x, weight, bias)
    for a, b in zip((first[0], *first[1]), (second[0], *second[1]), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_dwconv_output_keeps_memory_format_and_dtype(backend, dtype, channels_last):
    x = torch.randn(2, 4, 6, 5, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(4, 1, 3, 5, dtype=dtype, requires_grad=True)
    x.requires_grad_(True)
    y = dwconv2d(x, weight, backend=backend)
    y.sum().backward()
    for t in (y, x.grad):
        assert t.dtype == dtype
        assert t.is_contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )


def test_dwconv_custom_op_path_matches_eager_path():
    """The registered op (used under compile/export) and the eager path give the same grads."""
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    w = torch.randn(3, 1, 1, 17, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    for backend in BACKENDS:
        eager = _forward_and_grads(partial(dwconv2d, backend=backend), x, w, b)
        op = _forward_and_grads(
            lambda a, c, d, name=backend: torch.ops.zoo.dwconv2d(a, c, d, [0, 8], [1, 1], name),
            x,
            w,
            b,
        )
        for u, v in zip((eager[0], *eager[1]), (op[0], *op[1]), strict=True):
            torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-10)


def test_dwconv_strided_routes_to_conv2d():
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(
        dwconv2d(x, w, stride=2, padding=1), F.conv2d(x, w, None, 2, 1, 1, 3)
    )


def test_dwconv_compiles_fullgraph_on_cpu_with_backward():
    module = torch.nn.Sequential(
        DepthwiseConv2d(4, 13), torch.nn.GELU(), DepthwiseConv2d(4, (1, 17))
    )
    compiled = torch.compile(module, fullgraph=True)
    x = torch.randn(2, 4, 12, 12, requires_grad=True)
    y_c = compiled(x)
    (g_c,) = torch.autograd.grad(y_c.square().sum(), x)
    y_e = module(x)
    (g_e,) = torch.autograd.grad(y_e.square().sum(), x)
    torch.testing.assert_close(y_c, y_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_c, g_e, rtol=1e-4, atol=1e-4)


def test_dwconv_exports_as_one_custom_op():
    module = torch.nn.Sequential(DepthwiseConv2d(4, 7), torch.nn.ReLU())
    x = torch.randn(1, 4, 10, 10)
    exported = torch.export.export(module, (x,))
    targets = [n.target for n in exported.graph.nodes if n.op == "call_function"]
    assert torch.ops.zoo.dwconv2d.default in targets
    torch.testing.assert_close(exported.module()(x), module(x))


def test_dwconv_torchscript_and_fx_match_eager():
    module = torch.nn.Sequential(
        DepthwiseConv2d(3, 9), torch.nn.ReLU(), DepthwiseConv2d(3, 3, stride=2)
    )
    x = torch.randn(2, 3, 11, 11)
    torch.testing.assert_close(torch.jit.script(module)(x), module(x))
    traced = torch.fx.symbolic_trace(module)
    assert torch.equal(traced(x), module(x))


def test_dwconv_on_meta_device_gives_shapes_and_format():
    module = DepthwiseConv2d(8, 31, device="meta")
    x = torch.empty(2, 8, 14, 20, device="meta").contiguous(memory_format=torch.channels_last)
    y = module(x)
    assert y.device.type == "meta" and y.shape == (2, 8, 14, 20)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y = dwconv2d(
        torch.empty(1, 8, 5, 5, device="meta"), module.weight, padding=(15, 15), dilation=1
    )
    assert y.shape == (1, 8, 5, 5)


def test_depthwise_module_state_dict_equals_nn_conv2d():
    ours = DepthwiseConv2d(6, (3, 7), bias=True)
    theirs = torch.nn.Conv2d(6, 6, (3, 7), padding=(1, 3), groups=6)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 8, 8)
    torch.testing.assert_close(ours(x), theirs(x))


def test_dwconv_follows_autocast_like_conv2d():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    w = torch.randn(4, 1, 5, 5, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = dwconv2d(x, w)
        expected = F.conv2d(x, w, None, 1, 2, 1, 4)
    assert y.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(y, expected)  # bf16 tolerances: the same rounding as F.conv2d


def test_set_backend_and_environment_variable():
    assert ops.get_backend() == "auto"
    try:
        ops.set_backend("fft")
        assert ops.get_backend() == "fft"
    finally:
        ops.set_backend("auto")
    with pytest.raises(ValueError, match="unknown dwconv backend 'cudnn'"):
        ops.set_backend("cudnn")
    code = "import ops; print(ops.get_backend())"
    env = dict(os.environ, ZOO_DWCONV_BACKEND="fft")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "fft"
    env["ZOO_DWCONV_BACKEND"] = "bogus"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "ZOO_DWCONV_BACKEND='bogus'" in bad.stderr


@pytest.mark.parametrize(
    "make_args, message",
    [
        (
            lambda: (torch.randn(3, 8, 8), torch.randn(3, 1, 3, 3)),
            "expects x of shape \\(N, C, H, W\\)",
        ),
        (
            lambda: (torch.randn(1, 3, 8, 8), torch.randn(3, 3, 3)),
            "weight of shape \\(C, 1, kh, kw\\)",
        ),
        (
            lambda: (torch.randn(1, 3, 8, 8), torch.randn(3, 2, 3, 3)),
            "weight of shape \\(C, 1, kh, kw\\)",
        ),
        (
            lambda: (torch.randn(1, 3, 8, 8), torch.randn(4, 1, 3, 3)),
            "x has 3 channels but weight has 4",
        ),
        (lambda: (torch.randn(1, 3, 8, 8), torch.randn(3, 1, 4, 4)), "needs an odd kernel"),
        (lambda: (torch.randn(1, 3, 8, 8), torch.randn(3, 1, 3, 3).double()), "dtype mismatch"),
        (
            lambda: (torch.randn(1, 3, 8, 8), torch.randn(3, 1, 3, 3, device="meta")),
            "device mismatch",
        ),
    ],
)
def test_dwconv_bad_input_raises_value_error_naming_problem(make_args, message):
    x, w = make_args()
    with pytest.raises(ValueError, match=message):
        dwconv2d(x, w)


def test_dwconv_bad_dilation_padding_bias():
    x, w = torch.randn(1, 3, 8, 8), torch.randn(3, 1, 3, 3)
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        dwconv2d(x, w, dilation=0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        dwconv2d(x, w, padding=-1)
    with pytest.raises(ValueError, match="bias must have shape \\(3,\\)"):
        dwconv2d(x, w, torch.randn(4))
    with pytest.raises(ValueError, match="smaller than the dilated kernel extent"):
        dwconv2d(x, torch.randn(3, 1, 21, 21), padding=0)
    with pytest.raises(ValueError, match="unknown dwconv backend"):
        dwconv2d(x, w, backend="cudnn")
    with pytest.raises(ValueError, match="needs an odd kernel"):
        DepthwiseConv2d(3, 4)


@pytest.mark.parametrize(
    "shape, kernel, channels_last",
    [
        # float64 never reaches the compiled float32 kernels (tests/test_dwconv_cpu.py does)
        ((1, 2, 12, 12), (7, 7), True),  # channels_last, narrow: F.conv2d's own autograd
        ((1, 2, 12, 12), (3, 3), False),  # NCHW: jit_dw forward, dgrad, dW as a forward conv
        ((1, 2, 12, 12), (7, 7), False),  # the same with a larger kernel
        ((1, 2, 40, 40), (9, 9), True),  # channels_last, narrow: F.conv2d's own autograd
        ((1, 2, 10, 24), (1, 17), False),  # wide: brdgmm forward, dW with explicit padding
        ((1, 2, 24, 10), (17, 1), True),  # tall band: F.conv2d's own autograd
        ((1, 2, 60, 60), (21, 21), False),  # >= 400 taps on >= 56x56: FFT weight-gradient
        ((1, 2, 5, 7), (31, 31), False),  # kernel larger than the map: dead taps cropped
    ],
)
def test_dwconv_auto_cpu_policy_every_path_matches_conv2d(shape, kernel, channels_last):
    case = _case(shape[0], shape[1], shape[2], shape[3], kernel, channels_last=channels_last)
    x, weight, bias = _tensors(case)
    padding = _reference_padding(case)
    ours = _forward_and_grads(lambda a, b, c: dwconv2d(a, b, c, backend="auto"), x, weight, bias)
    ref = _forward_and_grads(
        lambda a, b, c: F.conv2d(a, b, c, 1, padding, 1, shape[1]), x, weight, bias
    )
    for a, b in zip((ours[0], *ours[1]), (ref[0], *ref[1]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert ours[0].is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("backend", BACKENDS)
def test_dwconv_channel_slice_of_channels_last_stays_channels_last_like_conv2d(backend):
    full = torch.randn(2, 8, 6, 7, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last
    )
    x = full[:, 2:5]  # a strided view, neither contiguous format
    w = torch.randn(3, 1, 3, 5, dtype=torch.float64)
    y = dwconv2d(x, w, backend=backend)
    y_ref = F.conv2d(x, w, None, 1, (1, 2), 1, 3)
    torch.testing.assert_close(y, y_ref)
    assert y_ref.is_contiguous(memory_format=torch.channels_last)
    assert y.is_contiguous(memory_format=torch.channels_last)
