"""Joint image + mask transforms for segmentation (the mask is resized with nearest neighbour and
padded with the ignore index, so labels never blend)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset

from ..errors import ConfigError


def load_rgb(path: Path) -> torch.Tensor:
    """(3, H, W) uint8 tensor."""
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def load_mask(path: Path) -> torch.Tensor:
    """(H, W) int64 tensor of the mask's raw values (first channel of an RGB mask)."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return torch.from_numpy(arr.astype(np.int64))


def _resize(img: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]):
    img = F.interpolate(img[None].float(), size=size, mode="bilinear", antialias=True)[0]
    mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return img, mask


class SegmentationTransform:
    """Image (uint8 or float 0..255, (3, H, W)) + mask ((H, W) int) -> normalised float image +
    int64 mask.

    Training: random scale in `scale_range`, random crop of `size` (padding the mask with
    `ignore_index`, the image with 0) and horizontal (optionally vertical) flips. Evaluation:
    resize to `size`, or keep the original resolution when `size` is None.
    """

    def __init__(
        self,
        size: tuple[int, int] | None,
        train: bool,
        scale_range: tuple[float, float] = (1.0, 1.0),
        hflip: bool = True,
        vflip: bool = False,
        ignore_index: int = 255,
        mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN,
        std: tuple[float, ...] = IMAGENET_DEFAULT_STD,
    ) -> None:
        if train and size is None:
            raise ValueError("a training transform needs a crop size, got size=None")
        self.size, self.train = size, train
        self.scale_range, self.hflip, self.vflip = scale_range, hflip, vflip
        self.ignore_index = ignore_index
        self.mean = torch.tensor(mean).view(3, 1, 1) * 255
        self.std = torch.tensor(std).view(3, 1, 1) * 255

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = img.float()
        if self.train:
            img, mask = self._scale_crop(img, mask)
            if self.hflip and random.random() < 0.5:
                img, mask = img.flip(-1), mask.flip(-1)
            if self.vflip and random.random() < 0.5:
                img, mask = img.flip(-2), mask.flip(-2)
        elif self.size is not None and tuple(img.shape[-2:]) != tuple(self.size):
            img, mask = _resize(img, mask, self.size)
        return (img - self.mean) / self.std, mask.long()

    def _scale_crop(self, img: torch.Tensor, mask: torch.Tensor):
        th, tw = self.size
        lo, hi = self.scale_range
        s = random.uniform(lo, hi)
        # the scale is relative to the crop size, so scale 1 maps the image onto the crop exactly
        # when both have the same aspect; larger images (Cityscapes) keep their aspect
        h, w = img.shape[-2:]
        base = max(th / h, tw / w) if (h, w) != (th, tw) else 1.0
        nh, nw = max(1, round(h * base * s)), max(1, round(w * base * s))
        if (nh, nw) != (h, w):
            img, mask = _resize(img, mask, (nh, nw))
        ph, pw = max(th - nh, 0), max(tw - nw, 0)
        if ph or pw:
            img = F.pad(img, (0, pw, 0, ph), value=0.0)
            mask = F.pad(mask, (0, pw, 0, ph), value=self.ignore_index)
        h, w = img.shape[-2:]
        y, x = random.randint(0, h - th), random.randint(0, w - tw)
        return img[:, y : y + th, x : x + tw], mask[y : y + th, x : x + tw]


class ImageLabelPairs(Dataset):
    """(image file, label-map file) pairs -> `transform(image, to_label(raw label map))`."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        transform: SegmentationTransform,
        to_label: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.pairs, self.transform, self.to_label = pairs, transform, to_label

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        img_path, label_path = self.pairs[i]
        img, raw = load_rgb(img_path), load_mask(label_path)
        if img.shape[-2:] != raw.shape:
            raise ConfigError(
                f"image '{img_path}' is {tuple(img.shape[-2:])} but its mask '{label_path}' is "
                f"{tuple(raw.shape)}"
            )
        return self.transform(img, self.to_label(raw))
