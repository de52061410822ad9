"""tools/gpu_check.sh (`make gpu-check`) and the --device cuda modes of the benchmarks refuse
clearly on a machine without CUDA (the CUDA paths themselves need a GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")


def _run(*command):
    env = dict(os.environ, PY=sys.executable)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_gpu_check_refuses_without_cuda_and_writes_nothing():
    summary = ROOT / "benchmarks" / "gpu_check_cuda.md"
    before = summary.stat().st_mtime if summary.exists() else None
    done = _run("bash", "tools/gpu_check.sh")
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr and "nothing was run" in done.stderr
    assert (summary.stat().st_mtime if summary.exists() else None) == before


@pytest.mark.parametrize(
    "script",
    [
        "tools/benchmark_ops.py",
        # imports timm, fvcore and the zoo first (~15 s on a busy 2-core machine)
        pytest.param("tools/benchmark_models.py", marks=pytest.mark.slow),
    ],
)
def test_benchmarks_device_cuda_refuses_without_cuda(script):
    done = _run(sys.executable, script, "--device", "cuda")
    assert done.returncode == 1
    assert "--device cuda: no CUDA device" in done.stderr
