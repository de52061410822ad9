"""LightningDataModules: real-data folders and embedded (download-free) demo sets."""

from ..errors import ConfigError
from .blur_synth import BlurredPhotosDataModule
from .cityscapes import CityscapesDataModule
from .digits import DigitsDataModule
from .image_folder import ImageFolderDataModule
from .mask_folder import MaskFolderDataModule
from .paired import PairedDataModule
from .shapes import ShapesDataModule

__all__ = [
    "BlurredPhotosDataModule",
    "CityscapesDataModule",
    "ConfigError",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "MaskFolderDataModule",
    "PairedDataModule",
    "ShapesDataModule",
]
