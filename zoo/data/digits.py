"""Embedded classification data: scikit-learn's bundled handwritten digits (1,797 real 8x8
scans, 10 classes), upsampled so that ImageNet-style convnets with stride 32 can run on them.
Nothing is downloaded, so every classification config runs on a fresh machine."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..errors import ConfigError
from .loading import TrainValDataModule


class _TensorImages(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


class DigitsDataModule(TrainValDataModule):
    """scikit-learn digits as 3-channel `image_size` images, stratified train/val split.

    Pixels are scaled to [-1, 1]; training adds a small random affine jitter. `test` and
    `predict` use the validation split (the set is too small for a third split). `root` exists
    only to say so when one is given: the digits are embedded, folders are read by
    `ImageFolderDataModule`.
    """

    num_classes = 10
    class_names = [str(i) for i in range(10)]

    def __init__(
        self,
        image_size: int = 32,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        augment: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        root: str | None = None,
    ) -> None:
        if root is not None:
            raise ConfigError(
                f"data.root={root} but DigitsDataModule (the demo) trains on the embedded "
                "scikit-learn digits and reads no folder; for an image folder use a config with "
                "ImageFolderDataModule, e.g. configs/classification/inceptionnext_atto.yaml"
            )
        # explicit dict: frame inspection would pick up the arguments of a datamodule that
        # builds this one as its embedded fallback
        hparams = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 (the digits are 8x8), got {image_size}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.save_hyperparameters(hparams)

    def describe(self) -> str:
        return "scikit-learn digits"

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        hp = self.hparams
        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8) in 0..1
        x = F.interpolate(x, size=(hp.image_size, hp.image_size), mode="bilinear")
        x = (x.clamp(0, 1) * 2 - 1).expand(-1, 3, -1, -1).contiguous()
        y = torch.tensor(digits.target, dtype=torch.long)
        idx_train, idx_val = train_test_split(
            range(len(y)), test_size=hp.val_fraction, stratify=y.numpy(), random_state=hp.seed
        )
        aug = None
        if hp.augment:
            # the background is -1 after scaling, so fill the exposed border with it
            aug = v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), fill=-1.0)
        self.train_set = _TensorImages(x[idx_train], y[idx_train], aug)
        self.val_set = _TensorImages(x[idx_val], y[idx_val])
