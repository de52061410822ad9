"""timm's own model test-suite (tests/test_models.py of the installed timm's sdist), unchanged,
on our externally registered models.

`make install` fetches the file into .venv/timm-tests (tools/get_timm_tests.py). It runs in a
subprocess with tests/timm_suite_conftest.py as a plugin (see there). Collection of the ~18k
timm items costs ~35 s, so the FAST names (the smallest model of each family) share one
subprocess; every other registered name is `slow`. Names come from the registry
(tests/zoo_registry.py), so a new family or variant is covered without editing this file.
Dense-prediction models run the part of timm's suite that is not the classification contract.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
from zoo_registry import MODELS, SMALLEST, is_dense

ROOT = Path(__file__).resolve().parents[1]
TIMM_TESTS = ROOT / ".venv" / "timm-tests" / "test_models.py"

FAST = list(SMALLEST.values())
SLOW = [name for names in MODELS.values() for name in names if name not in FAST]

# timm's tests that hold for a dense-prediction model. The others check the classification
# contract (logits (N, num_classes), pool_size, reset_classifier(0) giving 2-D features, every
# parameter trained by forward(): our auxiliary heads train through forward_heads) or
# TorchScript of the whole model, which the dense families do not support.
DENSE_TESTS = (
    "test_model_forward",
    "test_model_forward_features",
    "test_model_forward_intermediates",
    "test_model_forward_intermediates_features",
    "test_prune_intermediate_layers_contract",
    "test_model_forward_fx",
    "test_model_forward_fx_torchscript",
)

# Fewer passing tests than this for a classifier means the selection went wrong (timm 1.0.31
# runs 11-13 per classification model: forward, backward, cfg, torchscript, features, fx, ...).
MIN_PASSED_PER_CLASSIFIER = 8


# Families whose forward torch.fx cannot trace: DeepRFTv2's reversible columns (a custom
# autograd Function), the official in-place |alpha| clamp and its shape/dtype-dependent code
# stop the tracer. The fx tests are left out for them; forward and the feature API still run.
NOT_FX_TRACEABLE = ("deeprftv2",)


def timm_tests_for(name: str) -> tuple[str, ...] | None:
    """The timm test functions to run on `name`; None: all of them."""
    if not is_dense(name):
        return None
    if _family(name).rsplit(".", 1)[-1] in NOT_FX_TRACEABLE:
        return tuple(t for t in DENSE_TESTS if "_fx" not in t)
    return DENSE_TESTS


def _family(name: str) -> str:
    return timm.models.model_entrypoint(name).__module__


def test_suite_covers_every_model_the_zoo_registers_once() -> None:
    registered = [n for n in timm.list_models() if _family(n).startswith("zoo.")]
    assert sorted(FAST + SLOW) == sorted(registered)
    assert sorted(_family(n) for n in FAST) == sorted({_family(n) for n in registered})


def run_timm_suite(names: list[str], tmp_path: Path, timeout: int) -> dict[str, dict]:
    """Run timm's test_models.py on `names`; return the per-model outcome lists."""
    if not TIMM_TESTS.is_file():
        pytest.fail(f"{TIMM_TESTS} is missing: run `make install` (tools/get_timm_tests.py)")
    report = tmp_path / "timm_suite.json"
    env = dict(os.environ)
    only = {n: list(tests) for n in names if (tests := timm_tests_for(n)) is not None}
    env.update(
        ZOO_TIMM_SUITE_MODELS=",".join(names),
        ZOO_TIMM_SUITE_TESTS=json.dumps(only),
        ZOO_TIMM_SUITE_REPORT=str(report),
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"),
    )
    cmd = [
        sys.executable, "-m", "pytest", str(TIMM_TESTS), "-q", "-p", "timm_suite_conftest",
        "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(TIMM_TESTS.parent),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert report.is_file(), f"timm suite wrote no report (exit {proc.returncode}):\n{tail}"
    outcomes = json.loads(report.read_text())
    for name in names:
        result = outcomes.get(name, {})
        failed, passed = result.get("failed", []), result.get("passed", [])
        assert not failed, f"timm tests failed for {name}: {failed}\n{tail}"
        selected = timm_tests_for(name)
        if selected is None:
            assert len(passed) >= MIN_PASSED_PER_CLASSIFIER, (
                f"only {len(passed)} timm tests passed for {name} (expected >= "
                f"{MIN_PASSED_PER_CLASSIFIER}): {passed}\n{tail}"
            )
        else:
            ran = {nodeid.split("::")[-1].split("[")[0] for nodeid in passed}
            assert ran == set(selected), f"{name}: passed {sorted(ran)}, selected {selected}"
    assert proc.returncode == 0, f"timm suite exited {proc.returncode}:\n{tail}"
    return outcomes


def test_timm_model_suite_passes_for_fast_models(tmp_path: Path) -> None:
    run_timm_suite(FAST, tmp_path, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_timm_model_suite_passes_for_slow_models(name: str, tmp_path: Path) -> None:
    run_timm_suite([name], tmp_path, timeout=3600)
