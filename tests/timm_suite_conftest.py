"""pytest plugin that runs timm's own `tests/test_models.py`, unchanged, on the zoo's models.

tests/test_timm_suite.py loads it with `-p timm_suite_conftest` (tests/ on PYTHONPATH), so that
nothing of timm's is copied into this repository:
- `import zoo` registers every family before test_models.py is collected (its parametrize
  decorators call timm.list_models at import time);
- timm.list_models is wrapped so that `module=` filters also include the zoo family modules
  (test_models.py lists timm module names in FEAT_INTER_FILTERS, which would skip ours);
- only items whose `model_name` (pretrained tag ignored) is in $ZOO_TIMM_SUITE_MODELS run,
  and for a model named in the JSON mapping $ZOO_TIMM_SUITE_TESTS only the test functions
  listed for it (dense-prediction models skip the classification contract);
- per-model outcomes are written as JSON to $ZOO_TIMM_SUITE_REPORT, so the caller can check
  that every model really ran a non-trivial number of tests;
- timm's markers are declared.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

import pytest
import timm
import timm.models

import zoo  # registers the zoo families with timm

TIMM_MARKERS = (
    "base", "forward", "backward", "cfg", "cfg_nonstd", "torchscript", "features",
    "fxforward", "fxbackward",
)  # fmt: skip

ZOO_MODULES = list(zoo.models.FAMILIES)

_timm_list_models = timm.list_models


def _list_models_with_zoo(filter="", module="", *args, **kwargs):  # noqa: A002 (timm's name)
    if module:
        modules = [module] if isinstance(module, str) else list(module)
        module = modules + [m for m in ZOO_MODULES if m not in modules]
    return _timm_list_models(filter, module, *args, **kwargs)


timm.list_models = _list_models_with_zoo
timm.models.list_models = _list_models_with_zoo

_selected: dict[str, str] = {}  # nodeid -> model name
_outcomes: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))


def pytest_configure(config: pytest.Config) -> None:
    for marker in TIMM_MARKERS:
        config.addinivalue_line("markers", f"{marker}: timm test-suite marker")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = {n for n in os.environ.get("ZOO_TIMM_SUITE_MODELS", "").split(",") if n}
    if not wanted:
        raise pytest.UsageError("set ZOO_TIMM_SUITE_MODELS to a comma-separated list of models")
    unknown = sorted(n for n in wanted if not timm.is_model(n))
    if unknown:
        raise pytest.UsageError(f"ZOO_TIMM_SUITE_MODELS names unregistered models: {unknown}")
    only = json.loads(os.environ.get("ZOO_TIMM_SUITE_TESTS") or "{}")
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("model_name") if callspec is not None else None
        base = name.split(".")[0] if isinstance(name, str) else None
        if base in wanted and item.originalname in only.get(base, [item.originalname]):
            keep.append(item)
            _selected[item.nodeid] = base
        else:
            drop.append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    name = _selected.get(report.nodeid)
    if name is None:
        return
    if report.failed:
        _outcomes[name]["failed"].append(f"{report.nodeid} ({report.when})")
    elif report.skipped:
        _outcomes[name]["skipped"].append(report.nodeid)
    elif report.when == "call":
        _outcomes[name]["passed"].append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("ZOO_TIMM_SUITE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({k: dict(v) for k, v in _outcomes.items()}, f, indent=1)
