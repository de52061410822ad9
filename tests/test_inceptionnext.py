"""InceptionNeXt: equality with timm's own port, official parameter counts, checkpoint loading.

timm's `inception_next_*` has the official state_dict layout and reproduces the official outputs,
so it is the independent reference here: the same state_dict goes into both models.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401  (registers the family)
from zoo.models.inceptionnext import InceptionDWConv2d, InceptionNeXt

VARIANTS = {  # ours -> (timm's model, parameter count published by the official code)
    "inceptionnext_atto": ("inception_next_atto", 4_156_520),
    "inceptionnext_tiny": ("inception_next_tiny", 28_055_680),
    "inceptionnext_small": ("inception_next_small", 49_374_016),
    "inceptionnext_base": ("inception_next_base", 86_672_136),
    "inceptionnext_base_384": ("inception_next_base", 86_672_136),
}
FAST = {"inceptionnext_atto", "inceptionnext_tiny"}


def _variant_params(names):
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _randomized(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The model's state_dict with random BN statistics/affines, biases and layer scales.

    Fresh models have zero biases, identity BN and gamma=1e-6 (blocks ~ identity), which would
    hide a wrong branch order or a missing residual.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            out[k] = v
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("running_mean", "bias")):
            out[k] = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith("gamma") or (v.dim() == 1 and k.endswith("weight")):
            out[k] = torch.randn(v.shape, generator=g) * 0.5 + (0 if k.endswith("gamma") else 1)
        else:
            out[k] = v
    return out


def _pair(name: str, **kwargs):
    ref = timm.create_model(VARIANTS[name][0], **kwargs).eval()
    state = _randomized(ref)
    ref.load_state_dict(state)
    ours = timm.create_model(name, **kwargs).eval()
    ours.load_state_dict(state)
    return ours, ref


@pytest.mark.parametrize("name", _variant_params(VARIANTS))
def test_logits_and_stage_features_match_timm_inception_next(name):
    ours, ref = _pair(name)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
        feats = ours.forward_intermediates(x, intermediates_only=True)
        ref_feats = ref.forward_intermediates(x, intermediates_only=True)
    assert len(feats) == 4
    for i, (a, b) in enumerate(zip(feats, ref_feats, strict=True)):
        assert a.shape == (
            2,
            ours.feature_info[i]["num_chs"],
            64 // 2 ** (i + 2),
            64 // 2 ** (i + 2),
        )
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parameter_counts_equal_official(name):
    model = timm.create_model(name, device="meta")
    assert sum(p.numel() for p in model.parameters()) == VARIANTS[name][1]
    ref = timm.create_model(VARIANTS[name][0], device="meta")
    assert list(model.state_dict()) == list(ref.state_dict())  # official key list and order


def test_mixer_split_order_identity_first_against_conv2d():
    torch.manual_seed(0)
    mixer = InceptionDWConv2d(40, band_kernel_size=9, branch_ratio=0.25)
    x = torch.randn(2, 40, 12, 12)
    gc, ident = 10, 10
    expected = torch.cat(
        [
            x[:, :ident],
            F.conv2d(
                x[:, 10:20], mixer.dwconv_hw.weight, mixer.dwconv_hw.bias, padding=1, groups=gc
            ),
            F.conv2d(
                x[:, 20:30], mixer.dwconv_w.weight, mixer.dwconv_w.bias, padding=(0, 4), groups=gc
            ),
            F.conv2d(
                x[:, 30:40], mixer.dwconv_h.weight, mixer.dwconv_h.bias, padding=(4, 0), groups=gc
            ),
        ],
        dim=1,
    )
    assert mixer.dwconv_w.weight.shape == (gc, 1, 1, 9)  # 1xk mixes along width
    assert mixer.dwconv_h.weight.shape == (gc, 1, 9, 1)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), expected)
        torch.testing.assert_close(mixer(x.contiguous(memory_format=torch.channels_last)), expected)


@pytest.mark.parametrize("dim, band, ratio", [(40, 9, 0.25), (96, 11, 0.125)])
def test_mixer_output_stays_channels_last(dim, band, ratio):
    # A mixed-layout concat falls back to a slow path; the band convs' outputs must stay NHWC
    # although their inputs are strided channel slices.
    mixer = InceptionDWConv2d(dim, band_kernel_size=band, branch_ratio=ratio)
    x = torch.randn(2, dim, 14, 14).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert mixer(x).is_contiguous(memory_format=torch.channels_last)


def test_channels_last_and_nchw_give_the_same_outputs():
    a = timm.create_model("inceptionnext_atto", channels_last=True).eval()
    b = timm.create_model("inceptionnext_atto", channels_last=False).eval()
    state = _randomized(a)
    a.load_state_dict(state)
    b.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)
        assert a.forward_features(x).is_contiguous(memory_format=torch.channels_last)
        assert b.forward_features(x).is_contiguous()


def test_reparameterize_folds_every_bn_and_layer_scale_with_equal_outputs():
    model = timm.create_model("inceptionnext_atto").eval()
    model.load_state_dict(_randomized(model))
    deploy = zoo.reparameterize(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deploy.modules())
    assert not any(k.endswith("gamma") for k in deploy.state_dict())
    built = timm.create_model("inceptionnext_atto", deploy=True).eval()
    built.load_state_dict(deploy.state_dict())  # strict: the deploy layouts agree
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(deploy(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(built(x), expected, atol=1e-5, rtol=1e-5)


def test_train_mode_gradients_match_timm():
    ours, ref = _pair("inceptionnext_atto", num_classes=7, drop_path_rate=0.0)
    ours.train()
    ref.train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours(x).square().sum().backward()
    ref(x).square().sum().backward()
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, ref_grads[name].grad, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("wrapper", ["raw", "model", "state_dict", "ddp_prefix"])
def test_official_checkpoint_loads_via_pretrained_cfg_overlay(tmp_path, wrapper):
    ref = timm.create_model("inception_next_atto").eval()
    state = _randomized(ref)
    ref.load_state_dict(state)
    if wrapper == "ddp_prefix":
        saved = {"module." + k: v for k, v in state.items()}
    else:
        saved = state if wrapper == "raw" else {wrapper: state, "epoch": 3}
    path = tmp_path / "inceptionnext_atto.pth"
    torch.save(saved, path)
    model = timm.create_model(
        "inceptionnext_atto", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-5)


def test_checkpoint_loads_into_new_classifier_and_features_only(tmp_path):
    ref = timm.create_model("inception_next_atto").eval()
    state = _randomized(ref)
    ref.load_state_dict(state)
    path = tmp_path / "atto.pth"
    torch.save(state, path)
    overlay = dict(file=str(path))
    model = timm.create_model(
        "inceptionnext_atto", pretrained=True, pretrained_cfg_overlay=overlay, num_classes=5
    ).eval()
    torch.testing.assert_close(model.head.fc1.weight, state["head.fc1.weight"])
    assert model.head.fc2.weight.shape == (5, 960)
    feats = timm.create_model(
        "inceptionnext_atto", pretrained=True, pretrained_cfg_overlay=overlay, features_only=True
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(
            feats(x), ref.forward_intermediates(x, intermediates_only=True), strict=True
        ):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    state = timm.create_model("inception_next_atto").state_dict()
    state["stages.9.blocks.0.gamma"] = state.pop("stages.0.blocks.0.gamma")
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(
        ValueError, match=r"stages\.0\.blocks\.0\.gamma.*stages\.9\.blocks\.0\.gamma"
    ):
        timm.create_model(
            "inceptionnext_atto", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
        )


def test_backbone_only_checkpoint_keeps_initial_head_with_warning(tmp_path):
    state = _randomized(timm.create_model("inception_next_atto"))
    path = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("head.")}, path)
    with pytest.warns(UserWarning, match="head"):
        model = timm.create_model(
            "inceptionnext_atto", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
        )
    torch.testing.assert_close(model.stem[0].weight, state["stem.0.weight"])


def test_features_only_out_indices_and_feature_info():
    model = timm.create_model("inceptionnext_atto", features_only=True, out_indices=(1, 3)).eval()
    assert model.feature_info.channels() == [80, 320]
    assert model.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 96, 128))
    assert [tuple(o.shape) for o in outs] == [(1, 80, 12, 16), (1, 320, 3, 4)]


def test_forward_intermediates_prune_and_stop_early_agree():
    model = timm.create_model("inceptionnext_atto").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, feats = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        early = model.forward_intermediates(
            x, indices=[1], stop_early=True, intermediates_only=True
        )
        torch.testing.assert_close(early[0], feats[1])
        kept = model.prune_intermediate_layers(indices=[1])
        assert kept == [1] and len(model.stages) == 2 and model.num_features == 80
        torch.testing.assert_close(model.forward_features(x), feats[1])
        assert model(x).shape == (1, 80)  # pooled features, no classifier


def test_head_api_reset_classifier_and_pre_logits():
    model = timm.create_model("inceptionnext_atto").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 960)
        assert model.head_hidden_size == 960 and model.get_classifier() is model.head.fc2
        model.reset_classifier(10)
        assert model(x).shape == (2, 10)
        model.reset_classifier(0, "")
        assert model(x).shape == (2, 960, 2, 2)  # head MLP applied per position, unpooled
        model.reset_classifier(3, "avg", reset_other=True)
        assert model(x).shape == (2, 3) and model.head_hidden_size == 320
    with pytest.raises(ValueError, match="catavgmax"):
        timm.create_model("inceptionnext_atto").reset_classifier(10, "catavgmax")


def test_grad_checkpointing_and_optimizer_hooks():
    model = timm.create_model("inceptionnext_atto").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    model.set_grad_checkpointing(True)
    assert all(s.grad_checkpointing for s in model.stages)
    torch.testing.assert_close(model(x), expected)
    groups = model.group_matcher()
    assert set(groups) == {"stem", "blocks"}
    assert model.no_weight_decay() <= set(dict(model.named_parameters()))


def test_device_dtype_kwargs_and_unknown_kwarg():
    meta = timm.create_model("inceptionnext_tiny", device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    double = timm.create_model("inceptionnext_atto", dtype=torch.float64).eval()
    assert all(p.dtype == torch.float64 for p in double.parameters())
    assert double(torch.randn(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(TypeError):
        timm.create_model("inceptionnext_atto", not_a_model_arg=1)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((3, 64, 64), r"\(N, 3, H, W\)"),
        ((1, 4, 64, 64), r"inceptionnext_atto expects 3 input channels \(in_chans=3\), got 4"),
        ((1, 3, 16, 64), "32"),
    ],
)
def test_bad_input_raises_value_error(shape, match):
    model = timm.create_model("inceptionnext_atto").eval()
    with pytest.raises(ValueError, match=match):
        model(torch.randn(*shape))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(branch_ratio=0.5), "branch_ratio"),
        (dict(band_kernel_size=10), "band_kernel_size"),
        (dict(dims=(40, 80, 160)), "one entry per stage"),
        (dict(global_pool="median"), "global_pool"),
    ],
)
def test_bad_config_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InceptionNeXt(**{"depths": (1, 1, 1, 1), "dims": (40, 80, 160, 320), **kwargs})
