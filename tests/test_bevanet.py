"""BEVANet family (zoo/models/bevanet.py) and its training loss (zoo/losses/bevanet.py).

References: parameter counts of the official implementation (maomao0819/BEVANet, built with each
released config), official key names, hand computations, and OpenCV's Canny output
(tests/data/bevanet_cv2_edges.npz; how it was made is stored in the file's `note`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

import zoo  # noqa: F401  (registers the families)
from ops import DepthwiseConv2d
from zoo.losses import BEVANetLoss, boundary_targets
from zoo.losses.bevanet import ohem_cross_entropy, weighted_bce_with_logits
from zoo.models.bevanet import BEVANet, EVABlock, checkpoint_filter_fn, load_imagenet_backbone

DATA = Path(__file__).parent / "data"

# Official BEVANet_SEG parameter counts at 19 classes (seg_augment True / False).
OFFICIAL_PARAMS = {
    ("bevanet_s", True): 15_186_004,
    ("bevanet_sw", True): 57_643_220,
    ("bevanet_b", True): 58_823_892,
    ("bevanet_l", True): 60_203_732,
    ("bevanet_s", False): 15_090_784,
    ("bevanet_sw", False): 57_418_624,
    ("bevanet_b", False): 58_599_296,
    ("bevanet_l", False): 59_828_992,
}

TINY = dict(planes=8, depths=(1, 1, 1), ppm_planes=16, head_planes=16)


def _tiny(num_classes: int = 19, **kwargs) -> BEVANet:
    return timm.create_model("bevanet_s", num_classes=num_classes, **dict(TINY, **kwargs))


@pytest.fixture(scope="module")
def bevanet_s_eval() -> BEVANet:
    torch.manual_seed(0)
    return timm.create_model("bevanet_s").eval()


# ------------------------------------------------------------------------------------------------
# construction


@pytest.mark.parametrize(("name", "aux_heads"), sorted(OFFICIAL_PARAMS))
def test_param_count_matches_official_implementation(name: str, aux_heads: bool) -> None:
    model = timm.create_model(name, aux_heads=aux_heads, device="meta")
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[(name, aux_heads)]


def test_every_depthwise_conv_goes_through_ops() -> None:
    model = timm.create_model("bevanet_s", device="meta")
    grouped = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.groups > 1 and not isinstance(m, DepthwiseConv2d)
    ]
    assert grouped == []
    # SDLSKA: dense 5x5, then two parallel dilated strips of 11 (k=35) / 7 (k=23)
    sdlska = model.layer4_semantic_1.attn.spatial_gating_unit
    assert sdlska.DW_conv.kernel_size == (5, 5)
    assert (sdlska.DW_D_conv_h.kernel_size, sdlska.DW_D_conv_h.dilation) == ((1, 11), (3, 3))
    assert (sdlska.DW_D_conv_v.kernel_size, sdlska.DW_D_conv_v.dilation) == ((11, 1), (3, 3))
    detail = model.layer4_detail.attn.spatial_gating_unit
    assert (detail.DW_D_conv_h.kernel_size, detail.DW_D_conv_h.dilation) == ((1, 7), (3, 3))


def test_sdlska_strips_are_parallel_on_the_dense_output() -> None:
    torch.manual_seed(0)
    block = EVABlock(32, kernel_size=35).eval()
    sdlska = block.attn.spatial_gating_unit
    x = torch.randn(2, 32, 20, 24)
    seen = {}
    for name in ("DW_conv", "DW_D_conv_h", "DW_D_conv_v"):
        getattr(sdlska, name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, (i[0], o))
        )
    with torch.no_grad():
        sdlska(x)
    dense_out = seen["DW_conv"][1]
    assert torch.equal(seen["DW_D_conv_h"][0], dense_out)
    assert torch.equal(seen["DW_D_conv_v"][0], dense_out)


def test_cks_channel_weights_are_independent_sigmoids_of_relu() -> None:
    torch.manual_seed(0)
    cks = EVABlock(32).attn.spatial_gating_unit.FS_kernel.eval()
    with torch.no_grad():
        for m in cks.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
        a = [torch.randn(2, 32, 6, 6) for _ in range(3)]
        z = cks.fc_reduce(cks.avg_pool(a[0] + a[1] + a[2]))
        w = [
            torch.sigmoid(f(z))
            for f in (cks.fc_expand_small, cks.fc_expand_big_h, cks.fc_expand_big_v)
        ]
        attn = a[0] + a[1] + a[2]
        agg = torch.cat([attn.mean(1, keepdim=True), attn.max(1, keepdim=True).values], 1)
        s = torch.sigmoid(F.conv2d(agg, cks.conv_squeeze.weight, cks.conv_squeeze.bias, padding=3))
        expected = sum(a[b] * w[b] * s[:, b : b + 1] for b in range(3))
        torch.testing.assert_close(cks(*a), expected)
    # after ReLU the sigmoid is in [0.5, 1): the branches are never switched off
    assert all(float(x.min()) >= 0.5 for x in w)


def test_unknown_kwarg_raises_type_error() -> None:
    with pytest.raises(TypeError):
        timm.create_model("bevanet_s", not_a_model_arg=1)


def test_features_only_gives_the_semantic_path_maps_of_the_official_layout() -> None:
    # spec 1.7: layer1 c @ 1/4, layer2 2c @ 1/8 and semantic stages 3/4/5 4c/8c/16c @ 1/16, 1/32,
    # 1/64; the first three are taken after the ReLU the official forward applies
    c = TINY["planes"]
    model = timm.create_model("bevanet_s", features_only=True, **TINY).eval()
    assert model.feature_info.channels() == [c, 2 * c, 4 * c, 8 * c, 16 * c]
    assert model.feature_info.reduction() == [4, 8, 16, 32, 64]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 128, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 16), (16, 8), (8, 4), (4, 2), (2, 1)]
    assert all(f.min() >= 0 for f in feats[:3])
    # the getter prunes what the maps do not need: no detail branch, fusion or heads
    kept = {n.split(".")[1] for n, _ in model.named_parameters()}
    assert not kept & {"layer3_detail", "fuse_sd_4", "spp", "dfm", "head", "seghead_ds"}


def test_meta_device_and_dtype_kwargs_reach_every_parameter() -> None:
    model = timm.create_model("bevanet_s", device="meta", dtype=torch.bfloat16)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_default_cfgs_carry_dataset_metadata() -> None:
    cfg = timm.models.get_pretrained_cfg("bevanet_b.cityscapes").to_dict()
    assert cfg["input_size"] == (3, 1024, 2048)
    assert cfg["num_classes"] == 19
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["license"] == "mit" and "2508.07300" in cfg["paper_ids"]
    assert timm.models.get_pretrained_cfg("bevanet_b.ade20k").num_classes == 150
    assert timm.create_model("bevanet_s.camvid", device="meta").num_classes == 11


# ------------------------------------------------------------------------------------------------
# forward


def test_forward_heads_are_at_one_eighth_and_forward_resizes_seg(bevanet_s_eval) -> None:
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        heads = bevanet_s_eval.forward_heads(x)
        full = bevanet_s_eval(x)
    assert list(heads) == ["aux_seg", "seg", "boundary"]
    assert heads["aux_seg"].shape == (2, 19, 8, 12)
    assert heads["seg"].shape == (2, 19, 8, 12)
    assert heads["boundary"].shape == (2, 1, 8, 12)
    expected = F.interpolate(heads["seg"], size=(64, 96), mode="bilinear", align_corners=True)
    torch.testing.assert_close(full, expected)


def test_inference_model_without_aux_heads_returns_only_seg() -> None:
    model = _tiny(aux_heads=False).eval()
    with torch.no_grad():
        heads = model.forward_heads(torch.randn(1, 3, 32, 48))
    assert list(heads) == ["seg"] and heads["seg"].shape == (1, 19, 4, 6)


@pytest.mark.parametrize("size", [(100, 100), (64, 100), (60, 64)])
def test_input_side_not_multiple_of_8_raises_naming_the_size(size, bevanet_s_eval) -> None:
    h, w = size
    with pytest.raises(ValueError, match=f"{h}x{w}"):
        bevanet_s_eval(torch.randn(1, 3, h, w))


def test_batch_of_one_in_train_mode_raises_clear_error() -> None:
    model = _tiny().train()
    with pytest.raises(ValueError, match="batch size 1 in train mode"):
        model.forward_heads(torch.randn(1, 3, 32, 32))
    model.eval()
    model.forward_heads(torch.randn(1, 3, 32, 32))  # eval mode is fine


def test_reset_classifier_changes_both_class_heads() -> None:
    model = _tiny().eval()
    model.reset_classifier(5)
    with torch.no_grad():
        heads = model.forward_heads(torch.randn(1, 3, 32, 32))
    assert heads["seg"].shape[1] == 5 and heads["aux_seg"].shape[1] == 5
    assert heads["boundary"].shape[1] == 1


def test_every_parameter_gets_a_gradient_from_the_loss() -> None:
    torch.manual_seed(0)
    model = _tiny(num_classes=3).train()
    labels = torch.randint(0, 3, (2, 32, 32))
    loss = BEVANetLoss(num_classes=3, ohem_min_kept=64)(
        model.forward_heads(torch.randn(2, 3, 32, 32)), labels
    )
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


def test_grad_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = _tiny(num_classes=3).train()
    x = torch.randn(2, 3, 32, 32)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        sum(h.square().mean() for h in model.forward_heads(x).values()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    calls = []
    model.layer4_semantic_1.mlp.register_forward_hook(lambda *args: calls.append(1))
    plain = grads()
    assert len(calls) == 1
    model.set_grad_checkpointing(True)
    checkpointed = grads()
    assert len(calls) == 3  # the EVA block ran again during backward: it was checkpointed
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)


# ------------------------------------------------------------------------------------------------
# official checkpoints


def _official_layout(model: BEVANet) -> dict[str, torch.Tensor]:
    """Our state_dict in the official key layout: depthwise convs were `DWConv` wrappers
    (`.dwconv.`), the 1x1 convs of EVA blocks and DLKPPM were `PWConv` wrappers (`.pwconv.`)."""
    wrapped = {}
    pw_scopes = ("layer4_semantic_", "layer5_semantic_", "layer4_detail.", "spp.")
    for name, m in model.named_modules():
        if isinstance(m, DepthwiseConv2d):
            wrapped[name] = name + ".dwconv"
        elif isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and name.startswith(pw_scopes):
            wrapped[name] = name + ".pwconv"
    out = {}
    for key, value in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        out[f"{wrapped.get(module, module)}.{leaf}"] = value.clone()
    return out


def test_official_layout_helper_produces_known_official_keys() -> None:
    keys = set(_official_layout(timm.create_model("bevanet_s", device="meta")))
    for official_key in (  # key names as they appear in the official BEVANet_SEG state_dict
        "layer4_semantic_1.attn.spatial_gating_unit.DW_conv.dwconv.weight",
        "layer4_semantic_1.attn.spatial_gating_unit.FS_kernel.fc_reduce.0.pwconv.weight",
        "layer4_semantic_1.attn.spatial_gating_unit.FS_kernel.fc_reduce.1.dwconv.weight",
        "layer4_semantic_1.attn.spatial_gating_unit.FS_kernel.conv_squeeze.weight",
        "layer4_semantic_1.mlp.dwconv.dwconv.weight",
        "layer5_semantic_2_seg.attn.proj_1.pwconv.bias",
        "spp.scale1.3.pwconv.weight",
        "spp.lska.spatial_gating_unit.DW_D_conv_v.dwconv.weight",
        "spp.layer_scale_lska",
        "norm4_semantic_1.weight",
        "layer5_detail_boundary.0.downsample.0.weight",
        "dfm.out.2.weight",
        "seghead_db.conv2.bias",
    ):
        assert official_key in keys, official_key


@pytest.mark.parametrize("wrap", ["best_pt", "checkpoint_tar", "dataparallel"])
def test_official_checkpoint_loads_through_pretrained_cfg_overlay(wrap, tmp_path) -> None:
    torch.manual_seed(0)
    source = _tiny().eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    official = _official_layout(source)
    # what the official FullModel training wrapper saves (plus its loss's class-weight buffer)
    saved = {"model." + k: v for k, v in official.items()}
    saved["sem_loss.criterion.weight"] = torch.ones(19)
    if wrap == "checkpoint_tar":
        saved = {"epoch": 3, "best_mIoU": 0.5, "state_dict": saved}
    elif wrap == "dataparallel":
        saved = {"module." + k: v for k, v in saved.items()}
    path = tmp_path / "ckpt.pt"
    torch.save(saved, path)
    loaded = timm.create_model(
        "bevanet_s", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **TINY
    ).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected, got = source.forward_heads(x), loaded.forward_heads(x)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)

    # the inference model (no aux heads) takes the same checkpoint and drops the training heads
    inference = timm.create_model(
        "bevanet_s",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path)),
        aux_heads=False,
        **TINY,
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(inference.forward_heads(x)["seg"], expected["seg"])


def test_imagenet_backbone_loads_matching_keys_and_reports_the_rest() -> None:
    torch.manual_seed(0)
    source, target = _tiny(), _tiny()
    seg_only = ("layer5_", "norm5_", "spp.", "dfm.", "head.", "seghead_")
    backbone = {k: v for k, v in _official_layout(source).items() if not k.startswith(seg_only)}
    classification = dict(backbone)
    classification["head.weight"] = torch.randn(1000, 2048)  # the ImageNet linear head
    classification["last_layer.0.weight"] = torch.randn(2048, 128, 1, 1)
    # same name as a model key, other shape: skipped, as the official partial load does
    classification["layer5_detail_boundary.0.conv1.weight"] = torch.randn(3, 3, 1, 1)
    loaded, left = load_imagenet_backbone(target, {"state_dict": classification})
    ours = {k.replace(".dwconv.", ".").replace(".pwconv.", ".") for k in backbone}
    assert set(loaded) == ours
    assert set(left) == set(target.state_dict()) - ours
    assert "layer5_detail_boundary.0.conv1.weight" in left
    for key in ours:
        torch.testing.assert_close(target.state_dict()[key], source.state_dict()[key])


def test_mismatched_checkpoint_names_the_keys() -> None:
    model = _tiny()
    state = _official_layout(model)
    state.pop("head.conv2.weight")
    state["layer9.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"head\.conv2\.weight.*layer9\.weight"):
        checkpoint_filter_fn(state, model)


# ------------------------------------------------------------------------------------------------
# loss


def _two_class_logits(p_true: list[float], labels: list[int]) -> torch.Tensor:
    """(1, 2, 1, n) logits whose softmax gives probability p_true[i] to class labels[i]."""
    logits = torch.zeros(1, 2, 1, len(p_true), dtype=torch.float64)
    for i, (p, y) in enumerate(zip(p_true, labels, strict=True)):
        logits[0, y, 0, i] = math.log(p / (1 - p))
    return logits


def test_ohem_keeps_the_hardest_pixels_by_hand() -> None:
    p_true = [0.95, 0.6, 0.3, 0.8, 0.99]
    labels = torch.tensor([[[0, 1, 0, 1, 255]]])  # the last pixel is ignored
    logits = _two_class_logits(p_true, [0, 1, 0, 1, 0])
    # min_kept=2: threshold = max(0.5, 3rd smallest valid prob 0.8) = 0.8 -> keeps 0.3 and 0.6
    got = ohem_cross_entropy(logits, labels, thresh=0.5, min_kept=2, ignore_index=255)
    assert got.item() == pytest.approx((-math.log(0.3) - math.log(0.6)) / 2, rel=1e-9)
    # the 0.9 threshold dominates a small min_kept: keeps 0.3, 0.6, 0.8 (not 0.95, not ignored)
    got = ohem_cross_entropy(logits, labels, thresh=0.9, min_kept=1, ignore_index=255)
    expected = (-math.log(0.3) - math.log(0.6) - math.log(0.8)) / 3
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_ohem_ignored_pixels_do_not_change_the_loss() -> None:
    labels = torch.tensor([[[0, 1, 0, 255, 255]]])
    a = _two_class_logits([0.7, 0.4, 0.2, 0.5, 0.5], [0, 1, 0, 0, 0])
    b = a.clone()
    b[0, :, 0, 3:] = torch.tensor([[-30.0, 30.0], [30.0, -30.0]], dtype=torch.float64)
    assert ohem_cross_entropy(a, labels, min_kept=1).item() == pytest.approx(
        ohem_cross_entropy(b, labels, min_kept=1).item(), rel=1e-12
    )


def test_ohem_class_weights_scale_each_kept_pixel() -> None:
    labels = torch.tensor([[[0, 1]]])
    logits = _two_class_logits([0.4, 0.2], [0, 1])
    got = ohem_cross_entropy(logits, labels, min_kept=1, weight=torch.tensor([2.0, 0.5]).double())
    assert got.item() == pytest.approx((-2.0 * math.log(0.4) - 0.5 * math.log(0.2)) / 2, rel=1e-9)


def test_weighted_bce_balances_positives_and_negatives_by_hand() -> None:
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]], dtype=torch.float64)
    targets = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)

    def bce(z: float, t: float) -> float:
        p = 1 / (1 + math.exp(-z))
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    # 1 positive, 3 negatives: positives weigh 3/4, negatives 1/4; mean over the 4 pixels
    expected = (0.75 * bce(2.0, 1) + 0.25 * (bce(-1.0, 0) + bce(0.5, 0) + bce(-3.0, 0))) / 4
    assert weighted_bce_with_logits(logits, targets).item() == pytest.approx(expected, rel=1e-9)


def test_boundary_targets_match_opencv_canny_pipeline() -> None:
    data = np.load(DATA / "bevanet_cv2_edges.npz")
    labels = torch.from_numpy(data["labels"].astype(np.int64))
    ours = boundary_targets(labels)
    expected = torch.from_numpy(data["edges"].astype(np.float32))
    assert expected.sum() > 100  # the fixture has real edges
    assert torch.equal(ours, expected)


def test_boundary_targets_of_a_vertical_step_by_hand() -> None:
    labels = torch.zeros(24, 24, dtype=torch.long)
    labels[:, 12:] = 3
    # Canny keeps the left column of the step (col 11: strict > left, >= right); the 6-px border
    # is cleared (rows 6..17 remain); the 4x4 dilation anchored at (2, 2) spreads it to rows
    # 5..19 and columns 10..13
    expected = torch.zeros(24, 24)
    expected[5:20, 10:14] = 1
    assert torch.equal(boundary_targets(labels), expected)


def test_loss_terms_have_the_official_weights_by_hand() -> None:
    torch.manual_seed(0)
    n, c, h, w = 2, 3, 16, 16
    heads = {
        "aux_seg": torch.randn(n, c, h, w, dtype=torch.float64),
        "seg": torch.randn(n, c, h, w, dtype=torch.float64),
        "boundary": torch.randn(n, 1, h, w, dtype=torch.float64) * 3,
    }
    labels = torch.randint(0, c, (n, h, w))
    labels[:, :3] = 255
    edges = (torch.rand(n, h, w) > 0.8).double()
    loss = BEVANetLoss(num_classes=c, ohem_min_kept=50)
    parts = loss.parts(heads, labels, edges)
    # aux: per-pixel CE averaged over ALL pixels, ignored ones counting as 0
    logp = heads["aux_seg"].log_softmax(1)
    valid = labels != 255
    nll = -logp.gather(1, labels.clamp(max=c - 1)[:, None])[:, 0] * valid
    assert parts["aux_ce"].item() == pytest.approx(0.4 * nll.sum().item() / labels.numel())
    kw = dict(thresh=0.9, min_kept=50, ignore_index=255)
    assert parts["seg_ohem"].item() == pytest.approx(
        ohem_cross_entropy(heads["seg"], labels, **kw).item()
    )
    assert parts["boundary_bce"].item() == pytest.approx(
        20 * weighted_bce_with_logits(heads["boundary"], edges).item()
    )
    edge_labels = labels.clone()
    edge_labels[torch.sigmoid(heads["boundary"][:, 0]) <= 0.8] = 255
    assert parts["boundary_seg_ohem"].item() == pytest.approx(
        ohem_cross_entropy(heads["seg"], edge_labels, **kw).item()
    )
    total = sum(parts[k] for k in ("aux_ce", "seg_ohem", "boundary_bce", "boundary_seg_ohem"))
    assert loss(heads, labels, edges).item() == pytest.approx(total.item())


def test_loss_resizes_heads_to_the_labels_with_align_corners() -> None:
    torch.manual_seed(0)
    heads = {
        k: torch.randn(2, 3 if k != "boundary" else 1, 4, 4) for k in ("aux_seg", "seg", "boundary")
    }
    labels = torch.randint(0, 3, (2, 32, 32))
    up = {
        k: F.interpolate(v, size=(32, 32), mode="bilinear", align_corners=True)
        for k, v in heads.items()
    }
    loss = BEVANetLoss(ohem_min_kept=100)
    assert loss(heads, labels).item() == pytest.approx(loss(up, labels).item(), rel=1e-6)


@pytest.mark.parametrize("bad", [3, -1, 254])
def test_loss_rejects_labels_outside_the_classes(bad: int) -> None:
    heads = {
        k: torch.randn(1, 3 if k != "boundary" else 1, 2, 2) for k in ("aux_seg", "seg", "boundary")
    }
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[0, 0, 0] = 255  # the ignore index is fine
    labels[0, 5, 5] = bad
    with pytest.raises(ValueError, match=rf"\[{bad}\] outside \[0, 3\)"):
        BEVANetLoss()(heads, labels)


def test_loss_names_missing_heads() -> None:
    with pytest.raises(ValueError, match="aux_heads=True"):
        BEVANetLoss()({"seg": torch.randn(1, 3, 2, 2)}, torch.zeros(1, 16, 16, dtype=torch.long))


# ------------------------------------------------------------------------------------------------
# training


def test_overfits_a_tiny_synthetic_label_map() -> None:
    torch.manual_seed(0)
    h = w = 64
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 < 144
    label = torch.where(disc, 2, (xx >= 32).long())
    labels = torch.stack([label, label.flip(1), label.T, label.flip(1).T])
    colours = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.5], [0.0, 0.5, -1.0]])
    images = colours[labels].permute(0, 3, 1, 2) + 0.3 * torch.randn(4, 3, h, w)
    model = _tiny(num_classes=3)
    loss_fn = BEVANetLoss(num_classes=3, ohem_min_kept=256)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def miou() -> float:
        model.eval()
        with torch.no_grad():
            pred = model(images).argmax(1)
        model.train()
        inter = torch.stack([((pred == k) & (labels == k)).sum() for k in range(3)])
        union = torch.stack([((pred == k) | (labels == k)).sum() for k in range(3)])
        return (inter / union).mean().item()

    before = miou()
    for _ in range(60):
        loss = loss_fn(model.forward_heads(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = miou()
    # chance (one class everywhere) is ~0.15 mIoU here
    assert after > 0.6, (before, after)
    assert after > before + 0.3, (before, after)


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager() -> None:
    torch.manual_seed(0)
    model = _tiny(num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
