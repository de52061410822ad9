"""timm's own model test-suite (tests/test_models.py of the installed timm's sdist), unchanged,
on our externally registered models.

`make install` fetches the file into .venv/timm-tests (tools/get_timm_tests.py). It runs in a
subprocess with tests/timm_suite_conftest.py as a plugin (see there). Collection of the ~18k
timm items costs ~35 s, so all FAST names share one subprocess; every other name is `slow`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMM_TESTS = ROOT / ".venv" / "timm-tests" / "test_models.py"

# Families add their names here: the smallest variant in FAST, the rest in SLOW.
FAST = ["unireplknet_a", "inceptionnext_atto"]
SLOW = [
    "unireplknet_f", "unireplknet_p", "unireplknet_n", "unireplknet_t", "unireplknet_s",
    "unireplknet_b", "unireplknet_l", "unireplknet_xl",
    "inceptionnext_tiny", "inceptionnext_small", "inceptionnext_base", "inceptionnext_base_384",
]  # fmt: skip

# Fewer passing tests than this for a name means the selection went wrong (timm 1.0.31 runs
# 11-13 per classification model: forward, backward, cfg, torchscript, features, fx, ...).
MIN_PASSED_PER_MODEL = 8


def run_timm_suite(names: list[str], tmp_path: Path, timeout: int) -> dict[str, dict]:
    """Run timm's test_models.py on `names`; return the per-model outcome lists."""
    if not TIMM_TESTS.is_file():
        pytest.fail(f"{TIMM_TESTS} is missing: run `make install` (tools/get_timm_tests.py)")
    report = tmp_path / "timm_suite.json"
    env = dict(os.environ)
    env.update(
        ZOO_TIMM_SUITE_MODELS=",".join(names),
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
        assert len(passed) >= MIN_PASSED_PER_MODEL, (
            f"only {len(passed)} timm tests passed for {name} (expected >= "
            f"{MIN_PASSED_PER_MODEL}): {passed}\n{tail}"
        )
    assert proc.returncode == 0, f"timm suite exited {proc.returncode}:\n{tail}"
    return outcomes


def test_timm_model_suite_passes_for_fast_models(tmp_path: Path) -> None:
    run_timm_suite(FAST, tmp_path, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_timm_model_suite_passes_for_slow_models(name: str, tmp_path: Path) -> None:
    run_timm_suite([name], tmp_path, timeout=3600)
