"""Triton selective-scan kernels (ops/scan/triton.py) against the sequential reference.

Without a GPU the kernels run in Triton's CPU interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), so sequences stay short; they are also compiled for an H100 (sm_90) here,
and the `gpu` group checks DeepRFTv2-sized scans on a CUDA device.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
import torch
from test_scan import (
    GRADCHECK_CASE,
    assert_matches,
    case,
    case_id,
    check_half_precision,
    gradcheck,
    make_inputs,
    random_case,
    run,
    truth,
    upstream,
)

from ops.scan import dispatch
from ops.scan import triton as scan_triton

pytestmark = pytest.mark.skipif(scan_triton.triton is None, reason="triton is not importable")

# The interpreter costs ~0.1 s per chunk of a program: short sequences and few channels, picked
# to cover what the random sweep in test_scan.py covers for the other backends.
TRITON_CASES = [
    # L = 1, one group of variable B / C, z
    case(batch=1, dim=3, length=1, dstate=3),
    # a chunk boundary, groups
    case(batch=1, dim=4, length=65, dstate=5, B="grouped", C="grouped", groups=2, D=False),
    # fixed B, no softplus, no bias
    case(batch=1, dim=5, length=17, dstate=4, B="fixed", bias=False, softplus=False),
    # both fixed, N = 16, batch 2
    case(batch=2, dim=2, length=6, dstate=16, B="fixed", C="fixed", D=False),
]


@pytest.mark.parametrize("c", TRITON_CASES, ids=case_id)
def test_triton_matches_sequential_reference_float64(c):
    inputs = make_inputs(c)
    grad = upstream(c)
    assert_matches(run(c, inputs, grad, "triton"), truth(c, inputs, grad))


def test_triton_backend_runs_kernels_not_the_fallback(monkeypatch):
    """Without this, a backend that silently fell back would pass every test above."""
    if not torch.cuda.is_available():
        assert scan_triton.is_available(torch.zeros(1))  # TRITON_INTERPRET=1 from conftest

    def refuse(*args, **kwargs):
        raise AssertionError("the triton backend called another backend")

    for name in ("reference", "chunked", "native"):
        monkeypatch.setitem(dispatch.IMPLEMENTATIONS, name, refuse)
    c = case(dim=3, length=4)
    inputs = make_inputs(c)
    grad = upstream(c)
    assert_matches(run(c, inputs, grad, "triton"), truth(c, inputs, grad))


def test_triton_several_channel_blocks_per_group(monkeypatch):
    """The GPU's small channel blocks: a group spread over several programs, whose variable
    dB / dC partial sums are added afterwards, and a last block past the group's end."""
    monkeypatch.setattr(scan_triton, "_INTERPRETER_BLOCK_D", 2)
    c = case(batch=2, dim=10, length=7, dstate=3, B="grouped", C="grouped", groups=2)
    inputs = make_inputs(c)
    grad = upstream(c)
    assert_matches(run(c, inputs, grad, "triton"), truth(c, inputs, grad))


def test_triton_gradcheck_float64():
    # the interpreter runs every Triton op in numpy: fast mode (random projections)
    small = dict(GRADCHECK_CASE, batch=1, dim=2, length=3)
    assert gradcheck(small, "triton", fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_triton_half_precision_storage_close_to_float32_reference(dtype):
    check_half_precision(dtype, "triton", case(batch=1, dim=3, length=20, dstate=4, C="fixed"))


def test_triton_float32_matches_float64_reference():
    c = case(batch=1, dim=5, length=40, dstate=8)
    inputs = make_inputs(c, torch.float32)
    grad = upstream(c, torch.float32)
    got = run(c, inputs, grad, "triton")
    want = truth(c, {k: v.double() for k, v in inputs.items()}, grad.double())
    cast = (want[0].float(), {k: v.float() for k, v in want[1].items()})
    assert_matches(got, cast, rtol=1e-4, atol=1e-5)


# The interpreter never runs Triton's compiler, so compile both kernels for an H100 (sm_90) here
# with a real launch's specialisation: a GPU-only compile error fails here. Two flag sets:
# DeepRFTv2's call (variable B and C, D, delta_bias, softplus, bf16) and everything else
# (fixed B and C, z, no softplus, fp32). fp32 exps must be the hardware ex2.approx.
_COMPILE_FOR_H100 = """
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from ops.scan import triton as T

assert not T._INTERPRETED
target = GPUTarget("cuda", 90, 32)
SIZES = ("DIM", "L", "N", "PER_GROUP", "GROUPS", "BLOCKS", "CHUNKS")
STATE = ("states_ptr", "dA_ptr", "dB_ptr", "dC_ptr", "dD_ptr", "dbias_ptr")


def build(fn, storage, consts):
    signature = {}
    for name in fn.arg_names:
        if name in consts:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name in STATE else storage
        else:
            signature[name] = "i32"
    source = ASTSource(fn=fn, signature=signature, constexprs=consts)
    return triton.compile(source, target=target, options=dict(num_warps=4)).asm["ptx"]


for name, storage, flags in (
    ("deeprftv2", "*bf16", dict(VAR_B=True, VAR_C=True, HAS_D=True, HAS_Z=False, HAS_BIAS=True,
                                SOFTPLUS=True)),
    ("other", "*fp32", dict(VAR_B=False, VAR_C=False, HAS_D=False, HAS_Z=True, HAS_BIAS=False,
                            SOFTPLUS=False)),
):
    consts = dict(flags, ACC=tl.float32, BLOCK_D=T._GPU_BLOCK_D, BLOCK_N=8, CHUNK=64)
    forward = build(T._forward_kernel, storage, consts)
    backward = build(T._backward_kernel, storage, consts)
    print(name, forward.count("ex2.approx"), backward.count("ex2.approx"))
"""


def test_triton_kernels_compile_for_h100():
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", _COMPILE_FOR_H100], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts = {line.split()[0]: line.split()[1:] for line in done.stdout.split("\n") if line}
    assert set(counts) == {"deeprftv2", "other"}, done.stdout
    assert all(int(n) > 0 for values in counts.values() for n in values), counts


# ----------------------------------------------------------------------------------------------
# Realistic shapes on a GPU (run with `pytest -m gpu` on a CUDA machine)

GPU_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", list(GPU_TOLERANCE), ids=str)
def test_triton_gpu_deeprftv2_shape_matches_float64_reference(dtype):
    """DeepRFTv2's scan at a 128x128 map (L = 16384, dim 192, N 8, variable B/C, D, delta_bias,
    softplus): forward and every gradient against the float64 reference on the CPU, error
    relative to the largest reference value."""
    c = case(batch=1, dim=192, length=128 * 128, dstate=8, z=False)
    inputs = make_inputs(c, dtype)
    for name in ("A", "D", "delta_bias"):  # parameters stay float32, as in mamba
        inputs[name] = inputs[name].float()
    grad = upstream(c, dtype)
    cuda = {k: v.cuda() for k, v in inputs.items()}
    got = run(c, cuda, grad.cuda(), "triton")
    want = truth(c, {k: v.double() for k, v in inputs.items()}, grad.double())
    for name, a, b in [("out", got[0], want[0])] + [(k, got[1][k], want[1][k]) for k in want[1]]:
        error = (a.cpu().double() - b).abs().max().item()
        scale = b.abs().max().item()
        assert error <= GPU_TOLERANCE[dtype] * scale, f"{name}: {error:.3g} vs max {scale:.3g}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_triton_gpu_random_cases_match_reference():
    for seed in range(8):
        c = random_case(random.Random(500 + seed))
        inputs = make_inputs(c)
        grad = upstream(c)
        got = run(c, {k: None if v is None else v.cuda() for k, v in inputs.items()},
                  grad.cuda(), "auto")  # fmt: skip
        got = (got[0].cpu(), {k: v.cpu() for k, v in got[1].items()})
        assert_matches(got, truth(c, inputs, grad))
    assert dispatch.choose(torch.zeros(1, device="cuda"), "auto") == "triton"
