"""Correctness harness for ops.selective_scan: every backend against the sequential reference.

The ground truth is the sequential definition (`reference.scan_with(reference.sequential,
...)`, mamba's `selective_scan_ref` written out) in float64, and PyTorch's autograd through it
for the gradients, so every backend's hand-written backward (the reference's included) is
checked against derivatives nobody wrote by hand. Also: a tiny case worked out by hand, the
group convention, float64 gradcheck, fp16/bf16 storage, the final state, the backend switch,
meta tensors and export, and ValueErrors naming the bad argument.

The helpers at the top are shared with the other tests/test_scan_*.py files. Triton kernels run
under TRITON_INTERPRET=1 on CPU (tests/conftest.py), so their cases stay tiny.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys

import pytest
import torch

import ops
from ops.scan import dispatch, reference
from ops.scan import triton as scan_triton

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
BACKENDS = ["reference", "chunked", "native", "triton", "auto"]


def case(batch=1, dim=2, length=5, dstate=3, B="variable", C="variable", groups=1, D=True,
         z=True, bias=True, softplus=True) -> dict:  # fmt: skip
    """B, C: "fixed" (dim, N), "variable" (batch, N, L) or "grouped" (batch, groups, N, L)."""
    return dict(batch=batch, dim=dim, length=length, dstate=dstate, B=B, C=C, groups=groups,
                D=D, z=z, bias=bias, softplus=softplus)  # fmt: skip


def random_case(rng: random.Random) -> dict:
    """Odd and even dims, L = 1 and lengths around the 64-step chunk, N from 1 to 16, fixed,
    variable and grouped B / C, every optional argument on or off."""
    groups = rng.choice([1, 2, 3])
    dim = groups * rng.choice([1, 2, 3, 5, 7])
    kinds = ["fixed", "variable", "grouped"] if groups > 1 else ["fixed", "variable"]
    B, C = rng.choice(kinds), rng.choice(kinds)
    if {B, C} == {"variable", "grouped"}:  # variable B and C share their groups (as in mamba)
        B = C
    return case(
        batch=rng.choice([1, 2]), dim=dim, length=rng.choice([1, 2, 5, 17, 63, 64, 65, 130]),
        dstate=rng.choice([1, 3, 4, 5, 8, 16]), B=B, C=C,
        groups=groups, D=rng.random() < 0.7, z=rng.random() < 0.5, bias=rng.random() < 0.7,
        softplus=rng.random() < 0.7,
    )  # fmt: skip


def case_id(c: dict) -> str:
    flags = "".join(k for k in ("D", "z", "bias", "softplus") if c[k])
    return (
        f"b{c['batch']}d{c['dim']}L{c['length']}N{c['dstate']}_B{c['B'][0]}C{c['C'][0]}"
        f"g{c['groups']}_{flags}"
    )


def make_inputs(c: dict, dtype=torch.float64, seed=0) -> dict:
    """The case's tensors, drawn in float64 and cast. delta' stays positive and moderate (as
    softplus makes it): negative steps would make the recurrence grow without bound."""
    gen = torch.Generator().manual_seed(seed)
    b, d, L, n = c["batch"], c["dim"], c["length"], c["dstate"]

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    def bc(kind):
        return {"fixed": (d, n), "variable": (b, n, L), "grouped": (b, c["groups"], n, L)}[kind]

    t = dict(
        u=randn(b, d, L),
        delta=randn(b, d, L) - 1.0 if c["softplus"] else 0.3 * rand(b, d, L) + 0.05,
        A=-(0.1 + 2 * rand(d, n)),
        B=randn(*bc(c["B"])),
        C=randn(*bc(c["C"])),
        D=randn(d) if c["D"] else None,
        z=randn(b, d, L) if c["z"] else None,
        delta_bias=0.3 * rand(d) if c["bias"] else None,
    )
    return {k: None if v is None else v.to(dtype) for k, v in t.items()}


def upstream(c: dict, dtype=torch.float64, seed=1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(c["batch"], c["dim"], c["length"], generator=gen, dtype=torch.float64).to(
        dtype
    )


def _grouped(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(1) if t.dim() == 3 else t


def _differentiate(fn, inputs: dict, grad: torch.Tensor):
    """(out, {name: grad}) of fn({name: leaf}) for the upstream gradient `grad`."""
    leaves = {k: None if v is None else v.detach().clone().requires_grad_() for k, v in
              inputs.items()}  # fmt: skip
    out = fn(leaves)
    given = [k for k in NAMES if leaves[k] is not None]
    grads = torch.autograd.grad(out, [leaves[k] for k in given], grad)
    return out.detach(), dict(zip(given, grads, strict=True))


def truth(c: dict, inputs: dict, grad: torch.Tensor):
    """(out, {name: grad}) of the sequential definition, gradients by autograd."""

    def definition(t):
        args = [t[k] for k in NAMES]
        args[3], args[4] = _grouped(args[3]), _grouped(args[4])
        return reference.scan_with(reference.sequential, *args, c["softplus"], dispatch.CHUNK)[0]

    return _differentiate(definition, inputs, grad)


def run(c: dict, inputs: dict, grad: torch.Tensor, backend: str):
    """(out, {name: grad}) of ops.selective_scan on `backend`."""

    def scan(t):
        return ops.selective_scan(**t, delta_softplus=c["softplus"], backend=backend)

    return _differentiate(scan, inputs, grad)


def assert_matches(got, want, rtol=1e-9, atol=1e-9):
    """Outputs and every gradient, each to atol relative to its largest reference value."""
    out, grads = got
    out_ref, grads_ref = want
    assert out.dtype == out_ref.dtype and grads.keys() == grads_ref.keys()
    for name, a, b in [("out", out, out_ref)] + [(k, grads[k], grads_ref[k]) for k in grads]:
        assert a.shape == b.shape and a.dtype == b.dtype, name
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * scale,
                                   msg=lambda m, n=name: f"{n}: {m}")  # fmt: skip


# ----------------------------------------------------------------------------------------------
# The definition itself


def test_reference_equals_the_recurrence_worked_out_by_hand():
    """L = 2, N = 1, one channel: x0 = d0 B0 u0, x1 = exp(d1 A) x0 + d1 B1 u1, y = C x,
    out = (y + D u) silu(z), d = softplus(delta + bias)."""
    u, delta, z = [0.7, -1.2], [0.3, -0.4], [0.5, -2.0]
    A, B, C, D, bias = -0.8, [1.5, -0.6], [0.9, 2.1], 0.25, 0.1
    d = [math.log1p(math.exp(v + bias)) for v in delta]
    x0 = d[0] * B[0] * u[0]
    x1 = math.exp(d[1] * A) * x0 + d[1] * B[1] * u[1]
    expected = [
        (C[0] * x0 + D * u[0]) * z[0] / (1 + math.exp(-z[0])),
        (C[1] * x1 + D * u[1]) * z[1] / (1 + math.exp(-z[1])),
    ]

    def t(v, *shape):
        return torch.tensor(v, dtype=torch.float64).reshape(shape)

    for backend in BACKENDS:
        out, last = ops.selective_scan(
            t(u, 1, 1, 2), t(delta, 1, 1, 2), t(A, 1, 1), t(B, 1, 1, 2), t(C, 1, 1, 2),
            t(D, 1), t(z, 1, 1, 2), t(bias, 1), delta_softplus=True, return_last_state=True,
            backend=backend,
        )  # fmt: skip
        torch.testing.assert_close(out.flatten(), t(expected, 2), rtol=0, atol=1e-12)
        torch.testing.assert_close(last.flatten(), t([x1], 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_channel_d_reads_group_d_over_dim_per_group(backend):
    """Grouped B/C (batch, G, N, L): channel d uses group d // (dim // G) (mamba's repeat
    "B G N L -> B (G H) N L"); checked channel by channel against one-channel scans."""
    c = case(batch=2, dim=6, length=9, dstate=3, B="grouped", C="grouped", groups=3)
    t = make_inputs(c)
    out = ops.selective_scan(**t, delta_softplus=True, backend=backend)
    for d in range(6):
        g = d // 2
        one = ops.selective_scan(
            t["u"][:, d : d + 1], t["delta"][:, d : d + 1], t["A"][d : d + 1],
            t["B"][:, g], t["C"][:, g], t["D"][d : d + 1], t["z"][:, d : d + 1],
            t["delta_bias"][d : d + 1], delta_softplus=True, backend="reference",
        )  # fmt: skip
        torch.testing.assert_close(out[:, d : d + 1], one, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Every backend against the reference

NUM_RANDOM_CASES = 24
CASES = [random_case(random.Random(seed)) for seed in range(NUM_RANDOM_CASES)]


@pytest.mark.parametrize("backend", ["reference", "chunked", "native", "auto"])
@pytest.mark.parametrize("c", CASES, ids=case_id)
def test_backend_matches_sequential_reference_float64(backend, c):
    inputs = make_inputs(c)
    grad = upstream(c)
    assert_matches(run(c, inputs, grad, backend), truth(c, inputs, grad))


GRADCHECK_CASE = case(batch=2, dim=4, length=5, dstate=3, B="grouped", C="fixed", groups=2)


def gradcheck(c: dict, backend: str, fast_mode: bool = False) -> bool:
    t = make_inputs(c)
    leaves = tuple(t[k].requires_grad_() for k in NAMES)

    def scan(*args):
        return ops.selective_scan(*args, delta_softplus=True, backend=backend)

    return torch.autograd.gradcheck(scan, leaves, fast_mode=fast_mode)


@pytest.mark.parametrize("backend", ["reference", "chunked", "native"])
def test_gradcheck_float64(backend):
    assert gradcheck(GRADCHECK_CASE, backend)


# fp16 / bf16 storage with float32 arithmetic, against the float32 reference on the same rounded
# inputs and upstream gradient; error relative to the largest reference value. Gradients are
# rounded to the storage dtype once (bf16: 2^-8 relative), outputs too.
HALF_TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", ["chunked", "native"])
def test_half_precision_storage_close_to_float32_reference(dtype, backend):
    check_half_precision(dtype, backend)


def check_half_precision(dtype, backend, c=None):
    c = c or case(batch=2, dim=3, length=20, dstate=4, B="variable", C="fixed")
    inputs = make_inputs(c, dtype)
    grad = upstream(c, dtype)
    got_out, got = run(c, inputs, grad, backend)
    want_out, want = truth(c, {k: None if v is None else v.float() for k, v in inputs.items()},
                           grad.float())  # fmt: skip
    assert got_out.dtype == dtype and all(g.dtype == dtype for g in got.values())
    for name, a, b in [("out", got_out, want_out)] + [(k, got[k], want[k]) for k in got]:
        error = (a.float() - b).abs().max().item()
        scale = b.abs().max().item()
        assert error <= HALF_TOLERANCE[dtype] * scale, f"{name}: {error:.3g} vs max {scale:.3g}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_return_last_state_is_the_final_state_without_gradient(backend):
    c = case(batch=1, dim=3, length=70, dstate=4)
    t = make_inputs(c, torch.float32)
    t["u"].requires_grad_()
    out, last = ops.selective_scan(**t, delta_softplus=True, return_last_state=True,
                                   backend=backend)  # fmt: skip
    args = [t[k] for k in NAMES]
    args[3], args[4] = _grouped(args[3]), _grouped(args[4])
    history = reference.sequential(*reference._terms(*args[:5], args[7], True)[3:5])
    assert last.shape == (1, 3, 4) and last.dtype == torch.float32
    torch.testing.assert_close(last, history[:, :, -1], rtol=1e-5, atol=1e-5)
    assert out.requires_grad and not last.requires_grad  # as in mamba: not differentiable
    bf16 = {k: v if k in ("A", "D", "delta_bias") else v.bfloat16() for k, v in t.items()}
    _, last16 = ops.selective_scan(**bf16, delta_softplus=True, return_last_state=True,
                                   backend=backend)  # fmt: skip
    assert last16.dtype == torch.float32  # the state is float32 whatever the storage


# ----------------------------------------------------------------------------------------------
# The op around the backends


def test_custom_op_path_matches_eager_path():
    """The registered op (used under compile / export) and the eager Function give the same
    outputs and gradients."""
    c = case(batch=2, dim=3, length=9, dstate=2, B="variable", C="fixed")
    t = make_inputs(c)
    grad = upstream(c)
    eager = run(c, t, grad, "native")
    leaves = {k: v.detach().clone().requires_grad_() for k, v in t.items()}
    args = [leaves[k] for k in NAMES]
    args[3] = args[3].unsqueeze(1)
    out, _ = torch.ops.zoo.selective_scan(*args, True, "native")
    grads = torch.autograd.grad(out, [leaves[k] for k in NAMES], grad)
    assert_matches((out.detach(), dict(zip(NAMES, grads, strict=True))), eager, 0, 1e-12)


def test_meta_device_gives_shapes_and_export_keeps_one_custom_op():
    c = case(batch=2, dim=4, length=70, dstate=5, B="grouped", C="grouped", groups=2)
    t = make_inputs(c, torch.float32)
    meta = {k: v.to("meta") for k, v in t.items()}
    out, last = ops.selective_scan(**meta, delta_softplus=True, return_last_state=True)
    assert out.device.type == "meta" and out.shape == (2, 4, 70) and last.shape == (2, 4, 5)

    class Scan(torch.nn.Module):
        def forward(self, u, delta, A, B, C):
            return ops.selective_scan(u, delta, A, B, C, delta_softplus=True)

    args = (t["u"], t["delta"], t["A"], t["B"], t["C"])
    exported = torch.export.export(Scan(), args)
    targets = [n.target for n in exported.graph.nodes if n.op == "call_function"]
    assert torch.ops.zoo.selective_scan.default in targets
    torch.testing.assert_close(exported.module()(*args), Scan()(*args))


def test_backends_are_routed_as_asked():
    u = torch.zeros(1, 1, 1)
    assert dispatch.choose(u, "native") == "native"  # this machine builds the kernels
    assert dispatch.choose(u, "auto") == "native"
    assert dispatch.choose(u, "reference") == "reference"
    assert dispatch.choose(u, "chunked") == "chunked"
    expected = "triton" if scan_triton.is_available(u) else "chunked"
    assert dispatch.choose(u, "triton") == expected
    assert dispatch.choose(torch.zeros(1, 1, 1, device="meta"), "auto") == "chunked"


def test_set_backend_and_environment_variable(monkeypatch):
    assert ops.scan.get_backend() == "auto"
    calls = []
    monkeypatch.setitem(dispatch.IMPLEMENTATIONS, "chunked", _Recorder(calls, reference))
    try:
        ops.scan.set_backend("chunked")
        assert ops.scan.get_backend() == "chunked"
        t = make_inputs(case())
        ops.selective_scan(**t)
        assert calls == ["forward"]
    finally:
        ops.scan.set_backend("auto")
    with pytest.raises(ValueError, match="unknown selective_scan backend 'cuda'"):
        ops.scan.set_backend("cuda")
    with pytest.raises(ValueError, match="unknown selective_scan backend 'fast'"):
        ops.selective_scan(**make_inputs(case()), backend="fast")
    # one interpreter for both values (each start imports torch): a valid value is taken, an
    # unknown one fails the import naming itself
    code = (
        "import importlib, os, ops.scan.dispatch as d; print(d.get_backend());"
        "os.environ['ZOO_SCAN_BACKEND'] = 'bogus'\n"
        "try: importlib.reload(d)\nexcept ValueError as e: print(e)"
    )
    env = dict(os.environ, ZOO_SCAN_BACKEND="reference")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == [
        "reference",
        f"ZOO_SCAN_BACKEND='bogus' is not one of {dispatch.BACKENDS}",
    ]


class _Recorder:
    """A backend module stand-in that records which direction ran, then delegates."""

    def __init__(self, calls, module):
        self.calls, self.module = calls, module

    def forward(self, *args):
        self.calls.append("forward")
        return self.module.forward(*args)

    def backward(self, *args):
        self.calls.append("backward")
        return self.module.backward(*args)


# ----------------------------------------------------------------------------------------------
# Errors


def _bad(**changes):
    t = make_inputs(case(batch=2, dim=4, length=6, dstate=3))
    t.update(changes)
    return t


@pytest.mark.parametrize(
    "inputs, message",
    [
        (lambda: _bad(u=torch.zeros(2, 4)), r"u has shape \(2, 4\), expected \(batch, dim, L\)"),
        (lambda: _bad(u=torch.zeros(2, 4, 0, dtype=torch.float64)), r"L = 0"),
        (lambda: _bad(delta=torch.zeros(2, 4, 5, dtype=torch.float64)),
         r"delta has shape \(2, 4, 5\), expected \(batch, dim, L\) = \(2, 4, 6\) like u"),
        (lambda: _bad(A=torch.zeros(3, 3, dtype=torch.float64)),
         r"A has shape \(3, 3\), expected \(dim, N\) = \(4, N\)"),
        (lambda: _bad(A=torch.zeros(4, 3, dtype=torch.complex64)), r"complex A is not supported"),
        (lambda: _bad(B=torch.zeros(4, 2, dtype=torch.float64)),
         r"B has shape \(4, 2\), expected \(dim, N\) = \(4, 3\), \(batch, N, L\) = \(2, 3, 6\)"),
        (lambda: _bad(C=torch.zeros(2, 3, 3, 6, dtype=torch.float64)),
         r"C has shape \(2, 3, 3, 6\), .* with groups dividing dim = 4"),
        (lambda: _bad(B=torch.zeros(2, 2, 3, 6, dtype=torch.float64),
                      C=torch.zeros(2, 4, 3, 6, dtype=torch.float64)),
         r"the same number of groups \(as in mamba\), got 2 and 4"),
        (lambda: _bad(C=torch.zeros(2, 2, 3, 6, dtype=torch.float64)),
         r"the same number of groups \(as in mamba\), got 1 and 2"),
        (lambda: _bad(D=torch.zeros(3, dtype=torch.float64)),
         r"D has shape \(3,\), expected \(dim,\) = \(4,\)"),
        (lambda: _bad(delta_bias=torch.zeros(4, 1, dtype=torch.float64)),
         r"delta_bias has shape \(4, 1\), expected \(dim,\) = \(4,\)"),
        (lambda: _bad(z=torch.zeros(2, 4, 7, dtype=torch.float64)),
         r"z has shape \(2, 4, 7\), expected \(batch, dim, L\) = \(2, 4, 6\) like u"),
        (lambda: _bad(delta=torch.zeros(2, 4, 6, dtype=torch.float32)),
         r"u is torch.float64 but delta is torch.float32"),
        (lambda: _bad(u=torch.zeros(2, 4, 6, dtype=torch.int64)), r"u is torch.int64"),
    ],
)  # fmt: skip
def test_bad_input_raises_value_error_naming_argument_and_shapes(inputs, message):
    with pytest.raises(ValueError, match=message):
        ops.selective_scan(**inputs(), delta_softplus=True)


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        ops.selective_scan(**make_inputs(case()), softplus=True)
