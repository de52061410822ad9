"""Compiling Triton launches for an H100 (sm_90) on a machine without a GPU, for the tests.

`PRELUDE` is Python source for a subprocess started without TRITON_INTERPRET: from then on every
`kernel[grid](...)` is recorded instead of launched, and `compiled()` compiles the recorded
launches with Triton's own launch-time specialisation (the binder a real launch uses: ints equal
to 1 become constants, multiples of 16 get the divisibility hint) for sm_90, yielding
(kernel name, CompiledKernel) and clearing the record; `spill_bytes(kernel)` runs ptxas -v on
its PTX. Launchers can then be called on "meta"
tensors. `run(body, *argv)` runs PRELUDE + body and returns its stdout lines split into fields.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PRELUDE = r"""
import sys
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend
from triton.compiler import ASTSource
from triton.runtime import jit
from triton.runtime.jit import create_function_from_signature

target = GPUTarget("cuda", 90, 32)
backend = CUDABackend(target)
launches = []
jit.JITFunction.run = lambda fn, *args, grid, warmup, **kw: launches.append((fn, args, kw))


def compiled():
    for fn, args, kw in launches:
        binder = create_function_from_signature(fn.signature, fn.params, backend)
        kw = dict(kw, debug=False, instrumentation_mode="")
        bound, spec, opts = binder(*args, **kw)
        options, sig, consts, attrs = fn._pack_args(backend, kw, bound, spec, opts)
        source = ASTSource(fn, sig, consts, attrs)
        yield fn.__name__, triton.compile(source, target=target, options=options.__dict__)
    launches.clear()


def spill_bytes(kernel):  # spill stores + loads that ptxas -v reports for the kernel's PTX
    import re, subprocess, tempfile
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(kernel.asm["ptx"])
        f.flush()
        ptxas = [get_ptxas(target.arch).path, "-arch=sm_90a", "-v", f.name, "-o", "/dev/null"]
        log = subprocess.run(ptxas, capture_output=True, text=True).stderr
    return sum(int(v) for v in re.findall(r"(\d+) bytes spill", log))
"""


def run(body: str, *argv: str) -> list[list[str]]:
    """PRELUDE + body in a subprocess without TRITON_INTERPRET; its stdout lines, split."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + body, *argv], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [line.split() for line in done.stdout.splitlines() if line]
