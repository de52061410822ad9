"""ops.selective_scan under the tools PyTorch users run without asking: torch.library.opcheck,
torch.compile(fullgraph=True) (forward and gradients equal to eager, per backend), and FLOP
counters (FlopCounterMode, fvcore with the op's handle) against the stated formula."""

from __future__ import annotations

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from test_scan import NAMES, case, make_inputs
from torch.utils.flop_counter import FlopCounterMode

import ops
from ops.scan import FVCORE_HANDLES, dispatch

# (backend, case, dtype): every backend once; Triton runs in the interpreter on a tiny case
CASES = [
    ("reference", case(batch=2, dim=3, length=6, dstate=2, B="variable", C="fixed"),
     torch.float64),
    ("chunked", case(batch=1, dim=4, length=9, dstate=3, B="grouped", C="grouped", groups=2),
     torch.float64),
    ("native", case(batch=2, dim=3, length=70, dstate=4, B="fixed", C="variable"),
     torch.float32),
    ("triton", case(batch=1, dim=2, length=3, dstate=2, z=False), torch.float64),
]  # fmt: skip


def _id(entry) -> str:
    backend, c, dtype = entry
    return f"{backend}-{str(dtype).replace('torch.', '')}"


def _op_args(c, dtype):
    t = make_inputs(c, dtype)
    args = [t[k] for k in NAMES]
    args[3], args[4] = (x.unsqueeze(1) if x.dim() == 3 else x for x in args[3:5])
    return args


@pytest.mark.parametrize("entry", CASES, ids=_id)
def test_opcheck_passes_for_the_op_and_its_backward(entry):
    backend, c, dtype = entry
    args = [None if t is None else t.requires_grad_() for t in _op_args(c, dtype)]
    torch.library.opcheck(torch.ops.zoo.selective_scan.default, (*args, True, backend))
    out, states = torch.ops.zoo.selective_scan(*args, True, backend)
    grad = torch.randn_like(out)
    detached = [None if t is None else t.detach() for t in args]
    for mask in ([True] * 8, [True, False, False, True, False, False, False, False]):
        torch.library.opcheck(
            torch.ops.zoo.selective_scan_backward.default,
            (grad, *detached, states, True, backend, mask),
        )


@pytest.mark.parametrize("entry", CASES, ids=_id)
def test_compiled_equals_eager_forward_and_gradients(entry):
    backend, c, dtype = entry

    def step(*args):
        out, last = ops.selective_scan(*args, delta_softplus=True, return_last_state=True,
                                       backend=backend)  # fmt: skip
        return out, last

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    results = []
    for fn in (step, compiled):
        t = make_inputs(c, dtype)
        leaves = [t[k].requires_grad_() if t[k] is not None else None for k in NAMES]
        out, last = fn(*leaves)
        weights = torch.arange(out.numel(), dtype=dtype).view_as(out).sin()
        grads = torch.autograd.grad((out * weights).sum(), [x for x in leaves if x is not None])
        results.append((out.detach(), last, *grads))
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=0, atol=1e-10)
    for eager, compiled_value in zip(*results, strict=True):
        torch.testing.assert_close(compiled_value, eager, **tolerance)


def _expected_multiply_adds(c) -> int:
    steps = c["batch"] * c["dim"] * c["length"]
    return 9 * steps * c["dstate"] + steps * (int(c["D"]) + int(c["z"]))


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("optional", [True, False], ids=["D_z", "bare"])
def test_flop_counter_counts_the_formula_whatever_backend(backend, optional, monkeypatch):
    monkeypatch.setattr(dispatch._choice, "current", backend)
    c = case(batch=2, dim=6, length=10, dstate=4, D=optional, z=optional)
    t = {k: None if v is None else v.float() for k, v in make_inputs(c).items()}
    forward = 2 * _expected_multiply_adds(c)  # 2 FLOPs per multiply-add, as aten counts
    with FlopCounterMode(display=False) as counter:
        ops.selective_scan(**t, delta_softplus=True)
    assert counter.get_total_flops() == forward
    for v in t.values():
        if v is not None:
            v.requires_grad_()
    with FlopCounterMode(display=False) as counter:
        ops.selective_scan(**t, delta_softplus=True).sum().backward()
    assert counter.get_total_flops() == 3 * forward  # the backward counts twice the forward


@pytest.mark.parametrize("optional", [True, False], ids=["D_z", "bare"])
def test_fvcore_counts_the_formula_with_the_ops_handle(optional):
    c = case(batch=1, dim=4, length=12, dstate=8, D=optional, z=optional)
    t = {k: None if v is None else v.float() for k, v in make_inputs(c).items()}

    class Scan(torch.nn.Module):
        def forward(self, u, delta):
            return ops.selective_scan(u, delta, t["A"], t["B"], t["C"], t["D"], t["z"],
                                      t["delta_bias"], delta_softplus=True)  # fmt: skip

    analysis = FlopCountAnalysis(Scan(), (t["u"], t["delta"]))
    analysis.set_op_handle(**FVCORE_HANDLES).unsupported_ops_warnings(False)
    assert analysis.by_operator()["selective_scan"] == _expected_multiply_adds(c)
