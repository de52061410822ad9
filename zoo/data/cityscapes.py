"""Cityscapes-layout semantic segmentation: `leftImg8bit/` + `gtFine/*_labelIds.png`, label ids
mapped to the 19 train ids, everything else ignored (255)."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info

from .layout import ConfigError, first_few, require_dir, require_images
from .loading import TrainValDataModule
from .shapes import ShapesDataModule
from .transforms import ImageLabelPairs, SegmentationTransform

LAYOUT = """  <root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <root>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png"""

IGNORE_INDEX = 255
# (label id, train id) of the 19 evaluated classes, from the Cityscapes label definition
# (cityscapesScripts `labels.py`); every other id, and the license plate (-1), is ignored.
_EVAL_IDS = (
    (7, 0), (8, 1), (11, 2), (12, 3), (13, 4), (17, 5), (19, 6), (20, 7), (21, 8), (22, 9),
    (23, 10), (24, 11), (25, 12), (26, 13), (27, 14), (28, 15), (31, 16), (32, 17), (33, 18),
)  # fmt: skip
CLASS_NAMES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]  # fmt: skip


def label_ids_to_train_ids(label_ids: torch.Tensor) -> torch.Tensor:
    """Map a Cityscapes labelIds map (values 0..33) to train ids (0..18, 255 = ignore)."""
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.long)
    for label_id, train_id in _EVAL_IDS:
        lut[label_id] = train_id
    return lut[label_ids.clamp(0, 255)]


def find_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, labelIds) pairs of one split; raise naming what is missing."""
    img_dir = require_dir(root / "leftImg8bit" / split, f"Cityscapes '{split}' images", LAYOUT)
    gt_dir = require_dir(root / "gtFine" / split, f"Cityscapes '{split}' labels", LAYOUT)
    images = require_images(img_dir, "Cityscapes image folder", LAYOUT, recursive=True)
    pairs, missing = [], []
    for img in images:
        stem = img.name.replace("_leftImg8bit", "").rsplit(".", 1)[0]
        gt = gt_dir / img.parent.name / f"{stem}_gtFine_labelIds.png"
        (pairs.append((img, gt)) if gt.is_file() else missing.append(str(gt)))
    if missing:
        raise ConfigError(
            f"{len(missing)} of {len(images)} '{split}' images have no labelIds file; "
            f"missing: {first_few(missing, 3)}.\nExpected layout:\n{LAYOUT}"
        )
    return pairs


class CityscapesDataModule(TrainValDataModule):
    """Cityscapes fine annotations. Training: random scale in `scale_range` (relative to the
    2048-wide original, as BEVANet/PIDNet do), random `crop_size` crop, flip. Validation at
    `val_size` (default: the full 1024x2048).

    `root=None` trains on generated scenes with 19 shape classes (`ShapesDataModule` at
    `embedded_size`), so a config runs on a fresh machine; `--data.root=...` switches to real data.
    """

    num_classes = 19
    class_names = CLASS_NAMES
    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        root: str | None = None,
        crop_size: tuple[int, int] = (1024, 1024),
        val_size: tuple[int, int] | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        batch_size: int = 12,
        num_workers: int = 4,
        embedded_size: int = 64,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedded = None
        if root is None:
            rank_zero_info("data.root is not set: using generated 19-class scenes (no download)")
            self.embedded = ShapesDataModule(19, embedded_size, batch_size=batch_size)
            return
        self.root = require_dir(root, "Cityscapes root", LAYOUT)
        self.train_pairs = find_pairs(self.root, "train")
        self.val_pairs = find_pairs(self.root, "val")

    def setup(self, stage: str | None = None) -> None:
        if self.embedded is not None:
            self.embedded.setup(stage)
            self.train_set, self.val_set = self.embedded.train_set, self.embedded.val_set
            return
        hp = self.hparams
        train_tf = SegmentationTransform(
            # scales are relative to the short side fitting the crop: for 1024x2048 images and
            # a 1024x1024 crop, scale 1.0 is the original resolution, as in BEVANet/PIDNet
            tuple(hp.crop_size),
            train=True,
            scale_range=tuple(hp.scale_range),
            ignore_index=IGNORE_INDEX,
        )
        val_tf = SegmentationTransform(
            tuple(hp.val_size) if hp.val_size else None, train=False, ignore_index=IGNORE_INDEX
        )
        self.train_set = ImageLabelPairs(self.train_pairs, train_tf, label_ids_to_train_ids)
        self.val_set = ImageLabelPairs(self.val_pairs, val_tf, label_ids_to_train_ids)

    def eval_batch_size(self) -> int:
        # full-resolution Cityscapes images are evaluated one at a time
        return self.hparams.batch_size if self.embedded is not None else 1
