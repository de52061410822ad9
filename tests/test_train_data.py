"""zoo.data: the datamodules deliver what their layouts promise, checked against independent
references (torchvision's Cityscapes table, scikit-learn's digits, hand-made folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torchvision.datasets import Cityscapes

from zoo.data import (
    CityscapesDataModule,
    ConfigError,
    DigitsDataModule,
    ImageFolderDataModule,
    MaskFolderDataModule,
    ShapesDataModule,
)
from zoo.data.cityscapes import label_ids_to_train_ids
from zoo.data.transforms import SegmentationTransform


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_cityscapes_label_ids_map_like_torchvision_table() -> None:
    ids = torch.arange(34)
    ours = label_ids_to_train_ids(ids)
    for cls in Cityscapes.classes:
        if 0 <= cls.id < 34:
            expect = cls.train_id if cls.train_id not in (-1, 255) else 255
            assert int(ours[cls.id]) == expect, cls.name


def test_cityscapes_folder_pairs_images_with_label_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k in range(2):
            stem = f"aachen_000000_00001{k}"
            _save(
                tmp_path / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png",
                rng.integers(0, 255, (16, 32, 3), dtype=np.uint8),
            )
            _save(
                tmp_path / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png",
                np.full((16, 32), 26, np.uint8),
            )  # 26 = car -> train id 13
    dm = CityscapesDataModule(str(tmp_path), crop_size=(8, 8), batch_size=2, num_workers=0)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 8, 8) and y.shape == (2, 8, 8)
    assert set(y.unique().tolist()) <= {13, 255}
    xv, yv = dm.val_set[0]
    assert xv.shape == (3, 16, 32) and (yv == 13).all()
    # a missing label file is named
    (tmp_path / "gtFine" / "val" / "aachen" / "aachen_000000_000011_gtFine_labelIds.png").unlink()
    with pytest.raises(ConfigError, match="aachen_000000_000011_gtFine_labelIds.png"):
        CityscapesDataModule(str(tmp_path))


def test_mask_folder_binarises_and_pairs_isic_names(tmp_path: Path) -> None:
    for i in range(5):
        img = np.zeros((20, 20, 3), np.uint8)
        mask = np.zeros((20, 20), np.uint8)
        mask[5:15, 5:15] = 255
        mask[0, 0] = 120  # JPEG-like noise below half range stays background
        _save(tmp_path / "images" / f"ISIC_{i}.jpg", img)
        _save(tmp_path / "masks" / f"ISIC_{i}_segmentation.png", mask)
    dm = MaskFolderDataModule(str(tmp_path), image_size=20, val_fraction=0.4, num_workers=0)
    assert len(dm.train_pairs) == 3 and len(dm.val_pairs) == 2
    dm.setup("fit")
    _, m = dm.val_set[0]
    assert m.dtype == torch.long and int(m.sum()) == 100 and int(m[0, 0]) == 0


def test_mask_folder_rejects_image_mask_size_mismatch(tmp_path: Path) -> None:
    _save(tmp_path / "images" / "a.png", np.zeros((20, 20, 3), np.uint8))
    _save(tmp_path / "images" / "b.png", np.zeros((20, 20, 3), np.uint8))
    _save(tmp_path / "masks" / "a.png", np.zeros((20, 20), np.uint8))
    _save(tmp_path / "masks" / "b.png", np.zeros((10, 20), np.uint8))
    dm = MaskFolderDataModule(str(tmp_path), image_size=16, val_fraction=0.5, num_workers=0)
    dm.setup("fit")
    with pytest.raises(ConfigError, match=r"\(20, 20\) but its mask .* is \(10, 20\)"):
        [dm.train_set[0], dm.val_set[0]]


def test_image_folder_classes_and_timm_transforms(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for c in ("b_dog", "a_cat"):
            _save(tmp_path / split / c / "x.jpg", np.zeros((40, 50, 3), np.uint8))
    dm = ImageFolderDataModule(str(tmp_path), image_size=32, batch_size=2, num_workers=0)
    assert dm.class_names == ["a_cat", "b_dog"] and dm.num_classes == 2
    dm.setup("fit")
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (2, 3, 32, 32) and sorted(y.tolist()) == [0, 1]


def test_folder_datamodules_fall_back_to_embedded_data() -> None:
    dm = ImageFolderDataModule(root=None, batch_size=4, embedded_size=16)
    dm.setup("fit")
    assert dm.num_classes == 10 and len(dm.train_set) + len(dm.val_set) == 1797
    seg = MaskFolderDataModule(root=None, batch_size=2, embedded_size=32)
    seg.setup("fit")
    assert seg.num_classes == 2 and seg.train_set[0][0].shape == (3, 32, 32)


def test_digits_are_sklearn_digits_upsampled_with_stratified_split() -> None:
    dm = DigitsDataModule(image_size=16, augment=False, val_fraction=0.2)
    dm.setup("fit")
    ref = load_digits()
    assert len(dm.train_set) + len(dm.val_set) == len(ref.target) == 1797
    # every class keeps its share in validation (stratified), within rounding
    counts = torch.bincount(dm.val_set.labels, minlength=10)
    expect = np.bincount(ref.target) * 0.2
    assert np.abs(counts.numpy() - expect).max() <= 1
    # the images are the bundled scans: downsampling ours back to 8x8 recovers them
    x = dm.val_set.images[:, :1]
    back = torch.nn.functional.adaptive_avg_pool2d((x + 1) / 2 * 16, 8)[:, 0]
    flat = torch.tensor(ref.images, dtype=torch.float32)
    idx = [int((flat - b).abs().flatten(1).sum(1).argmin()) for b in back[:20]]
    assert all(ref.target[i] == int(y) for i, y in zip(idx, dm.val_set.labels[:20], strict=True))


def test_shapes_masks_are_deterministic_and_hold_every_class() -> None:
    a = ShapesDataModule(num_classes=5, image_size=32, num_train=24, num_val=4, seed=3)
    b = ShapesDataModule(num_classes=5, image_size=32, num_train=24, num_val=4, seed=3)
    a.setup("fit")
    b.setup("fit")
    assert np.array_equal(a.train_set.masks, b.train_set.masks)
    assert set(np.unique(a.train_set.masks)) == {0, 1, 2, 3, 4}
    # the generated foreground differs in appearance from the background it covers
    img, mask = a.train_set.images.astype(float), a.train_set.masks
    fg = img.transpose(1, 0, 2, 3)[:, mask > 0].mean(1)
    bg = img.transpose(1, 0, 2, 3)[:, mask == 0].mean(1)
    assert np.abs(fg - bg).max() > 10


def test_segmentation_transform_pads_masks_with_ignore_and_keeps_alignment() -> None:
    img = torch.zeros(3, 8, 8)
    img[:, :, :4] = 255.0  # left half bright
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[:, :4] = 1  # ... and labelled 1
    tf = SegmentationTransform((16, 16), train=True, scale_range=(0.5, 0.5), hflip=True)
    for _ in range(5):
        x, m = tf(img, mask)
        valid = m != 255
        assert (~valid).any()  # scale 0.5 of a 16x16 fit leaves padding
        bright = x[0] > 0
        assert torch.equal(bright[valid], (m[valid] == 1))
