"""Restoration training: the DeepRFTv2 loss against hand computations, camera-shake kernels, the
embedded blurred photos, the paired layouts (GoPro, folders, RealBlur lists) and their errors,
progressive patches, and the demo config through train.py (fit, figures, resume)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.signal import convolve2d

from zoo.data import BlurredPhotosDataModule, ConfigError, PairedDataModule
from zoo.data.blur_synth import (
    TRAIN_PHOTOS,
    VAL_PHOTOS,
    blur_valid,
    camera_shake_trajectory,
    load_photo,
    random_motion_kernel,
    rasterize_trajectory,
)
from zoo.data.paired import PairedImages, ProgressivePatches
from zoo.losses import DeepRFTv2Loss, fourier_l1
from zoo.tasks.cli import ZooCLI

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "restoration" / "deeprftv2_demo.yaml"
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
]
# the demo's narrow model on the smallest images it takes (3 downsamplings: 16 -> 2)
TINY = [
    "--data.embedded_crop_size=16",
    "--data.embedded_val_size=16",
    "--data.embedded_num_train=4",
    "--data.embedded_num_val=2",
    "--data.patch_sizes=[16]",
    "--data.patch_milestones=[]",
    "--data.batch_size=2",
]


# ------------------------------------------------------------------------------------------------
# the loss, by hand


def _half_spectrum(x: np.ndarray) -> np.ndarray:
    """Unnormalised 2-D DFT over the last two axes, columns 0..W//2 (what rfft2 keeps), by the
    definition sum_hw x[h, w] exp(-2 pi i (u h / H + v w / W))."""
    h, w = x.shape[-2:]
    fh = np.exp(-2j * np.pi * np.outer(np.arange(h), np.arange(h)) / h)
    fw = np.exp(-2j * np.pi * np.outer(np.arange(w), np.arange(w // 2 + 1)) / w)
    return fh @ x @ fw


def _hand_pyramid_down(x: np.ndarray) -> np.ndarray:
    """kornia's pyrdown for even sizes: [1 4 6 4 1]^2 / 256 blur on a reflect-padded image, then
    bilinear halving with align_corners=False, which samples at 2i + 0.5: the mean of each 2x2
    block."""
    k = np.array([1, 4, 6, 4, 1], float)
    k2 = np.outer(k, k) / 256
    pad = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(2, 2), (2, 2)], mode="reflect")
    h, w = x.shape[-2:]
    blurred = sum(k2[i, j] * pad[..., i : i + h, j : j + w] for i in range(5) for j in range(5))
    return 0.25 * (
        blurred[..., ::2, ::2]
        + blurred[..., 1::2, ::2]
        + blurred[..., ::2, 1::2]
        + blurred[..., 1::2, 1::2]
    )


def test_fourier_l1_is_the_mean_modulus_of_the_unnormalised_half_spectrum_difference() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 6, 10, generator=g), torch.rand(2, 3, 6, 10, generator=g)
    hand = np.abs(_half_spectrum(pred.double().numpy()) - _half_spectrum(target.double().numpy()))
    assert hand.shape == (2, 3, 6, 6)
    assert float(fourier_l1(pred, target)) == pytest.approx(hand.mean(), rel=1e-5)


def test_deeprftv2_loss_is_l1_plus_fourier_averaged_over_heads_plus_mid_terms() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 16, 12, generator=g)
    full = ("spatial1", "fke1", "spatial2", "fke2")
    heads = {k: torch.rand(2, 3, 16, 12, generator=g) for k in full}
    heads |= {f"{k}_mid": torch.rand(2, 3, 8, 6, generator=g) for k in full}
    loss = DeepRFTv2Loss()(heads, target)

    t = target.double().numpy()
    t_mid = _hand_pyramid_down(t)

    def terms(preds, tgt):
        l1 = np.mean([np.abs(p - tgt).mean() for p in preds])
        ff = np.mean([np.abs(_half_spectrum(p) - _half_spectrum(tgt)).mean() for p in preds])
        return l1 + 0.01 * ff

    hand = terms([heads[k].double().numpy() for k in full], t) + terms(
        [heads[f"{k}_mid"].double().numpy() for k in full], t_mid
    )
    assert float(loss) == pytest.approx(hand, rel=1e-5)
    # weights: mid off, Fourier off
    hand_l1 = np.mean([np.abs(heads[k].double().numpy() - t).mean() for k in full])
    only_l1 = DeepRFTv2Loss(fft_weight=0.0, mid_weight=0.0)(heads, target)
    assert float(only_l1) == pytest.approx(hand_l1, rel=1e-6)


def test_deeprftv2_loss_on_a_plain_output_and_bad_shapes() -> None:
    pred, target = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    # L1 = 1; the spectra differ only at DC, by 64, over 8 x 5 bins
    assert float(DeepRFTv2Loss()(pred, target)) == pytest.approx(1 + 0.01 * 64 / 40)
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\) does not match"):
        DeepRFTv2Loss()(torch.zeros(1, 3, 4, 4), target)


# ------------------------------------------------------------------------------------------------
# camera-shake kernels and the embedded photos


@pytest.mark.parametrize("seed", range(6))
def test_motion_kernels_are_normalised_non_negative_and_spread(seed: int) -> None:
    k = random_motion_kernel(np.random.default_rng(seed), size=15, length_range=(6.0, 12.0))
    assert k.shape == (15, 15) and k.dtype == np.float32
    assert (k >= 0).all() and k.sum() == pytest.approx(1.0, abs=1e-6)
    assert (k > 0).sum() >= 6  # a path, not a point
    assert k.max() < 0.5


def test_trajectory_without_anxiety_is_a_straight_path_of_the_given_length() -> None:
    path = camera_shake_trajectory(np.random.default_rng(0), length=8.0, anxiety=0.0)
    steps = np.abs(np.diff(path))
    assert steps.sum() == pytest.approx(8.0) and np.ptp(steps) < 1e-9
    assert abs(path[-1] - path[0]) == pytest.approx(8.0)  # never turns
    k = rasterize_trajectory(path, 15)
    ys, xs = np.nonzero(k)
    extent = max(np.ptp(ys), np.ptp(xs))
    assert 8 <= extent <= 10  # 8 px long, one more pixel for the bilinear footprint
    # a path longer than the support is scaled into it
    long = rasterize_trajectory(camera_shake_trajectory(np.random.default_rng(0), 40.0), 9)
    assert long.sum() == pytest.approx(1.0, abs=1e-6) and long[0].sum() + long[-1].sum() < 1
    with pytest.raises(ValueError, match="odd"):
        rasterize_trajectory(path, 8)


def test_blur_valid_equals_scipy_convolution() -> None:
    rng = np.random.default_rng(0)
    image, kernel = rng.random((3, 12, 10)), random_motion_kernel(rng, 5)
    ours = blur_valid(torch.from_numpy(image).float(), torch.from_numpy(kernel)).numpy()
    for c in range(3):
        np.testing.assert_allclose(ours[c], convolve2d(image[c], kernel, mode="valid"), atol=1e-5)


def test_embedded_photos_are_deterministic_real_and_hold_out_whole_photos() -> None:
    assert not set(TRAIN_PHOTOS) & set(VAL_PHOTOS)
    dm = BlurredPhotosDataModule(crop_size=32, val_size=32, num_train=6, num_val=2, augment=False)
    dm.setup()
    again = BlurredPhotosDataModule(
        crop_size=32, val_size=32, num_train=6, num_val=2, augment=False
    )
    again.setup()
    for a, b in zip(dm.val_set, again.val_set, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    blurry, sharp = dm.val_set[0]
    assert blurry.shape == sharp.shape == (3, 32, 32)
    assert 0 <= float(blurry.min()) and float(blurry.max()) <= 1
    # the sharp crop is a piece of a held-out photo (8-bit), not of a training photo
    photo = (load_photo(VAL_PHOTOS[0], 256) * 255).round()
    target = (sharp * 255).round()
    corner = (photo == target[:, :1, :1]).all(dim=0).nonzero().tolist()
    assert any(torch.equal(photo[:, y : y + 32, x : x + 32], target) for y, x in corner)
    psnr = 10 * math.log10(1 / float(((blurry - sharp) ** 2).mean()))
    assert 15 < psnr < 45  # blurred and noisy, not destroyed
    other = BlurredPhotosDataModule(crop_size=32, val_size=32, num_train=6, num_val=2, seed=1)
    other.setup()
    assert not torch.equal(other.val_set[0][0], blurry)


# ------------------------------------------------------------------------------------------------
# paired layouts


def _png(path: Path, h: int = 16, w: int = 24, value: int | None = None, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = (
        np.full((h, w, 3), value, np.uint8)
        if value is not None
        else rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    )
    Image.fromarray(pixels).save(path)


def test_gopro_layout_pairs_blur_with_sharp_per_scene(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for scene in ("GOPR0001_11_00", "GOPR0002_11_01"):
            for i in range(2):
                _png(tmp_path / split / scene / "blur" / f"{i:06d}.png", value=10 + i)
                _png(tmp_path / split / scene / "sharp" / f"{i:06d}.png", value=200 + i)
    dm = PairedDataModule(str(tmp_path), patch_sizes=[8], batch_size=2, num_workers=0)
    assert len(dm.train_pairs) == 4 and len(dm.val_pairs) == 4
    assert all(b.parent.name == "blur" and s.parent.name == "sharp" for b, s in dm.train_pairs)
    assert all(b.name == s.name and b.parent.parent == s.parent.parent for b, s in dm.val_pairs)
    dm.setup("fit")
    blur, sharp = next(iter(dm.train_dataloader()))
    assert blur.shape == sharp.shape == (2, 3, 8, 8)
    assert (blur < 0.1).all() and (sharp > 0.7).all()  # blur is blur, sharp is sharp
    vb, vs = dm.val_set[0]
    assert vb.shape == (3, 16, 24)  # whole images for validation


def test_realblur_list_reads_sharp_then_blur_relative_to_root(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "scene1" / "gt" / f"gt_{i}.png", value=250)
        _png(tmp_path / "scene1" / "blur" / f"blur_{i}.png", value=5)
    lines = [f"scene1/gt/gt_{i}.png scene1/blur/blur_{i}.png 0\n" for i in range(3)]
    (tmp_path / "train_list.txt").write_text("".join(lines[:2]))
    (tmp_path / "test_list.txt").write_text(lines[2] + "\n")
    dm = PairedDataModule(
        str(tmp_path), "train_list.txt", "test_list.txt", patch_sizes=[8], num_workers=0
    )
    assert [b.name for b, _ in dm.train_pairs] == ["blur_0.png", "blur_1.png"]
    dm.setup("fit")
    blur, sharp = dm.val_set[0]
    assert float(blur.max()) < 0.1 and float(sharp.min()) > 0.9
    (tmp_path / "bad_list.txt").write_text("scene1/gt/gt_0.png scene1/blur/missing.png\n")
    with pytest.raises(ConfigError, match=r"missing\.png \(line 1\)"):
        PairedDataModule(str(tmp_path), "bad_list.txt", "test_list.txt", num_workers=0)


def test_folder_pair_holds_out_whole_images_and_names_bad_files(tmp_path: Path) -> None:
    for i in range(5):
        _png(tmp_path / "blur" / f"{i}.png", seed=i)
        _png(tmp_path / "sharp" / f"{i}.png", seed=10 + i)
    dm = PairedDataModule(str(tmp_path), patch_sizes=[8], val_fraction=0.4, num_workers=0)
    train = {b.name for b, _ in dm.train_pairs}
    val = {b.name for b, _ in dm.val_pairs}
    assert len(train) == 3 and len(val) == 2 and not train & val
    # unmatched: named on both sides
    _png(tmp_path / "blur" / "extra_blur.png")
    _png(tmp_path / "sharp" / "extra_sharp.png")
    with pytest.raises(ConfigError) as err:
        PairedDataModule(str(tmp_path), num_workers=0)
    assert "extra_blur.png" in str(err.value) and "extra_sharp.png" in str(err.value)
    (tmp_path / "blur" / "extra_blur.png").unlink()
    (tmp_path / "sharp" / "extra_sharp.png").unlink()
    # a pair of different sizes: both files named when it is read
    _png(tmp_path / "sharp" / "0.png", h=20)
    pair = (tmp_path / "blur" / "0.png", tmp_path / "sharp" / "0.png")
    with pytest.raises(
        ConfigError, match=r"0\.png' is \(16, 24\) but its sharp image .*\(20, 24\)"
    ):
        PairedImages([pair], train=False, crop=None)[0]


def test_missing_root_names_the_path_and_the_layouts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        PairedDataModule(str(tmp_path / "GoPro"), num_workers=0)
    assert str(tmp_path / "GoPro") in str(err.value)
    assert "<root>/train/<scene>/blur" in str(err.value) and "sharp_path blur_path" in str(
        err.value
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="none of the paired layouts"):
        PairedDataModule(str(tmp_path / "empty"), num_workers=0)


def test_progressive_patches_follow_the_schedule() -> None:
    sched = ProgressivePatches([256, 512], [450_000], [2, 1])
    assert sched.load_size == (512, 512)
    assert sched.at(0) == ((256, 256), 2) and sched.at(449_999) == ((256, 256), 2)
    assert sched.at(450_000) == ((512, 512), 1)
    blur, sharp = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    small = ProgressivePatches([8, 16], [3], [2, 1])
    b, s = small.crop(blur, sharp, step=0)
    assert b.shape == (2, 3, 8, 8)
    # the same window of both images
    y, x = next(
        (y, x)
        for y in range(9)
        for x in range(9)
        if torch.equal(blur[..., y : y + 8, x : x + 8], b)
    )
    assert torch.equal(sharp[..., y : y + 8, x : x + 8], s)
    b, s = small.crop(blur, sharp, step=3)
    assert b.shape == (1, 3, 16, 16)
    assert ProgressivePatches([512, [776, 680]], [50_000]).load_size == (776, 680)
    with pytest.raises(ConfigError, match="need 1 milestones"):
        ProgressivePatches([256, 512], [])
    with pytest.raises(ConfigError, match="multiples of 8"):
        ProgressivePatches([250])


# ------------------------------------------------------------------------------------------------
# the demo config through train.py


def _fit(tmp_path: Path, *args: str) -> ZooCLI:
    return ZooCLI(
        args=[
            "fit",
            f"--config={DEMO}",
            *QUIET,
            *TINY,
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=-1",
            *args,
        ]
    )


def test_demo_fits_two_steps_writes_figures_and_resumes(tmp_path: Path, capsys) -> None:
    cli = _fit(tmp_path, "--trainer.max_steps=2", "--trainer.val_check_interval=2")
    assert cli.trainer.global_step == 2
    # the recipe: AdamW, betas (0.9, 0.9), weight decay on every parameter, norm clipping 0.01
    opt = cli.trainer.optimizers[0]
    assert type(opt).__name__ == "AdamW" and opt.defaults["betas"] == (0.9, 0.9)
    assert all(group["weight_decay"] == 1e-3 for group in opt.param_groups)
    assert cli.trainer.gradient_clip_val == 0.01
    assert cli.trainer.gradient_clip_algorithm == "norm"
    metrics = cli.trainer.callback_metrics
    assert {"val/psnr", "val/ssim", "val/psnr_blurry", "val/psnr_gain"} <= set(metrics)
    assert float(metrics["val/psnr_gain"]) == pytest.approx(
        float(metrics["val/psnr"]) - float(metrics["val/psnr_blurry"]), abs=1e-4
    )
    assert (tmp_path / "restoration" / "step_0000002.png").stat().st_size > 0
    assert (tmp_path / "kernels" / "step_0000002.png").stat().st_size > 0
    assert (tmp_path / "metrics.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "held-out images (2): restored PSNR" in out and "vs blurry PSNR" in out
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    resumed = _fit(
        tmp_path, "--trainer.max_steps=3", "--ckpt_path=last", "--trainer.limit_val_batches=0"
    )
    assert resumed.trainer.global_step == 3


@pytest.mark.slow
def test_demo_deblurs_held_out_photos_by_at_least_one_db(tmp_path: Path, capsys) -> None:
    cli = ZooCLI(args=["fit", f"--config={DEMO}", *QUIET, f"--trainer.default_root_dir={tmp_path}"])
    scores = cli.model.last_scores
    print(scores)
    assert scores["psnr"] - scores["psnr_blurry"] >= 1.0, scores
    assert "held-out images" in capsys.readouterr().out
