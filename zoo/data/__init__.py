"""LightningDataModules: real-data folders and embedded (download-free) demo sets."""

from ..errors import ConfigError
from .cityscapes import CityscapesDataModule
from .digits import DigitsDataModule
from .image_folder import ImageFolderDataModule
from .mask_folder import MaskFolderDataModule
from .shapes import ShapesDataModule

__all__ = [
    "CityscapesDataModule",
    "ConfigError",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "MaskFolderDataModule",
    "ShapesDataModule",
]
