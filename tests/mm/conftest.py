"""OpenMMLab tests (marker `mm`, run by `make test-mm`). Nothing here imports mm* at import
time: the fast suite collects these files, deselects them and never touches mmcv."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def zoo_mm():
    """`zoo.integrations.mm`, registered; skips when the mm extra is not installed."""
    for name in ("mmengine", "mmcv._ext", "mmseg", "mmdet"):
        pytest.importorskip(name, reason="needs the mm extra: make test-mm")
    import zoo.integrations.mm as zoo_mm

    return zoo_mm
