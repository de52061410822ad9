"""Paired blurry/sharp images for restoration: the GoPro layout, RealBlur-style pair lists and a
plain `blur/` + `sharp/` folder pair, with the progressive patch schedule of the Restormer /
DeepRFTv2 recipes (the loader crops at the largest patch; each training batch is cut down to
the patch size and mini-batch of the current step, as basicsr's progressive training does).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset

from .blur_synth import BlurredPhotosDataModule
from .layout import ConfigError, first_few, require_dir, require_images
from .loading import TrainValDataModule
from .transforms import load_rgb

LAYOUT = """  GoPro:    <root>/train/<scene>/blur/*.png + <root>/train/<scene>/sharp/*.png (same
            names), the same under <root>/test/
  folders:  <root>/blur/*.png + <root>/sharp/*.png (same names; a seeded val_fraction is held
            out), or <root>/train/{blur,sharp}/ + <root>/test/{blur,sharp}/ (or val/)
  lists:    --data.train_list / --data.val_list: text files of 'sharp_path blur_path' lines
            (RealBlur_J_train_list.txt), paths relative to <root>"""

Size = tuple[int, int]


def _as_size(value: int | Sequence[int], what: str) -> Size:
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or any(not isinstance(s, int) or s < 8 or s % 8 for s in size):
        raise ConfigError(
            f"{what} must be an int or [height, width], multiples of 8 (>= 8), got {value!r}"
        )
    return size


# ------------------------------------------------------------------------------------------------
# layouts -> lists of (blurry, sharp) file pairs


def pair_folders(blur_dir: Path, sharp_dir: Path) -> list[tuple[Path, Path]]:
    """Match `blur_dir/*` with `sharp_dir/*` by file name; raise naming every unmatched file."""
    blurs = require_images(require_dir(blur_dir, "blur folder", LAYOUT), "blur folder", LAYOUT)
    sharps = require_images(require_dir(sharp_dir, "sharp folder", LAYOUT), "sharp folder", LAYOUT)
    by_name = {p.name: p for p in sharps}
    lonely_blur = [b.name for b in blurs if b.name not in by_name]
    blur_names = {b.name for b in blurs}
    lonely_sharp = [s.name for s in sharps if s.name not in blur_names]
    if lonely_blur or lonely_sharp:
        parts = []
        if lonely_blur:
            parts.append(
                f"blurry images without a sharp one in '{sharp_dir}': {first_few(lonely_blur)}"
            )
        if lonely_sharp:
            parts.append(
                f"sharp images without a blurry one in '{blur_dir}': {first_few(lonely_sharp)}"
            )
        raise ConfigError(";\n".join(parts) + f".\nExpected layout:\n{LAYOUT}")
    return [(b, by_name[b.name]) for b in blurs]


def gopro_pairs(split_dir: Path) -> list[tuple[Path, Path]]:
    """`split_dir/<scene>/{blur,sharp}/*` of every scene folder."""
    scenes = sorted(
        p for p in require_dir(split_dir, "split folder", LAYOUT).iterdir() if p.is_dir()
    )
    if not scenes:
        raise ConfigError(f"'{split_dir}' has no scene folders.\nExpected layout:\n{LAYOUT}")
    return [pair for scene in scenes for pair in pair_folders(scene / "blur", scene / "sharp")]


def list_pairs(list_file: Path, root: Path) -> list[tuple[Path, Path]]:
    """Pairs from a RealBlur-style list: one 'sharp_path blur_path [anything]' line per pair,
    paths relative to `root` (absolute ones are kept)."""
    if not list_file.is_file():
        raise ConfigError(f"pair list '{list_file}' does not exist.\nExpected layout:\n{LAYOUT}")
    pairs, missing = [], []
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise ConfigError(
                f"line {number} of '{list_file}' names one file ({line.strip()!r}); expected "
                "'sharp_path blur_path'"
            )
        sharp, blur = (root / f for f in fields[:2])
        missing += [f"{p} (line {number})" for p in (sharp, blur) if not p.is_file()]
        pairs.append((blur, sharp))
    if missing:
        raise ConfigError(f"files named in '{list_file}' do not exist: {first_few(missing)}")
    if not pairs:
        raise ConfigError(f"pair list '{list_file}' holds no pairs")
    return pairs


def _has_scenes(split_dir: Path) -> bool:
    return any((p / "blur").is_dir() for p in split_dir.iterdir() if p.is_dir())


def find_pairs(
    root: Path,
    train_list: str | None,
    val_list: str | None,
    val_fraction: float,
    seed: int,
) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """(train, val) pairs of whichever layout `root` holds (see `LAYOUT`)."""
    if train_list is not None or val_list is not None:
        if train_list is None or val_list is None:
            raise ConfigError("give both data.train_list and data.val_list (pair-list layout)")
        return list_pairs(root / train_list, root), list_pairs(root / val_list, root)
    val_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None:
        if _has_scenes(root / "train"):
            return gopro_pairs(root / "train"), gopro_pairs(val_dir)
        train = pair_folders(root / "train" / "blur", root / "train" / "sharp")
        return train, pair_folders(val_dir / "blur", val_dir / "sharp")
    if (root / "blur").is_dir() or (root / "sharp").is_dir():
        pairs = pair_folders(root / "blur", root / "sharp")
        random.Random(seed).shuffle(pairs)
        n_val = max(1, round(len(pairs) * val_fraction))
        if n_val >= len(pairs):
            raise ConfigError(
                f"'{root}' has {len(pairs)} blur/sharp pairs: too few to hold out "
                f"val_fraction={val_fraction} for validation"
            )
        return sorted(pairs[n_val:]), sorted(pairs[:n_val])
    raise ConfigError(
        f"'{root}' holds none of the paired layouts (no train/ + test/ folders, no blur/ + "
        f"sharp/ folders, no pair lists given).\nExpected layout:\n{LAYOUT}"
    )


# ------------------------------------------------------------------------------------------------
# datasets and augmentation


def geometric_augment(blur: torch.Tensor, sharp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random horizontal/vertical flip and (square images only) 90-degree rotation of
    both images (basicsr's `augment(hflip, rotation)` group of 8 on squares)."""
    if random.random() < 0.5:
        blur, sharp = blur.flip(-1), sharp.flip(-1)
    if random.random() < 0.5:
        blur, sharp = blur.flip(-2), sharp.flip(-2)
    if blur.shape[-1] == blur.shape[-2] and random.random() < 0.5:
        blur, sharp = blur.transpose(-2, -1), sharp.transpose(-2, -1)
    return blur.contiguous(), sharp.contiguous()


def load_pair(blur_path: Path, sharp_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images as (3, H, W) uint8; raise naming both files when their sizes differ."""
    blur, sharp = load_rgb(blur_path), load_rgb(sharp_path)
    if blur.shape != sharp.shape:
        raise ConfigError(
            f"blurry image '{blur_path}' is {tuple(blur.shape[-2:])} but its sharp image "
            f"'{sharp_path}' is {tuple(sharp.shape[-2:])}"
        )
    return blur, sharp


class PairedImages(Dataset):
    """(blurry, sharp) file pairs -> float [0, 1] tensors. Training: the same random `crop`
    (height, width) of both, then flips/rotation; evaluation: the whole images, or their centre
    `crop` when given."""

    def __init__(
        self, pairs: list[tuple[Path, Path]], train: bool, crop: Size | None, augment: bool = True
    ) -> None:
        if train and crop is None:
            raise ValueError("a training set needs a crop size, got crop=None")
        self.pairs, self.train, self.crop, self.augment = pairs, train, crop, augment

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        blur_path, sharp_path = self.pairs[i]
        blur, sharp = load_pair(blur_path, sharp_path)
        if self.crop is not None:
            (th, tw), (h, w) = self.crop, blur.shape[-2:]
            if h < th or w < tw:
                raise ConfigError(
                    f"'{blur_path}' is {h}x{w}, smaller than the {th}x{tw} patch; lower "
                    "data.patch_sizes or data.val_crop"
                )
            if self.train:
                y, x = random.randint(0, h - th), random.randint(0, w - tw)
            else:
                y, x = (h - th) // 2, (w - tw) // 2
            blur, sharp = blur[:, y : y + th, x : x + tw], sharp[:, y : y + th, x : x + tw]
        blur, sharp = blur.float() / 255, sharp.float() / 255
        if self.train and self.augment:
            blur, sharp = geometric_augment(blur, sharp)
        return blur, sharp


# ------------------------------------------------------------------------------------------------
# progressive patches


class ProgressivePatches:
    """Patch size and mini-batch per training step: `sizes[k]` (and `mini_batch_sizes[k]`) from
    step `milestones[k - 1]` on. `crop(blur, sharp, step)` cuts a loaded batch (made at the
    largest size) down to the current size, one random window for the whole batch, and keeps a
    random subset of `mini_batch_sizes[k]` samples (as basicsr's progressive training does)."""

    def __init__(
        self,
        sizes: Sequence[int | Sequence[int]],
        milestones: Sequence[int] = (),
        mini_batch_sizes: Sequence[int] | None = None,
    ) -> None:
        self.sizes = [_as_size(s, "data.patch_sizes entry") for s in sizes]
        self.milestones = list(milestones)
        if not self.sizes or len(self.milestones) != len(self.sizes) - 1:
            raise ConfigError(
                f"data.patch_milestones needs one step per patch-size change: {len(self.sizes)} "
                f"patch_sizes {list(sizes)} need {max(len(self.sizes) - 1, 0)} milestones, "
                f"got {self.milestones}"
            )
        if self.milestones != sorted(self.milestones) or any(m < 1 for m in self.milestones):
            raise ConfigError(
                f"data.patch_milestones must increase from >= 1, got {self.milestones}"
            )
        self.mini_batch_sizes = None if mini_batch_sizes is None else list(mini_batch_sizes)
        if self.mini_batch_sizes is not None and len(self.mini_batch_sizes) != len(self.sizes):
            raise ConfigError(
                f"data.mini_batch_sizes {self.mini_batch_sizes} needs one entry per patch size "
                f"({len(self.sizes)})"
            )
        self.load_size = (max(s[0] for s in self.sizes), max(s[1] for s in self.sizes))

    def stage(self, step: int) -> int:
        return sum(step >= m for m in self.milestones)

    def at(self, step: int) -> tuple[Size, int | None]:
        k = self.stage(step)
        return self.sizes[k], None if self.mini_batch_sizes is None else self.mini_batch_sizes[k]

    def crop(self, blur: torch.Tensor, sharp: torch.Tensor, step: int):
        (th, tw), mini = self.at(step)
        if mini is not None and mini < blur.shape[0]:
            keep = torch.randperm(blur.shape[0])[:mini].to(blur.device)
            blur, sharp = blur[keep], sharp[keep]
        h, w = blur.shape[-2:]
        if (h, w) == (th, tw):
            return blur, sharp
        y, x = random.randint(0, h - th), random.randint(0, w - tw)
        return blur[..., y : y + th, x : x + tw], sharp[..., y : y + th, x : x + tw]


# ------------------------------------------------------------------------------------------------
# the datamodule


class PairedDataModule(TrainValDataModule):
    """Blurry/sharp pairs from `root` in any layout of `LAYOUT` (GoPro, folders, pair lists).

    Training crops `patch_sizes` patches (ints or [height, width]) with flips/rotations; with
    several sizes the loader crops at the largest and every batch is cut to the size (and
    `mini_batch_sizes`, when given) of the current step, switching at `patch_milestones`
    (global steps). Validation: whole images (batch `val_batch_size`; the task pads them to the
    model's multiple and crops back) or their centre `val_crop`.

    `root=None` trains on the embedded blurred scikit-image photos (`BlurredPhotosDataModule`;
    the `embedded_*` arguments), so a config runs on a fresh machine.
    """

    def __init__(
        self,
        root: str | None = None,
        train_list: str | None = None,
        val_list: str | None = None,
        patch_sizes: list[int | list[int]] | None = None,
        patch_milestones: list[int] | None = None,
        mini_batch_sizes: list[int] | None = None,
        batch_size: int = 8,
        val_batch_size: int = 1,
        val_crop: int | list[int] | None = None,
        val_fraction: float = 0.1,
        augment: bool = True,
        num_workers: int = 4,
        seed: int = 0,
        embedded_crop_size: int = 64,
        embedded_val_size: int | None = 128,
        embedded_num_train: int = 256,
        embedded_num_val: int = 4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedded = None
        self.schedule = ProgressivePatches(
            patch_sizes or [256], patch_milestones or [], mini_batch_sizes
        )
        if mini_batch_sizes is not None and max(mini_batch_sizes) > batch_size:
            raise ConfigError(
                f"data.mini_batch_sizes {mini_batch_sizes} exceed data.batch_size={batch_size} "
                "(the loaded batch they are taken from)"
            )
        if root is None:
            rank_zero_info(
                "data.root is not set: using scikit-image photos with generated camera shake"
            )
            self.embedded = BlurredPhotosDataModule(
                crop_size=embedded_crop_size,
                val_size=embedded_val_size,
                num_train=embedded_num_train,
                num_val=embedded_num_val,
                batch_size=batch_size,
                val_batch_size=val_batch_size,
                augment=augment,
                seed=seed,
            )
            emb = _as_size(embedded_crop_size, "data.embedded_crop_size")
            if any(s[0] > emb[0] or s[1] > emb[1] for s in self.schedule.sizes):
                # the patch schedule applies to the embedded crops
                self.schedule = ProgressivePatches(
                    [emb] * len(self.schedule.sizes), patch_milestones or [], mini_batch_sizes
                )
            return
        self.root = require_dir(root, "paired-image root", LAYOUT)
        self.train_pairs, self.val_pairs = find_pairs(
            self.root, train_list, val_list, val_fraction, seed
        )
        self.val_crop = None if val_crop is None else _as_size(val_crop, "data.val_crop")

    def eval_batch_size(self) -> int:
        return self.hparams.val_batch_size

    def setup(self, stage: str | None = None) -> None:
        if self.embedded is not None:
            self.embedded.setup(stage)
            self.train_set, self.val_set = self.embedded.train_set, self.embedded.val_set
            return
        self.train_set = PairedImages(
            self.train_pairs, True, self.schedule.load_size, self.hparams.augment
        )
        self.val_set = PairedImages(self.val_pairs, False, self.val_crop)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        trainer = getattr(self, "trainer", None)
        # training batches only (Lightning also sends the model summary's example input here)
        if trainer is None or not trainer.training or not isinstance(batch, list | tuple):
            return batch
        blur, sharp = batch
        return self.schedule.crop(blur, sharp, trainer.global_step)

    def patch_size(self, step: int) -> Size:
        """The training patch (height, width) at global step `step`."""
        return self.schedule.at(step)[0]
