"""Embedded deblurring data: real photographs that scikit-image ships, blurred with generated
camera-shake kernels plus Gaussian noise. Nothing is downloaded.

Kernels follow the random-trajectory model of Boracchi & Foi ("Modeling the performance of
image restoration from motion blur", IEEE TIP 2012), the one DeblurGAN uses to synthesise its
training blur: the camera position is a 2-D random walk with inertia (constant speed, the
velocity nudged by Gaussian noise and pulled back towards the start) and rare impulsive jumps
(abrupt shakes); the path is rasterised with sub-pixel (bilinear) weights onto the kernel grid and
normalised to sum 1, so every point of the exposure contributes the same light.

Photos: the RGB ones are used as they are; grayscale photos are repeated over three channels.
Whole photos are held out for validation (`VAL_PHOTOS`), never crops of training photos.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import ConfigError
from .loading import TrainValDataModule

TRAIN_PHOTOS = (
    "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",  # RGB
    "camera", "coins", "moon", "clock", "brick", "grass", "gravel",  # grayscale -> RGB
)  # fmt: skip
VAL_PHOTOS = ("chelsea", "coffee")  # RGB, held out whole


def camera_shake_trajectory(
    rng: np.random.Generator,
    length: float,
    num_steps: int = 1000,
    anxiety: float | None = None,
) -> np.ndarray:
    """A camera path (complex positions, `num_steps` points, total length `length` pixels).

    Per step: velocity += anxiety * (gaussian * N(0, 1 + 1j) - centripetal * position) * step
    (+ a reversing jump with probability `shake_frequency * anxiety`), then the velocity is
    rescaled to the constant speed `step = length / (num_steps - 1)`. The random strengths are
    drawn per trajectory in the ranges of Boracchi & Foi's code: centripetal in [0, 0.7],
    gaussian in [0, 10], shake frequency in [0, 0.2]; `anxiety` in [0, 0.005] unless given.
    """
    if length <= 0 or num_steps < 2:
        raise ValueError(f"need length > 0 and num_steps >= 2, got {length}, {num_steps}")
    anxiety = 0.005 * rng.random() if anxiety is None else anxiety
    centripetal, gaussian, shake_freq = 0.7 * rng.random(), 10 * rng.random(), 0.2 * rng.random()
    step = length / (num_steps - 1)
    noise = rng.standard_normal((num_steps, 2)) @ np.array([1.0, 1j])
    jumps = rng.random(num_steps) < shake_freq * anxiety
    jump_angles = math.pi + (rng.random(num_steps) - 0.5)
    v = step * np.exp(1j * 2 * math.pi * rng.random())
    x = np.zeros(num_steps, np.complex128)
    for t in range(num_steps - 1):
        dv = anxiety * (gaussian * noise[t] - centripetal * x[t]) * step
        if jumps[t]:
            dv += 2 * v * np.exp(1j * jump_angles[t])
        v = v + dv
        v = v / max(abs(v), 1e-12) * step
        x[t + 1] = x[t] + v
    return x


def rasterize_trajectory(path: np.ndarray, size: int) -> np.ndarray:
    """(size, size) float32 kernel: the path centred on the grid (scaled down when it does not
    fit), each point splatted with bilinear weights, normalised to sum 1."""
    if size < 3 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and >= 3, got {size}")
    xs, ys = path.real.copy(), path.imag.copy()
    xs -= (xs.max() + xs.min()) / 2
    ys -= (ys.max() + ys.min()) / 2
    extent = max(np.ptp(xs), np.ptp(ys))
    if extent > size - 2:  # one pixel left for the bilinear footprint
        xs, ys = xs * (size - 2) / extent, ys * (size - 2) / extent
    px, py = xs + (size - 1) / 2, ys + (size - 1) / 2
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    kernel = np.zeros((size, size), np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(
                kernel, (np.clip(y0 + dy, 0, size - 1), np.clip(x0 + dx, 0, size - 1)), wy * wx
            )
    return (kernel / kernel.sum()).astype(np.float32)


def random_motion_kernel(
    rng: np.random.Generator, size: int = 15, length_range: tuple[float, float] = (4.0, 14.0)
) -> np.ndarray:
    """A camera-shake kernel (size x size, non-negative, sum 1) of path length drawn from
    `length_range` pixels."""
    lo, hi = length_range
    if not 0 < lo <= hi:
        raise ValueError(f"length_range must be 0 < low <= high, got {length_range}")
    return rasterize_trajectory(camera_shake_trajectory(rng, rng.uniform(lo, hi)), size)


def blur_valid(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve a (3, H, W) float image with a (k, k) kernel, 'valid' region: (3, H-k+1, W-k+1)
    (a true convolution: the kernel is flipped for conv2d's correlation)."""
    k = kernel.flip(-2, -1).to(image)[None, None].expand(image.shape[0], 1, -1, -1)
    return F.conv2d(image[None], k, groups=image.shape[0])[0]


@functools.cache
def load_photo(name: str, short_side: int) -> torch.Tensor:
    """scikit-image photo `name` as a (3, H, W) float tensor in [0, 1], downscaled (antialiased)
    so that its shorter side is at most `short_side` (never upscaled)."""
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    x = torch.from_numpy(img[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1)
    scale = short_side / min(x.shape[-2:])
    if scale < 1:
        size = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
        x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True)[0].clamp(0, 1)
    return x


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def synthesize_pairs(
    photos: tuple[str, ...],
    count: int,
    size: int | None,
    seed: int,
    short_side: int,
    kernel_size: int,
    length_range: tuple[float, float],
    noise_std: float,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[np.ndarray]]:
    """`count` (blurry, sharp) uint8 pairs and their kernels: photo `i % len(photos)`, a random
    `size` crop (whole photo when None), a fresh kernel, 'valid' blur (the sharp crop's
    surroundings blur into it, no padded border) and Gaussian noise of `noise_std`."""
    rng = np.random.default_rng(seed)
    blurry, sharp, kernels = [], [], []
    half = kernel_size // 2
    for i in range(count):
        photo = load_photo(photos[i % len(photos)], short_side)
        h, w = photo.shape[-2:]
        ch, cw = (h - 2 * half, w - 2 * half) if size is None else (size, size)
        if ch < 8 or cw < 8 or ch + 2 * half > h or cw + 2 * half > w:
            raise ConfigError(
                f"a {size}x{size} crop (+{2 * half} kernel margin) does not fit photo "
                f"'{photos[i % len(photos)]}' at {h}x{w} (photo_short_side={short_side})"
            )
        y, x = (
            int(rng.integers(0, h - ch - 2 * half + 1)),
            int(rng.integers(0, w - cw - 2 * half + 1)),
        )
        region = photo[:, y : y + ch + 2 * half, x : x + cw + 2 * half]
        kernel = random_motion_kernel(rng, kernel_size, length_range)
        blur = blur_valid(region, torch.from_numpy(kernel))
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        blur = blur + noise_std * torch.randn(blur.shape, generator=gen)
        blurry.append(_to_uint8(blur))
        sharp.append(_to_uint8(region[:, half : half + ch, half : half + cw]))
        kernels.append(kernel)
    return blurry, sharp, kernels


class _TensorPairs(Dataset):
    """In-memory uint8 pairs -> float [0, 1] (blurry, sharp); training adds the same random
    flips and 90-degree rotation to both."""

    def __init__(self, blurry: list, sharp: list, augment: bool) -> None:
        self.blurry, self.sharp, self.augment = blurry, sharp, augment

    def __len__(self) -> int:
        return len(self.blurry)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from .paired import geometric_augment

        b, s = self.blurry[i].float() / 255, self.sharp[i].float() / 255
        return geometric_augment(b, s) if self.augment else (b, s)


class BlurredPhotosDataModule(TrainValDataModule):
    """scikit-image photos blurred by generated camera-shake kernels + noise (module docstring).

    Training: `num_train` random `crop_size` crops of the `TRAIN_PHOTOS` (each with its own
    kernel), flipped/rotated at random. Validation: `num_val` crops (`val_size`; None = the
    whole photo) of the held-out `VAL_PHOTOS` with kernels of another seed. Photos are
    downscaled to `photo_short_side` first. Deterministic for a given `seed`.
    """

    def __init__(
        self,
        crop_size: int = 64,
        val_size: int | None = 128,
        num_train: int = 256,
        num_val: int = 4,
        batch_size: int = 8,
        val_batch_size: int = 1,
        photo_short_side: int = 256,
        kernel_size: int = 11,
        blur_length: tuple[float, float] = (3.0, 9.0),
        noise_std: float = 0.02,
        augment: bool = True,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        # explicit dict: frame inspection would pick up the arguments of a datamodule that
        # builds this one as its embedded fallback
        hparams = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        if crop_size % 8 or (val_size is not None and val_size % 8):
            raise ConfigError(
                f"crop_size={crop_size} and val_size={val_size} must be multiples of 8 "
                "(the restoration models downsample 3 times)"
            )
        if num_train < 1 or num_val < 1:
            raise ConfigError(f"num_train and num_val must be >= 1, got {num_train}, {num_val}")
        self.save_hyperparameters(hparams)

    def describe(self) -> str:
        return "scikit-image photos with generated camera shake"

    def eval_batch_size(self) -> int:
        return self.hparams.val_batch_size

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        hp = self.hparams
        common = dict(
            short_side=hp.photo_short_side,
            kernel_size=hp.kernel_size,
            length_range=tuple(hp.blur_length),
            noise_std=hp.noise_std,
        )
        tb, ts, self.train_kernels = synthesize_pairs(
            TRAIN_PHOTOS, hp.num_train, hp.crop_size, hp.seed, **common
        )
        vb, vs, self.val_kernels = synthesize_pairs(
            VAL_PHOTOS, hp.num_val, hp.val_size, hp.seed + 10_000, **common
        )
        self.train_set = _TensorPairs(tb, ts, augment=hp.augment)
        self.val_set = _TensorPairs(vb, vs, augment=False)
