"""LightningDataModules: real-data folders and embedded (download-free) demo sets."""

from .cityscapes import CityscapesDataModule
from .digits import DigitsDataModule
from .image_folder import ImageFolderDataModule
from .layout import ConfigError
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
