"""DeepRFTv2 (zoo/models/deeprftv2.py): structure facts of the official configuration and the
model's parts against independent references (written-out formulas, explicit convolutions,
the plain column for the reversible one, transposed / flipped inputs for the scan order).

Equality with the official implementation itself (all eight images within 1e-4 at widths 8
and 48) is measured against the official code, which is not part of this repository: see the
README's DeepRFTv2 section.
"""

import copy
import itertools
import re

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401  (registers deeprftv2_b)
from zoo.errors import CheckpointError
from zoo.layers.nafnet import NAFEVSBlock
from zoo.layers.reversible import ReversibleColumn
from zoo.layers.tiling import ramp, tile_starts
from zoo.models.deeprftv2 import DeepRFTv2, pad_to_multiple, pyramid_down

HEADS = ["spatial1", "fke1", "spatial2", "fke2"]
HEADS += [f"{h}_mid" for h in HEADS]


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights with non-zero layer scales (fresh models hide mistakes: beta = gamma = 0,
    lamb_g = 0), alphas away from the clamp."""
    gen = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        if re.fullmatch(r"alpha\d", leaf):
            t.copy_(0.5 + 0.2 * torch.randn(t.shape, generator=gen))
        elif leaf == "A_logs":
            continue
        elif t.dim() > 1:
            t.copy_(torch.randn(t.shape, generator=gen) / t[0].numel() ** 0.5)
        elif leaf == "weight":
            t.copy_(1 + 0.2 * torch.randn(t.shape, generator=gen))
        else:
            t.copy_(0.2 * torch.randn(t.shape, generator=gen))
    return model


def tiny(width: int = 8, **kwargs) -> DeepRFTv2:
    torch.manual_seed(0)
    return randomize_(timm.create_model("deeprftv2_b", width=width, **kwargs)).eval()


def image(shape=(1, 3, 32, 32), seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------------------------------
# Structure (the spec's measured facts of the official GoPro configuration)


@pytest.mark.parametrize("width, params", [(48, 30_117_560), (16, 3_626_232)])
def test_parameter_count_matches_the_official_configuration(width: int, params: int) -> None:
    model = timm.create_model("deeprftv2_b", width=width, device="meta")
    assert sum(p.numel() for p in model.parameters()) == params
    default = timm.create_model("deeprftv2_b", device="meta")
    same = timm.create_model(
        "deeprftv2_b", dims=[width] * 3, dims_ker=[width] * 3, num_ker=width, device="meta"
    )
    assert sum(p.numel() for p in same.parameters()) == params
    assert sum(p.numel() for p in default.parameters()) == 30_117_560


def test_official_keyword_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="num_ker=16: the official FKE estimates dims"):
        DeepRFTv2(dims=(8, 8, 8), num_ker=16, device="meta")
    with pytest.raises(ValueError, match="width or dims"):
        DeepRFTv2(width=8, dims=(8, 8, 8), device="meta")
    with pytest.raises(TypeError):
        timm.create_model("deeprftv2_b", widht=8, device="meta")


def test_forward_heads_names_order_shapes_and_forward_is_the_last_fke_image() -> None:
    model = tiny()
    x = image((2, 3, 32, 48))
    with torch.no_grad():
        heads = model.forward_heads(x)
        out = model(x)
    assert list(heads) == HEADS
    for name, img in heads.items():
        expected = (2, 3, 16, 24) if name.endswith("_mid") else (2, 3, 32, 48)
        assert img.shape == expected, name
    torch.testing.assert_close(out, heads["fke2"], rtol=0, atol=0)
    # features and head: model(x) = x + head(F_dk)
    with torch.no_grad():
        rebuilt = x + model.forward_head(model.forward_features(x))
    torch.testing.assert_close(rebuilt, out, rtol=1e-6, atol=1e-6)


def test_train_and_eval_give_the_same_images() -> None:  # no BatchNorm, no dropout
    model = tiny()
    x = image()
    with torch.no_grad():
        ref = model(x)
        model.train()
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# The pyramid: kornia's pyrdown, written out from its definition


def _pyrdown_numpy(x: np.ndarray) -> np.ndarray:
    """5x5 binomial / 256 with reflect border (no edge repeat), then the mean of each 2x2 block
    (bilinear at exactly half size, align_corners=False, samples at 2i + 0.5)."""
    k = np.array([1, 4, 6, 4, 1], dtype=np.float64)
    k2 = np.outer(k, k) / 256.0
    h, w = x.shape
    blurred = np.zeros((h, w))
    for i, j in itertools.product(range(h), range(w)):
        for u, v in itertools.product(range(-2, 3), range(-2, 3)):
            ii, jj = i + u, j + v
            ii = -ii if ii < 0 else (2 * (h - 1) - ii if ii >= h else ii)
            jj = -jj if jj < 0 else (2 * (w - 1) - jj if jj >= w else jj)
            blurred[i, j] += k2[u + 2, v + 2] * x[ii, jj]
    return blurred.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def test_pyramid_down_is_the_binomial_blur_then_the_half_size_average() -> None:
    x = image((1, 1, 8, 12), dtype=torch.float64)
    want = _pyrdown_numpy(x[0, 0].numpy())
    got = pyramid_down(x)[0, 0].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_pyramid_down_equals_kornia() -> None:
    kornia = pytest.importorskip("kornia", reason="kornia is in the dev extra")
    x = image((2, 3, 16, 24))
    torch.testing.assert_close(pyramid_down(x), kornia.geometry.transform.pyrdown(x))
    odd = image((1, 3, 15, 21))
    torch.testing.assert_close(pyramid_down(odd), kornia.geometry.transform.pyrdown(odd))


# --------------------------------------------------------------------------------------------
# The Fourier Kernel Estimator: the spectral product is a circular convolution


def test_fke_product_is_a_circular_convolution_with_the_estimated_kernels() -> None:
    model = tiny(width=4)
    fke = model.kernel_estimator[1]  # the second stage's FKE (with its column fusions)
    gen = torch.Generator().manual_seed(3)
    d = torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64)
    blurry = torch.randn(1, 3, 8, 8, generator=gen, dtype=torch.float64)
    states = [torch.randn(1, 4, 8, 5, generator=gen, dtype=torch.float64) for _ in range(4)]
    fke = copy.deepcopy(fke).double()
    with torch.no_grad():
        img, feature, _, otf = fke(d, blurry, states)
        # independent: k = irfft2(K) per channel; y[c] = sum_{u,v} k[c,u,v] * b[c](. - (u, v))
        b = fke.feature_extract.intro_deconv(d)
        k = torch.fft.irfft2(otf)
        conv = torch.zeros_like(b)
        for u, v in itertools.product(range(8), range(8)):
            conv += k[:, :, u, v, None, None] * torch.roll(b, shifts=(u, v), dims=(-2, -1))
        want_feature = fke.deblur_feature1(torch.cat([conv, d], dim=1))
        want_img = fke.end_feature1(want_feature) + blurry
    torch.testing.assert_close(feature, want_feature, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(img, want_img, rtol=1e-10, atol=1e-10)


def test_estimated_kernels_are_the_final_otfs_centred_and_normalised() -> None:
    model = tiny()
    x = image((1, 3, 32, 32))
    raw = model.estimated_kernels(x, normalize=False)
    shown = model.estimated_kernels(x)
    assert raw.shape == shown.shape == (1, 8, 65, 65)
    assert shown.min() >= 0 and shown.max() <= 1
    for c in range(8):
        k = raw[0, c]
        np.testing.assert_allclose(
            shown[0, c].numpy(), ((k - k.min()) / (k.max() - k.min())).numpy(), atol=1e-6
        )
    # independent: irfft2 of the final OTFs, origin moved to (16, 16) of the 32x32 map and
    # placed at the centre (32, 32) of the 65x65 image, zeros elsewhere
    otfs = []
    hook = model.kernel_estimator[-1].end_ker1.register_forward_hook(
        lambda m, a, out: otfs.append(out)
    )
    with torch.no_grad():
        model(x)
    hook.remove()
    psf = torch.fft.irfft2(otfs[0])
    want = torch.zeros(1, 8, 65, 65)
    for i, j in itertools.product(range(32), range(32)):
        want[..., 32 + ((i + 16) % 32) - 16, 32 + ((j + 16) % 32) - 16] = psf[..., i, j]
    torch.testing.assert_close(raw, want, rtol=0, atol=1e-7)


# --------------------------------------------------------------------------------------------
# The scan order: NAFEVSBlock transforms its input and does not undo it


@pytest.mark.parametrize("idx, transform", [(0, "transpose"), (1, "flip"), (2, "transpose")])
def test_nafevs_block_scans_the_transposed_or_flipped_map(idx: int, transform: str) -> None:
    torch.manual_seed(0)
    block = randomize_(NAFEVSBlock(4, idx=idx)).eval()
    plain = copy.deepcopy(block)
    plain.idx = -1  # no transform
    x = image((1, 4, 8, 12))
    moved = x.transpose(-2, -1) if transform == "transpose" else torch.flip(x, dims=(-2, -1))
    with torch.no_grad():
        got = block(x)
        torch.testing.assert_close(got, plain(moved.contiguous()), rtol=0, atol=0)
        # transforming after the block instead gives another result: the scan is directional
        after = plain(x)
        after = after.transpose(-2, -1) if transform == "transpose" else after.flip((-2, -1))
        assert not torch.allclose(got, after, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Reversible columns: memory, not math


def _columns(model: DeepRFTv2) -> list[ReversibleColumn]:
    return [m for m in model.modules() if isinstance(m, ReversibleColumn)]


def test_official_save_memory_pattern_is_the_default() -> None:
    model = timm.create_model("deeprftv2_b", device="meta")
    assert [c.save_memory for c in model.subnets_max] == [False, True]
    assert [c.save_memory for c in model.subdenets_max] == [False, True]
    assert [c.save_memory for c in model.subnets_mid] == [False, True]
    assert [e.subnets_ker.save_memory for e in model.kernel_estimator] == [True, True]
    assert [e.subnets_ker.save_memory for e in model.mid_kernel_estimator] == [True, True]


def test_reversible_columns_give_the_plain_gradients_in_float64() -> None:
    plain = tiny(width=4).double().train()
    for column in _columns(plain):
        column.save_memory = False
    reversible = copy.deepcopy(plain)
    for column in _columns(reversible):
        column.save_memory = True
    x = image((1, 3, 16, 16), dtype=torch.float64)
    grads = []
    for model in (plain, reversible):
        xi = x.clone().requires_grad_()
        heads = model.forward_heads(xi)
        loss = sum(
            (h * torch.linspace(-1, 1, h.numel(), dtype=h.dtype).view_as(h)).sum()
            for h in heads.values()
        )
        loss.backward()
        grads.append({"x": xi.grad, **{n: p.grad for n, p in model.named_parameters()}})
        grads[-1]["heads"] = heads
    for name, want in grads[0].items():
        got = grads[1][name]
        if name == "heads":
            for h in want:
                torch.testing.assert_close(got[h], want[h], rtol=0, atol=0)
            continue
        assert got is not None and want is not None, name
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10, msg=name)


def test_alpha_clamp_happens_in_place_and_keeps_sign_and_zero() -> None:
    model = tiny(width=4)
    alpha = model.subnets_max[1].alpha0
    with torch.no_grad():
        alpha[0, :4, 0, 0] = torch.tensor([1e-5, -1e-5, 0.0, 0.3])
    with torch.no_grad():
        model(image((1, 3, 16, 16)))
    torch.testing.assert_close(alpha[0, :4, 0, 0], torch.tensor([1e-3, -1e-3, 0.0, 0.3]))


# --------------------------------------------------------------------------------------------
# Checkpoints in the official (basicsr) layout


def _official_file(model: DeepRFTv2, path, wrapper: str = "params") -> str:
    sd = {f"global_model.{k}": v for k, v in model.state_dict().items()}
    torch.save({wrapper: sd}, path)
    return str(path)


@pytest.mark.parametrize("wrapper", ["params", "params_ema"])
def test_basicsr_checkpoint_loads_through_pretrained_cfg_overlay(wrapper: str, tmp_path) -> None:
    model = tiny(width=4)
    path = _official_file(model, tmp_path / "net_g_latest.pth", wrapper)
    loaded = timm.create_model(
        "deeprftv2_b", width=4, pretrained=True, pretrained_cfg_overlay=dict(file=path)
    ).eval()
    x = image((1, 3, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_checkpoint_of_another_width_names_the_shapes(tmp_path) -> None:
    path = _official_file(tiny(width=4), tmp_path / "w4.pth")
    with pytest.raises(CheckpointError, match=r"tensors have another shape.*width="):
        timm.create_model(
            "deeprftv2_b",
            width=8,
            pretrained=True,
            pretrained_cfg_overlay=dict(file=path),
            device="meta",
        )


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("size, message", [
    ((30, 32), "height 30 (nearest valid: 24 or 32)"),
    ((32, 4), "width 4 (nearest valid: 8)"),
])  # fmt: skip
def test_sizes_not_divisible_by_8_name_the_nearest_valid_sizes(size, message) -> None:
    model = timm.create_model("deeprftv2_b", width=8, device="meta")
    with pytest.raises(ValueError, match=re.escape(message)):
        model(torch.empty(1, 3, *size, device="meta"))


def test_grayscale_image_into_the_rgb_model_names_model_and_in_chans() -> None:
    model = timm.create_model("deeprftv2_b", width=8, device="meta")
    with pytest.raises(
        ValueError, match=re.escape("deeprftv2_b expects 3 input channels (in_chans=3), got 1")
    ):
        model.forward_heads(torch.empty(1, 1, 32, 32, device="meta"))


def test_pad_to_multiple_reflect_pads_and_crops_back() -> None:
    x = image((1, 3, 30, 37))
    padded, crop = pad_to_multiple(x, 8)
    assert padded.shape[-2:] == (32, 40)
    torch.testing.assert_close(padded, F.pad(x, (0, 3, 0, 2), mode="reflect"))
    torch.testing.assert_close(crop(padded), x)
    assert crop(pyramid_down(padded)).shape[-2:] == (15, 19)
    same, crop_same = pad_to_multiple(image((1, 3, 16, 16)))
    assert same.shape[-2:] == (16, 16) and crop_same(same).shape[-2:] == (16, 16)
    with pytest.raises(ValueError, match="too small"):
        pad_to_multiple(image((1, 3, 3, 3)), 8)


# --------------------------------------------------------------------------------------------
# Tiled inference


def test_tile_covering_the_image_gives_forward_exactly() -> None:
    model = tiny()
    x = image((1, 3, 32, 48))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_tiled(x, tile=512), model(x), rtol=0, atol=0)
        torch.testing.assert_close(
            model.forward_tiled(x, tile=48, overlap=16), model(x), rtol=0, atol=0
        )


def test_tiles_are_blended_to_a_partition_of_unity(monkeypatch) -> None:
    model = tiny()
    x = image((1, 3, 40, 56))
    seen = []

    def pointwise(x0, x1, taps=None):  # a "network" whose output is known everywhere
        seen.append((tuple(x0.shape), tuple(x1.shape)))
        return {"full": [2.0 * x0 + 1.0]}

    monkeypatch.setattr(model, "_stages", pointwise)
    out = model.forward_tiled(x, tile=24, overlap=8)
    torch.testing.assert_close(out, 2.0 * x + 1.0, rtol=1e-6, atol=1e-6)
    assert len(seen) == len(tile_starts(40, 24, 8)) * len(tile_starts(56, 24, 8))
    assert all(s == ((1, 3, 24, 24), (1, 3, 12, 12)) for s in seen)


@pytest.mark.parametrize(
    "size, tile, overlap", [(40, 24, 8), (56, 24, 8), (64, 32, 16), (24, 8, 0)]
)
def test_ramps_sum_to_one_and_reach_every_pixel(size: int, tile: int, overlap: int) -> None:
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts[-1] == size - tile
    total = torch.zeros(size, dtype=torch.float64)
    for s in starts:
        w = ramp(size, s, starts, tile, torch.float64, "cpu")
        assert (w > 0).all()
        total[s : s + tile] += w
    # complementary ramps: the weights of overlapping tiles add up to 1 at every pixel
    torch.testing.assert_close(total, torch.ones(size, dtype=torch.float64))


def test_forward_tiled_checks_batch_and_tile_sizes() -> None:
    model = timm.create_model("deeprftv2_b", width=8, device="meta")
    with pytest.raises(ValueError, match="batch 1"):
        model.forward_tiled(torch.empty(2, 3, 32, 32, device="meta"))
    with pytest.raises(ValueError, match="multiples of 8"):
        model.forward_tiled(torch.empty(1, 3, 32, 32, device="meta"), tile=20, overlap=4)
