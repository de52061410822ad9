"""Model families, one file each (timm's layout); importing this registers them with timm."""

from . import bevanet, deeprftv2, inceptionnext, mkunet, unireplknet

# The family modules, by the name timm files their models under (timm.list_models(module=...)).
FAMILIES = tuple(
    module.__name__.rsplit(".", 1)[-1]
    for module in (unireplknet, inceptionnext, mkunet, bevanet, deeprftv2)
)

__all__ = ["FAMILIES", "bevanet", "deeprftv2", "inceptionnext", "mkunet", "unireplknet"]
