"""MK-UNet family (zoo/models/mkunet.py) and the medical-segmentation losses (zoo/losses/medseg.py).

References: the parameter counts, shuffle groups, channel-attention widths and state_dict size
measured on the official code (SLDGroup/MK-UNet), the official key names, and hand
computations for the losses.
"""

import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from skimage.draw import disk, ellipse

import zoo  # noqa: F401  (registers the models)
from zoo.losses import DiceBCELoss, StructureLoss, dice_bce_loss, structure_loss
from zoo.models.mkunet import MKUNet, MultiKernelDepthwiseConv, MultiKernelInvertedResidual

OFFICIAL_PARAMS = {
    "mk_unet_t": 27_384,
    "mk_unet_s": 93_050,
    "mk_unet_b": 315_566,
    "mk_unet_m": 1_150_166,
    "mk_unet_l": 3_758_118,
}

# hidden width of CA1..CA5 (ratios 16,16,16,8,4 clamped to the width), measured on the official code
CA_HIDDEN = {
    "mk_unet_t": [2, 1, 1, 1, 1],
    "mk_unet_s": [5, 3, 2, 2, 2],
    "mk_unet_b": [10, 6, 4, 4, 4],
    "mk_unet_m": [20, 12, 8, 8, 8],
    "mk_unet_l": [32, 24, 16, 16, 16],
}


def _randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and BN statistics, so that every layer matters in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            t.copy_(torch.randn(t.shape, generator=gen) * 0.3)
            if name.endswith("running_var"):
                t.abs_().add_(0.5)
    return model


# ---------------------------------------------------------------------------------------------
# structure


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_matches_official(name):
    model = timm.create_model(name, num_classes=1, device="meta")
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize("name", sorted(CA_HIDDEN))
def test_channel_attention_ratio_clamped_per_stage(name):
    model = timm.create_model(name, device="meta")
    assert [ca.fc1.out_channels for ca in model.channel_attn] == CA_HIDDEN[name]


def test_channel_shuffle_groups_are_gcd_of_expanded_and_output_width():
    # mk_unet_b blocks (C_in -> 2 C_in -> C_out) and their official shuffle groups
    model = timm.create_model("mk_unet_b", device="meta")
    enc = [stage[0].shuffle.groups for stage in model.encoder]
    dec = [block.shuffle.groups for block in model.decoder]
    assert enc == [2, 32, 64, 32, 32]
    assert dec == [32, 64, 32, 16, 16]
    # only the last decoder block (16 -> 16) has an identity shortcut
    assert [isinstance(b.conv1x1, torch.nn.Identity) for b in model.decoder] == [0, 0, 0, 0, 1]


def test_one_spatial_attention_module_shared_by_all_stages():
    model = timm.create_model("mk_unet_t")
    calls = []
    model.spatial_attn.register_forward_hook(lambda *_: calls.append(1))
    model.eval()(torch.randn(1, 3, 32, 32))
    assert len(calls) == 5
    assert sum(p.numel() for p in model.spatial_attn.parameters()) == 2 * 7 * 7


def test_mkdc_is_sum_of_depthwise_bn_relu6_branches():
    torch.manual_seed(0)
    mkdc = _randomize_(MultiKernelDepthwiseConv(6, (1, 3, 5))).eval()
    x = torch.randn(2, 6, 9, 7)
    expected = 0
    for branch in mkdc.dwconvs:
        conv, bn = branch[0], branch[1]
        y = F.conv2d(x, conv.weight, padding=conv.kernel_size[0] // 2, groups=6)
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)
        expected = expected + y.clamp(0, 6)
    torch.testing.assert_close(mkdc(x), expected, rtol=1e-5, atol=1e-5)


def test_state_dict_size_matches_official():
    # 412 entries (350 floating tensors + 62 num_batches_tracked) in the official base model
    sd = timm.create_model("mk_unet_b", device="meta").state_dict()
    assert len(sd) == 412
    assert sum(t.is_floating_point() for t in sd.values()) == 350


# ---------------------------------------------------------------------------------------------
# forward / heads


def test_forward_equals_finest_head_of_forward_heads():
    model = _randomize_(timm.create_model("mk_unet_t", num_classes=2)).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        heads = model.forward_heads(x)
    assert sorted(heads) == ["p1", "p2", "p3", "p4"]
    for head in heads.values():
        assert head.shape == (2, 2, 64, 96)
    assert torch.equal(out, heads["p4"])
    assert not torch.allclose(heads["p1"], heads["p4"])


def test_forward_skips_the_coarse_heads():
    model = timm.create_model("mk_unet_t").eval()
    calls = []
    for head in model.aux_heads:
        head.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(1, 3, 32, 32)
    model(x)
    assert calls == []
    model.forward_heads(x)
    assert len(calls) == 3


def test_coarse_heads_are_bilinear_upsamplings_from_1_8_1_4_1_2():
    model = _randomize_(timm.create_model("mk_unet_t")).eval()
    raw = []
    for head in model.aux_heads:
        head.register_forward_hook(lambda mod, args, out: raw.append(out))
    with torch.no_grad():
        heads = model.forward_heads(torch.randn(1, 3, 64, 96))
    for (name, factor), low in zip((("p1", 8), ("p2", 4), ("p3", 2)), raw, strict=True):
        assert low.shape == (1, 1, 64 // factor, 96 // factor), name
        up = F.interpolate(low, scale_factor=factor, mode="bilinear", align_corners=False)
        assert torch.equal(heads[name], up), name


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)


def _reference_heads(model, x):
    """The wiring of the official mkunet_network.py written out with F calls (eval mode)."""
    skips = []
    for stage in model.encoder:  # the stage's MKIR blocks, then a 2x max-pool: the skip
        for block in stage:
            if isinstance(block, MultiKernelInvertedResidual):
                x = block(x)
        x = F.max_pool2d(x, 2, 2)
        skips.append(x)
    out, heads = skips.pop(), {}
    for i in range(5):
        ca = model.channel_attn[i]  # a = sigmoid(W2 relu(W1 avg) + W2 relu(W1 max))
        logit = sum(
            F.conv2d(F.relu(F.conv2d(pooled, ca.fc1.weight)), ca.fc2.weight)
            for pooled in (out.mean((2, 3), keepdim=True), out.amax((2, 3), keepdim=True))
        )
        out = out * torch.sigmoid(logit)
        sa = model.spatial_attn.conv.weight  # the same 7x7 conv at every stage
        pooled = torch.cat([out.mean(1, keepdim=True), out.amax(1, keepdim=True)], 1)
        out = out * torch.sigmoid(F.conv2d(pooled, sa, padding=3))
        out = model.decoder[i](out)
        out = F.relu(F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False))
        if 1 <= i <= 3:
            head = model.aux_heads[i - 1]
            heads[f"p{i}"] = F.interpolate(
                F.conv2d(out, head.weight, head.bias), scale_factor=2 ** (4 - i), mode="bilinear"
            )
        if i < 4:
            gate, skip = model.skip_gate[i], skips[3 - i]
            wg, wx, psi = gate.W_g[0], gate.W_x[0], gate.psi[0]
            g1 = _bn(F.conv2d(out, wg.weight, wg.bias, padding=1, groups=wg.groups), gate.W_g[1])
            x1 = _bn(F.conv2d(skip, wx.weight, wx.bias, padding=1, groups=wx.groups), gate.W_x[1])
            a = torch.sigmoid(_bn(F.conv2d(F.relu(g1 + x1), psi.weight, psi.bias), gate.psi[1]))
            out = out + skip * a
    heads["p4"] = F.conv2d(out, model.head.weight, model.head.bias)
    return heads


@pytest.mark.parametrize("name", ["mk_unet_t", "mk_unet_s"])
def test_heads_match_decoder_wiring_written_out(name):
    model = _randomize_(timm.create_model(name, num_classes=2)).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        heads, expected = model.forward_heads(x), _reference_heads(model, x)
    assert sorted(heads) == sorted(expected)
    for key in expected:
        torch.testing.assert_close(heads[key], expected[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(32, 32), (64, 96), (96, 64), (160, 128)])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_output_shape_is_input_resolution(size, num_classes):
    model = timm.create_model("mk_unet_t", num_classes=num_classes).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, num_classes, *size)


def test_forward_heads_trains_every_parameter():
    model = timm.create_model("mk_unet_t").train()
    heads = model.forward_heads(torch.randn(2, 3, 32, 32))
    sum(h.sum() for h in heads.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_grayscale_input_is_repeated_like_official_and_in_chans_1_works():
    model = _randomize_(timm.create_model("mk_unet_t")).eval()
    gray = torch.randn(1, 1, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(gray), model(gray.repeat(1, 3, 1, 1)))
    model1 = timm.create_model("mk_unet_t", in_chans=1).eval()
    assert model1(gray).shape == (1, 1, 32, 64)


def test_fx_feature_extraction_matches_eager():
    # timm's fx tracer: the input checks are a leaf, encoder stages can be tapped
    from timm.models import create_feature_extractor

    model = _randomize_(timm.create_model("mk_unet_t")).eval()
    extractor = create_feature_extractor(model, return_nodes=["encoder.4", "head"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = extractor(x)
        assert torch.equal(out["head"], model(x))
    assert out["encoder.4"].shape == (1, 32, 2, 2)  # the stage ends with its max-pool: 1/32


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "size, message",
    [
        ((80, 64), "height 80 (nearest valid: 64 or 96)"),
        ((64, 100), "width 100 (nearest valid: 96 or 128)"),
        ((16, 16), "height 16 (nearest valid: 32), width 16 (nearest valid: 32)"),
    ],
)
def test_size_not_divisible_by_32_raises_with_nearest_sizes(size, message):
    model = timm.create_model("mk_unet_t")
    with pytest.raises(ValueError, match=r"divisible by 32") as info:
        model(torch.randn(1, 3, *size))
    assert message in str(info.value)


@pytest.mark.parametrize("in_chans, channels", [(3, 4), (3, 2), (1, 3)])
def test_channel_mismatch_raises_naming_in_chans(in_chans, channels):
    model = timm.create_model("mk_unet_t", in_chans=in_chans)
    expected = (
        rf"mk_unet_t expects {in_chans} input channels \(in_chans={in_chans}.*\), got {channels}"
    )
    with pytest.raises(ValueError, match=expected):
        model(torch.randn(1, channels, 32, 32))


def test_features_only_gives_the_pooled_encoder_maps():
    # spec 1.4: the skips t1..t4 (C1..C4 at 1/2..1/16) and the bottleneck (C5 at 1/32)
    model = timm.create_model("mk_unet_t", features_only=True).eval()
    assert model.feature_info.channels() == [4, 8, 16, 24, 32]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (4, 32, 48),
        (8, 16, 24),
        (16, 8, 12),
        (24, 4, 6),
        (32, 2, 3),
    ]
    # the getter prunes the decoder (it needs every encoder map): only the encoder is left
    assert {n.split(".")[1] for n, _ in model.named_parameters()} == {"encoder"}


def test_unknown_kwarg_raises_type_error():
    with pytest.raises(TypeError):
        timm.create_model("mk_unet_t", not_a_model_arg=1)


def test_bad_stage_config_raises():
    with pytest.raises(ValueError, match="channels must have 5 entries"):
        MKUNet(channels=(8, 16, 32, 64))
    with pytest.raises(ValueError, match=r"depths=\(1, 0, 1, 1, 1\)"):
        MKUNet(depths=(1, 0, 1, 1, 1))


# ---------------------------------------------------------------------------------------------
# timm registration and checkpoints


def test_registered_with_timm_metadata():
    assert timm.list_models("mk_unet_*") == [f"mk_unet_{v}" for v in "blmst"]
    model = timm.create_model("mk_unet_b", device="meta", dtype=torch.bfloat16)
    assert all(p.device.type == "meta" and p.dtype == torch.bfloat16 for p in model.parameters())
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 256, 256)
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["license"] == "bsd-3-clause"
    assert cfg["paper_ids"] == "arXiv:2509.18493"
    assert cfg["num_classes"] == 1


def _to_official_keys(state_dict):
    """Our keys -> the official mkunet_network.py names (written from the official layout)."""
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        top = parts[0]
        if top == "encoder":
            key = f"encoder{int(parts[1]) + 1}." + ".".join(parts[2:])
        elif top == "decoder":
            key = f"decoder{int(parts[1]) + 1}.0." + ".".join(parts[2:])
        elif top == "channel_attn":
            key = f"CA{int(parts[1]) + 1}." + ".".join(parts[2:])
        elif top == "skip_gate":
            key = f"AG{int(parts[1]) + 1}." + ".".join(parts[2:])
        elif top == "spatial_attn":
            key = "SA." + ".".join(parts[1:])
        elif top == "aux_heads":
            key = f"out{int(parts[1]) + 1}." + ".".join(parts[2:])
        elif top == "head":
            key = "out4." + ".".join(parts[1:])
        out[key] = value
    return out


def test_official_checkpoint_loads_through_pretrained_cfg_overlay(tmp_path):
    source = _randomize_(timm.create_model("mk_unet_t")).eval()
    official = _to_official_keys(source.state_dict())
    assert "encoder1.0.multi_scale_dwconv.dwconvs.2.0.weight" in official
    assert (
        "AG4.W_g.0.weight" in official and "out4.bias" in official and "SA.conv.weight" in official
    )
    path = tmp_path / "mkunet_t_official.pth"
    torch.save({"model": official}, path)
    model = timm.create_model(
        "mk_unet_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_checkpoint_with_wrong_keys_names_them(tmp_path):
    official = _to_official_keys(timm.create_model("mk_unet_t").state_dict())
    official.pop("CA3.fc1.weight")
    official["AG9.psi.0.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(official, path)
    with pytest.raises(ValueError, match=r"channel_attn\.2\.fc1\.weight.*skip_gate\.8\.psi"):
        timm.create_model("mk_unet_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_checkpoint_loads_with_new_heads_but_rejects_other_in_chans(tmp_path):
    source = _randomize_(timm.create_model("mk_unet_t")).eval()
    path = tmp_path / "official.pth"
    torch.save(_to_official_keys(source.state_dict()), path)
    overlay = dict(file=str(path))
    model = timm.create_model(
        "mk_unet_t", pretrained=True, num_classes=3, pretrained_cfg_overlay=overlay
    ).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), source.forward_features(x))
    assert model(x).shape == (1, 3, 32, 32)
    # the first block is 2 x in_chans wide: a 3-channel checkpoint cannot become 1-channel
    with pytest.raises(ValueError, match=r"in_chans=1.*encoder\.0\.0\.pconv1\.0\.weight"):
        timm.create_model("mk_unet_t", pretrained=True, in_chans=1, pretrained_cfg_overlay=overlay)


def test_reset_classifier_replaces_all_heads():
    model = timm.create_model("mk_unet_t").eval()
    model.reset_classifier(4)
    heads = model.forward_heads(torch.randn(1, 3, 32, 32))
    assert all(h.shape == (1, 4, 32, 32) for h in heads.values())


# ---------------------------------------------------------------------------------------------
# losses


def test_structure_loss_empty_mask_zero_logits_by_hand():
    # weight 1 everywhere; BCE = ln 2; IoU term = 1 - 1 / (0.5 * 16 + 1)
    loss = structure_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    assert loss.item() == pytest.approx(math.log(2) + 1 - 1 / 9, rel=1e-6)


def test_structure_loss_full_mask_counts_zero_padding_by_hand():
    # a 2x2 all-ones mask: every 31x31 window (zero padded) holds the 4 ones -> mean 4/961
    w = 1 + 5 * (1 - 4 / 961)
    inter, union = 0.5 * 4 * w, 1.5 * 4 * w
    expected = math.log(2) + 1 - (inter + 1) / (union - inter + 1)
    loss = structure_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_structure_loss_matches_numpy_loops():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (2, 1, 6, 5))
    mask = (rng.random((2, 1, 6, 5)) > 0.6).astype(np.float64)
    expected = []
    for n in range(2):
        m, z = mask[n, 0], logits[n, 0]
        weight = np.empty_like(m)
        for i in range(6):
            for j in range(5):
                window = m[max(i - 15, 0) : i + 16, max(j - 15, 0) : j + 16]
                weight[i, j] = 1 + 5 * abs(window.sum() / 31**2 - m[i, j])
        p = 1 / (1 + np.exp(-z))
        bce = -(m * np.log(p) + (1 - m) * np.log(1 - p))
        wbce = (weight * bce).sum() / weight.sum()
        inter = (p * m * weight).sum()
        union = ((p + m) * weight).sum()
        expected.append(wbce + 1 - (inter + 1) / (union - inter + 1))
    loss = structure_loss(torch.from_numpy(logits), torch.from_numpy(mask))
    assert loss.item() == pytest.approx(float(np.mean(expected)), rel=1e-9)


def test_dice_bce_loss_by_hand():
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    # p = 0.5: BCE = ln 2; Dice = (2 * 1 + 1) / (2 + 2 + 1) = 0.6
    assert dice_bce_loss(torch.zeros(1, 1, 2, 2), mask).item() == pytest.approx(
        math.log(2) + 0.4, rel=1e-6
    )
    # confident and correct: both terms vanish
    confident = (mask * 2 - 1) * 30
    assert dice_bce_loss(confident, mask).item() == pytest.approx(0.0, abs=1e-6)
    # weights and smoothing: 0.5 * ln 2 + 2 * (1 - 2 / 4)
    loss = dice_bce_loss(torch.zeros(1, 1, 2, 2), mask, bce_weight=0.5, dice_weight=2, smooth=0)
    assert loss.item() == pytest.approx(0.5 * math.log(2) + 1.0, rel=1e-6)


def test_deep_supervision_weights_heads_and_accepts_tensor():
    torch.manual_seed(0)
    heads = {f"p{i}": torch.randn(2, 1, 8, 8) for i in range(1, 5)}
    target = (torch.rand(2, 8, 8) > 0.5).float()  # (N, H, W) is accepted
    weights = {"p1": 0.1, "p2": 0.2, "p3": 0.3, "p4": 1.0}
    expected = sum(w * structure_loss(heads[k], target.unsqueeze(1)) for k, w in weights.items())
    torch.testing.assert_close(StructureLoss(weights)(heads, target), expected)
    assert StructureLoss()(heads["p4"], target) == structure_loss(heads["p4"], target)
    unweighted = sum(dice_bce_loss(h, target) for h in heads.values())
    torch.testing.assert_close(DiceBCELoss()(heads, target), unweighted)


def test_deep_supervision_rejects_mismatched_heads_and_shapes():
    heads = {"p1": torch.zeros(1, 1, 4, 4), "p4": torch.zeros(1, 1, 4, 4)}
    with pytest.raises(ValueError, match=r"heads \['p1', 'p4'\]"):
        StructureLoss({"p4": 1.0})(heads, torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="does not match logits shape"):
        DiceBCELoss()(heads, torch.zeros(1, 1, 8, 8))
    with pytest.raises(TypeError, match="list"):
        DiceBCELoss()([heads["p1"]], torch.zeros(1, 1, 4, 4))


# ---------------------------------------------------------------------------------------------
# training


def _shapes_dataset(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disks and ellipses, brighter than a noisy background (noise std 0.5 per channel)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            r, c = rng.integers(10, size - 10, 2)
            if rng.random() < 0.5:
                rr, cc = disk((r, c), rng.integers(4, 10), shape=(size, size))
            else:
                radii = rng.integers(3, 9), rng.integers(5, 12)
                rr, cc = ellipse(r, c, *radii, shape=(size, size), rotation=rng.random() * np.pi)
            masks[i, 0, rr, cc] = 1
    images = masks + rng.normal(0, 0.5, (n, 3, size, size)).astype(np.float32)
    return torch.from_numpy(images), torch.from_numpy(masks)


def test_overfits_synthetic_masks_to_dice_above_0_9():
    # the released recipe's loss (structure loss on the full-resolution head), AdamW
    images, masks = _shapes_dataset(6, 64, seed=0)
    torch.manual_seed(0)
    model = timm.create_model("mk_unet_t").train()
    loss_fn = StructureLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(150):
        loss = loss_fn(model(images), masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = (model(images) > 0).float()
    dice = 2 * (pred * masks).sum((1, 2, 3)) / (pred.sum((1, 2, 3)) + masks.sum((1, 2, 3)))
    assert dice.mean().item() > 0.9, dice
