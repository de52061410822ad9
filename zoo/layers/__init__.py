"""Blocks shared by several model families (one small file per concept)."""

from . import fx_leaf  # noqa: F401  (ops.DepthwiseConv2d is an fx leaf for timm)
from .bn_fuse import fuse_bn
from .grn import GlobalResponseNorm
from .input_check import check_in_chans, model_name

__all__ = ["GlobalResponseNorm", "check_in_chans", "fuse_bn", "model_name"]
