"""The CPU side of ops.selective_scan: our C kernels (ops/scan/native.py,
ops/scan/csrc/selective_scan_cpu.c) beyond the random sweep of test_scan.py.

- float32 against the float64 reference on groups spanning several 16-channel vectors, with
  threads sharing groups (the variable dB / dC slots);
- determinism across thread counts, extreme values (softplus threshold, decays that underflow);
- what the backward keeps (the chunk states, not the (batch, dim, L, N) history);
- the off switch and a missing compiler falling back to the chunked formulation;
- the C argument struct and its ctypes mirror.
"""

from __future__ import annotations

import ctypes
import re

import pytest
import torch
from test_scan import NAMES, assert_matches, case, make_inputs, run, truth, upstream

import ops
from ops._build import CompiledLibrary
from ops.scan import dispatch
from ops.scan import native as scan_native


@pytest.fixture
def threads():
    """Run with n threads inside the test, one again afterwards (tests/conftest.py's setting)."""
    previous = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(previous)


def test_native_kernels_build_on_this_machine():
    # CI machines have gcc; if this fails, `auto` silently runs the much slower chunked scan.
    assert scan_native.available()


# groups of 20 and 40 channels: two and three 16-lane vectors per group, the last one partial
MULTI_VECTOR_CASES = [
    case(batch=2, dim=40, length=150, dstate=5, B="grouped", C="grouped", groups=2),
    case(batch=1, dim=40, length=70, dstate=16, B="variable", C="fixed", z=False),
    case(batch=3, dim=20, length=65, dstate=8, B="fixed", C="fixed", softplus=False),
]


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("c", MULTI_VECTOR_CASES, ids=lambda c: f"d{c['dim']}g{c['groups']}")
def test_native_float32_matches_float64_reference(threads, count, c):
    """Three threads split a group's vectors between them, so some variable dB / dC sums meet
    in the per-thread slots."""
    threads(count)
    inputs = make_inputs(c, torch.float32)
    grad = upstream(c, torch.float32)
    got = run(c, inputs, grad, "native")
    want = truth(c, {k: None if v is None else v.double() for k, v in inputs.items()},
                 grad.double())  # fmt: skip
    want = (want[0].float(), {k: v.float() for k, v in want[1].items()})
    assert_matches(got, want, rtol=1e-4, atol=2e-5)


def test_native_bitwise_deterministic_across_thread_counts(threads):
    """The forward and every per-channel gradient are bitwise equal for any thread count; the
    variable dB / dC (summed over threads' slots) are for a given one."""
    c = case(batch=2, dim=40, length=100, dstate=8, B="grouped", C="grouped", groups=2)
    inputs = make_inputs(c, torch.float32)
    grad = upstream(c, torch.float32)
    results = {}
    for count in (1, 3, 3):
        threads(count)
        results.setdefault(count, []).append(run(c, inputs, grad, "native"))
    (one,), (first, second) = results[1], results[3]
    assert torch.equal(one[0], first[0])
    for name in ("u", "delta", "A", "D", "z", "delta_bias"):
        assert torch.equal(one[1][name], first[1][name]), name
    for name in NAMES:
        assert torch.equal(first[1][name], second[1][name]), name


def test_native_extreme_values_follow_the_reference():
    """delta + bias on both sides of softplus's threshold (20) and far below zero, decays that
    underflow (delta' A ~ -1e4), large inputs: float64 kernels against the definition."""
    c = case(batch=1, dim=4, length=70, dstate=4)
    t = make_inputs(c)
    t["delta"] = torch.tensor([-40.0, -1.0, 19.99, 20.0, 20.01, 35.0, 0.0]).repeat(40)[:280]
    t["delta"] = t["delta"].reshape(1, 4, 70).double()
    t["delta_bias"] = torch.zeros(4, dtype=torch.float64)
    t["A"][0] = -500.0  # exp(-1e4): zero in float32 and float64
    t["u"] = t["u"] * 1e3
    grad = upstream(c)
    assert_matches(run(c, t, grad, "native"), truth(c, t, grad), rtol=1e-9, atol=1e-9)


def test_backward_keeps_chunk_states_not_the_state_history():
    """What autograd saves for the backward: the inputs and the state every 64 steps, i.e.
    (batch, dim, ceil(L / 64), N), not the (batch, dim, L, N) history."""
    c = case(batch=1, dim=8, length=640, dstate=16, B="variable", C="variable", z=False)
    t = {k: None if v is None else v.float().requires_grad_() for k, v in make_inputs(c).items()}
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        ops.selective_scan(**t, delta_softplus=True, backend="native")
    # the inputs (B and C as (batch, 1, N, L) views of them) and one new tensor
    inputs = {v.untyped_storage().data_ptr() for v in t.values() if v is not None}
    extra = [s for s in saved if s.untyped_storage().data_ptr() not in inputs]
    assert [tuple(s.shape) for s in extra] == [(1, 8, 10, 16)]


def test_off_switch_and_missing_compiler_fall_back_to_chunked(monkeypatch, tmp_path):
    """ZOO_SCAN_NATIVE=0, or no working compiler (one warning), leaves the library unavailable:
    `auto` and `native` then run the chunked formulation, with the same results."""
    c = case(batch=1, dim=3, length=20, dstate=4)
    inputs = make_inputs(c, torch.float32)
    grad = upstream(c, torch.float32)
    expected = run(c, inputs, grad, "native")
    u = inputs["u"]
    monkeypatch.setenv("ZOO_SCAN_NATIVE", "0")
    switched_off = CompiledLibrary(scan_native.SOURCE, "ZOO_SCAN_NATIVE", scan_native._declare)
    assert not switched_off.available()
    monkeypatch.delenv("ZOO_SCAN_NATIVE")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    no_compiler = CompiledLibrary(scan_native.SOURCE, "ZOO_SCAN_NATIVE", scan_native._declare)
    with pytest.warns(RuntimeWarning, match="could not build selective_scan_cpu.c"):
        assert not no_compiler.available()
    for library in (switched_off, no_compiler):
        monkeypatch.setattr(scan_native, "LIBRARY", library)
        assert dispatch.choose(u, "auto") == dispatch.choose(u, "native") == "chunked"
        assert_matches(run(c, inputs, grad, "auto"), expected, rtol=1e-5, atol=1e-5)


def test_c_args_struct_and_its_ctypes_mirror_have_the_same_fields():
    """The kernels take one named struct; its Python mirror must list the same fields in the
    same order (a drift would make the C side read the wrong numbers or pointers)."""
    source = scan_native.SOURCE.read_text()
    body = re.search(r"typedef struct \{(.*?)\} scan_args;", source, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    types = {"const", "void", "int64_t", "int32_t"}
    c_fields = [name for name in re.findall(r"\w+", body) if name not in types]
    assert c_fields == [name for name, _ in scan_native.ScanArgs._fields_]
    library = scan_native.LIBRARY.require()
    assert library.scan_args_size() == ctypes.sizeof(scan_native.ScanArgs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_native_nan_propagates_like_the_reference(dtype):
    """A NaN in A or delta makes NaNs where the definition has them (the exp's range clamp must
    not turn exp(NaN) into a number)."""
    c = case(batch=1, dim=3, length=20, dstate=4, B="fixed")
    t = make_inputs(c, dtype)
    t["A"][1, 2] = float("nan")
    t["delta"][0, 2, 5] = float("nan")
    grad = upstream(c, dtype)
    got, want = run(c, t, grad, "native"), truth(c, t, grad)
    assert got[0].isnan().any()
    torch.testing.assert_close(got[0], want[0].to(dtype), equal_nan=True, rtol=1e-4, atol=1e-4)
    for name, g in got[1].items():
        assert torch.equal(g.isnan(), want[1][name].isnan()), name
