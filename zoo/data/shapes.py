"""Embedded segmentation data: generated scenes with exact masks, textured with scikit-image's
bundled photographs (brick, grass, gravel, camera, coffee, ...). Nothing is downloaded.

- `num_classes=2` (binary, like the medical sets): `skimage.data.binary_blobs` foreground with
  one texture over a background with another.
- `num_classes=K>2`: background plus K-1 object classes, drawn as disks, rectangles, triangles
  and ellipses; each class has its own shape, texture and tint, so the classes are separable by
  appearance and geometry.
"""

from __future__ import annotations

import functools

import numpy as np
import skimage.data
import torch
from skimage import draw
from torch.utils.data import Dataset

from .loading import TrainValDataModule
from .transforms import SegmentationTransform

_TEXTURES = ("brick", "grass", "gravel", "camera", "coffee", "astronaut", "chelsea", "moon")
_SHAPES = ("disk", "rectangle", "triangle", "ellipse")


@functools.cache
def _load_textures() -> list[np.ndarray]:
    out = []
    for name in _TEXTURES:
        img = getattr(skimage.data, name)().astype(np.float32)
        if img.ndim == 3:
            img = img[..., :3].mean(-1)
        out.append(img / max(img.max(), 1.0))
    return out


def _crop(tex: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    step = int(rng.integers(1, 4))  # a random zoom so textures show at several scales
    h, w = tex.shape
    span = size * step
    y, x = int(rng.integers(0, h - span + 1)), int(rng.integers(0, w - span + 1))
    return tex[y : y + span : step, x : x + span : step]


def _shape_pixels(kind: str, size: int, rng: np.random.Generator):
    r = int(rng.integers(size // 10, size // 4 + 1))
    cy, cx = (int(v) for v in rng.integers(r, size - r, 2))
    if kind == "disk":
        return draw.disk((cy, cx), r, shape=(size, size))
    if kind == "rectangle":
        h, w = (int(v) for v in rng.integers(r, 2 * r + 1, 2))
        return draw.rectangle((cy - r, cx - r), extent=(h, w), shape=(size, size))
    if kind == "triangle":
        rows = np.array([cy - r, cy + r, cy + r])
        cols = np.array([cx, cx - r, cx + r])
        return draw.polygon(rows, cols, shape=(size, size))
    return draw.ellipse(
        cy, cx, r, max(2, r // 2), shape=(size, size), rotation=float(rng.uniform(0, np.pi))
    )


def generate_scenes(
    n: int, size: int, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`n` RGB uint8 images (n, 3, size, size) and int64 masks (n, size, size)."""
    rng = np.random.default_rng(seed)
    textures = _load_textures()
    # per-class RGB tint; class 0 (background) is dim and grey-ish
    palette = np.concatenate([[[0.45, 0.45, 0.45]], rng.uniform(0.3, 1.0, (num_classes - 1, 3))])
    images = np.empty((n, 3, size, size), np.uint8)
    masks = np.zeros((n, size, size), np.int64)
    for i in range(n):
        bg_tex = textures[int(rng.integers(len(textures)))]
        layers = {0: _crop(bg_tex, size, rng)}
        mask = masks[i]
        if num_classes == 2:
            frac = float(rng.uniform(0.2, 0.4))
            blobs = skimage.data.binary_blobs(
                size, blob_size_fraction=0.15, volume_fraction=frac, rng=int(rng.integers(2**31))
            )
            mask[blobs] = 1
        else:
            for _ in range(int(rng.integers(2, 6))):
                c = int(rng.integers(1, num_classes))
                rr, cc = _shape_pixels(_SHAPES[(c - 1) % len(_SHAPES)], size, rng)
                mask[rr, cc] = c
        for c in np.unique(mask):
            if c not in layers:
                layers[c] = _crop(textures[int(c) % len(textures)], size, rng)
        img = np.zeros((3, size, size), np.float32)
        for c, tex in layers.items():
            tint = palette[c] * rng.uniform(0.85, 1.15, 3)
            sel = mask == c
            img[:, sel] = tint[:, None] * (0.35 + 0.65 * tex[sel])[None]
        img += rng.normal(0, 0.04, img.shape)
        images[i] = (img.clip(0, 1) * 255).astype(np.uint8)
    return images, masks


class _Scenes(Dataset):
    def __init__(self, images: np.ndarray, masks: np.ndarray, transform) -> None:
        self.images, self.masks, self.transform = images, masks, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(torch.from_numpy(self.images[i]), torch.from_numpy(self.masks[i]))


class ShapesDataModule(TrainValDataModule):
    """Generated textured scenes with masks (see the module docstring). Deterministic for a
    given `seed`; the validation scenes are generated from a different seed than training."""

    def __init__(
        self,
        num_classes: int = 2,
        image_size: int = 64,
        num_train: int = 256,
        num_val: int = 64,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        # explicit dict: frame inspection would pick up the arguments of a datamodule that
        # builds this one as its embedded fallback
        hparams = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background too: need >= 2, got {num_classes}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        self.save_hyperparameters(hparams)
        self.num_classes = num_classes
        self.class_names = ["background"] + [
            f"{_SHAPES[(c - 1) % len(_SHAPES)]}{c}" for c in range(1, num_classes)
        ]
        if num_classes == 2:
            self.class_names = ["background", "foreground"]

    def describe(self) -> str:
        return f"generated {self.num_classes}-class scenes"

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        hp = self.hparams
        size = (hp.image_size, hp.image_size)
        train = generate_scenes(hp.num_train, hp.image_size, hp.num_classes, hp.seed)
        val = generate_scenes(hp.num_val, hp.image_size, hp.num_classes, hp.seed + 10_000)
        self.train_set = _Scenes(*train, SegmentationTransform(size, train=True, vflip=True))
        self.val_set = _Scenes(*val, SegmentationTransform(size, train=False))
