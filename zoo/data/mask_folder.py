"""Binary segmentation from an `images/` + `masks/` folder, the way ISIC, BUSI, Kvasir-SEG and
CVC-ClinicDB are distributed."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info

from .layout import ConfigError, first_few, require_dir, require_images
from .loading import TrainValDataModule
from .shapes import ShapesDataModule
from .transforms import ImageLabelPairs, SegmentationTransform

LAYOUT = """  <root>/images/<name>.png|jpg    input images
  <root>/masks/<name>.png|jpg     one mask per image: same name, optionally with a suffix
                                  (_mask, _segmentation, _Segmentation); foreground > 127
or, with a fixed split, the same two folders under <root>/train/ and <root>/val/"""

MASK_SUFFIXES = ("", "_mask", "_segmentation", "_Segmentation", "_seg")


def pair_images_with_masks(root: Path) -> list[tuple[Path, Path]]:
    """Match `root/images/*` to `root/masks/*` by file stem; raise on any unmatched file."""
    images = require_images(
        require_dir(root / "images", "images folder", LAYOUT), "images folder", LAYOUT
    )
    masks = require_images(
        require_dir(root / "masks", "masks folder", LAYOUT), "masks folder", LAYOUT
    )
    by_stem = {m.stem: m for m in masks}
    pairs, unmatched = [], []
    for img in images:
        mask = next((by_stem[img.stem + s] for s in MASK_SUFFIXES if img.stem + s in by_stem), None)
        if mask is None:
            unmatched.append(img.name)
        else:
            pairs.append((img, mask))
    used = {m for _, m in pairs}
    extra = [m.name for m in masks if m not in used]
    if unmatched or extra or len(images) != len(masks):
        msg = [
            f"{len(images)} images in '{root / 'images'}' but {len(masks)} masks in "
            f"'{root / 'masks'}'"
            if len(images) != len(masks)
            else f"images and masks under '{root}' do not pair up"
        ]
        if unmatched:
            msg.append(f"images without a mask: {first_few(unmatched)}")
        if extra:
            msg.append(f"masks without an image: {first_few(extra)}")
        raise ConfigError(";\n".join(msg) + f".\nExpected layout:\n{LAYOUT}")
    return pairs


def binarize_mask(raw: torch.Tensor) -> torch.Tensor:
    """1 where the stored value exceeds half its range: 0/255 masks (JPEG-compressed ones carry
    noise around both values) and 0/1 masks."""
    return (raw > (127 if raw.max() > 1 else 0)).long()


class MaskFolderDataModule(TrainValDataModule):
    """Binary segmentation from `root/images` + `root/masks`, split `val_fraction` at random
    (seeded), or from `root/train/...` and `root/val/...` when those exist.

    Images are resized to `image_size`; training adds flips (both axes, as medical images have
    no canonical orientation) and a random scale in `scale_range` followed by a crop.

    `root=None` trains on generated textured blobs (`ShapesDataModule`, binary, at
    `embedded_size`), so a config runs on a fresh machine; `--data.root=...` switches to real data.
    """

    num_classes = 2
    class_names = ["background", "foreground"]

    def __init__(
        self,
        root: str | None = None,
        image_size: int = 256,
        batch_size: int = 8,
        val_fraction: float = 0.2,
        scale_range: tuple[float, float] = (0.75, 1.25),
        num_workers: int = 4,
        seed: int = 0,
        embedded_size: int = 64,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedded = None
        if root is None:
            rank_zero_info("data.root is not set: using generated blobs (no download)")
            self.embedded = ShapesDataModule(2, embedded_size, batch_size=batch_size, seed=seed)
            return
        self.root = require_dir(root, "mask-folder root", LAYOUT)
        if (self.root / "train").is_dir():
            self.train_pairs = pair_images_with_masks(self.root / "train")
            self.val_pairs = pair_images_with_masks(
                require_dir(self.root / "val", "val split folder", LAYOUT)
            )
        else:
            pairs = pair_images_with_masks(self.root)
            random.Random(seed).shuffle(pairs)
            n_val = max(1, round(len(pairs) * val_fraction))
            if n_val >= len(pairs):
                raise ConfigError(
                    f"'{self.root}' has {len(pairs)} image/mask pairs: too few to hold out "
                    f"val_fraction={val_fraction} for validation"
                )
            self.val_pairs, self.train_pairs = pairs[:n_val], pairs[n_val:]

    def setup(self, stage: str | None = None) -> None:
        if self.embedded is not None:
            self.embedded.setup(stage)
            self.train_set, self.val_set = self.embedded.train_set, self.embedded.val_set
            return
        size = (self.hparams.image_size, self.hparams.image_size)
        train_tf = SegmentationTransform(
            size, train=True, scale_range=self.hparams.scale_range, vflip=True, ignore_index=0
        )
        self.train_set = ImageLabelPairs(self.train_pairs, train_tf, binarize_mask)
        self.val_set = ImageLabelPairs(
            self.val_pairs, SegmentationTransform(size, train=False), binarize_mask
        )
