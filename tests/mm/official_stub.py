"""Import the official UniRepLKNet mmseg/mmdet backbone file (AILab-CVC/UniRepLKNet,
`segmentation/mmseg_custom/models/backbones/unireplknet.py`) from a path outside the repo.

The file imports mmseg 0.27 / mmdet 2.x / mmcv 1.x names at import time only
(`mmseg.models.builder.BACKBONES`, `mmseg.utils.get_root_logger`, `mmcv.runner._load_checkpoint`);
those are stubbed while it is imported, and so is timm's `register_model` (its `unireplknet_*`
names would replace the zoo's). No model code changes.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types


class _Registry:
    def register_module(self, *args, **kwargs):
        return lambda cls: cls


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def import_official(path: str) -> types.ModuleType:
    registry = _Registry()
    logger = logging.getLogger("official_unireplknet")
    stubs = {
        "mmseg": _module("mmseg"),
        "mmseg.models": _module("mmseg.models"),
        "mmseg.models.builder": _module("mmseg.models.builder", BACKBONES=registry),
        "mmseg.utils": _module("mmseg.utils", get_root_logger=lambda: logger),
        "mmdet": _module("mmdet"),
        "mmdet.models": _module("mmdet.models"),
        "mmdet.models.builder": _module("mmdet.models.builder", BACKBONES=registry),
        "mmdet.utils": _module("mmdet.utils", get_root_logger=lambda: logger),
        "mmcv": _module("mmcv"),
        "mmcv.runner": _module("mmcv.runner", _load_checkpoint=None),
        # its timm names (unireplknet_*) would replace the zoo's in timm's registry
        "timm.models.registry": _module("timm.models.registry", register_model=lambda fn: fn),
    }
    spec = importlib.util.spec_from_file_location("official_unireplknet_mm", path)
    module = importlib.util.module_from_spec(spec)
    stubs[spec.name] = module
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        spec.loader.exec_module(module)
    finally:  # put back exactly the stubbed names (modules imported meanwhile stay)
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    if not hasattr(module, "UniRepLKNetBackbone"):
        raise RuntimeError(f"{path} defines no UniRepLKNetBackbone (not the official mm file?)")
    return module
