"""LightningDataModules: real-data folders and embedded (download-free) demo sets."""

from .cityscapes import CityscapesDataModule
from .digits import DigitsDataModule
from .image_folder import ImageFolderDataModule
from .layout import DataConfigError
from .mask_folder import MaskFolderDataModule
from .shapes import ShapesDataModule

__all__ = [
    "CityscapesDataModule",
    "DataConfigError",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "MaskFolderDataModule",
    "ShapesDataModule",
]
