"""ImageNet-layout classification folders with timm's train/eval transforms."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info
from timm.data import create_transform
from torchvision.datasets import ImageFolder

from .digits import DigitsDataModule
from .layout import IMAGE_EXTENSIONS, ConfigError, first_few, require_dir
from .loading import TrainValDataModule

LAYOUT = """  <root>/train/<class_name>/<image>.jpg   (one folder per class, e.g. n01440764/)
  <root>/val/<class_name>/<image>.jpg     (the same class folders)"""


def _check_split(root: Path, split: str) -> list[str]:
    folder = require_dir(root / split, f"'{split}' split folder", LAYOUT)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise ConfigError(
            f"'{folder}' has no class sub-folders (found only files).\nExpected layout:\n{LAYOUT}"
        )
    empty = [
        c
        for c in classes
        if not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in (folder / c).rglob("*"))
    ]
    if empty:
        raise ConfigError(
            f"class folders without images in '{folder}': {first_few(empty)}.\n"
            f"Expected layout:\n{LAYOUT}"
        )
    return classes


class ImageFolderDataModule(TrainValDataModule):
    """`root/train/<class>/*` and `root/val/<class>/*` (ImageNet layout).

    Transforms are timm's `create_transform` (RandomResizedCrop + flip + optional RandAugment
    string such as `rand-m9-mstd0.5-inc1`, random erasing; eval: resize by `crop_pct` + center
    crop). `num_classes`, when given, must equal the number of class folders found.

    `root=None` trains on the embedded digits (`DigitsDataModule` at `embedded_size`), so a
    config runs on a fresh machine; `--data.root=/path/to/imagenet` switches to real data.
    """

    def __init__(
        self,
        root: str | None = None,
        image_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 4,
        num_classes: int | None = None,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        crop_pct: float = 0.875,
        interpolation: str = "bicubic",
        embedded_size: int = 32,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedded = None
        if root is None:
            rank_zero_info("data.root is not set: using the embedded digits (no download)")
            self.embedded = DigitsDataModule(image_size=embedded_size, batch_size=batch_size)
            self._found(DigitsDataModule.class_names)
            return
        self.root = require_dir(root, "ImageFolder root", LAYOUT)
        train_classes = _check_split(self.root, "train")
        val_classes = _check_split(self.root, "val")
        if train_classes != val_classes:
            diff = sorted(set(train_classes) ^ set(val_classes))
            raise ConfigError(
                f"train and val class folders differ under '{self.root}': {first_few(diff)}"
            )
        if num_classes is not None and num_classes != len(train_classes):
            raise ConfigError(
                f"data.num_classes={num_classes} but '{self.root / 'train'}' has "
                f"{len(train_classes)} class folders ({first_few(train_classes)})"
            )
        self._found(train_classes)

    def _found(self, class_names: list[str]) -> None:
        self.class_names, self.num_classes = class_names, len(class_names)
        # the count found, also in the hyperparameters: Lightning logs the model's and the
        # data's together and refuses a `num_classes` that differs between them
        self.save_hyperparameters({**self.hparams, "num_classes": self.num_classes})

    def setup(self, stage: str | None = None) -> None:
        if self.embedded is not None:
            self.embedded.setup(stage)
            self.train_set, self.val_set = self.embedded.train_set, self.embedded.val_set
            return
        hp = self.hparams
        common = dict(input_size=hp.image_size, interpolation=hp.interpolation)
        train_tf = create_transform(
            is_training=True, auto_augment=hp.auto_augment, re_prob=hp.re_prob, **common
        )
        eval_tf = create_transform(is_training=False, crop_pct=hp.crop_pct, **common)
        self.train_set = ImageFolder(str(self.root / "train"), transform=train_tf)
        self.val_set = ImageFolder(str(self.root / "val"), transform=eval_tf)
