"""Blocks shared by several model families (one small file per concept)."""

from .bn_fuse import fuse_bn
from .grn import GlobalResponseNorm

__all__ = ["GlobalResponseNorm", "fuse_bn"]
