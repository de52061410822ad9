"""UniRepLKNet: parameter counts, re-parameterisation, official checkpoint layout, contract.

References that do not come from zoo/models/unireplknet.py: the parameter counts and key counts
the official code (AILab-CVC/UniRepLKNet, unireplknet.py) gives, its dilated-branch table, its
state-dict key names (rebuilt below by `to_official_layout`), F.conv2d, and the eager model
itself for compiled and checkpointed runs.
"""

import re

import pytest
import timm
import timm.optim
import torch
import torch.nn as nn

import zoo
from ops import DepthwiseConv2d
from zoo.models.unireplknet import DilatedReparamBlock, checkpoint_filter_fn

VARIANTS = ["a", "f", "p", "n", "t", "s", "b", "l", "xl"]

# Official code, num_classes=1000: (training form, deploy form) parameter counts.
OFFICIAL_PARAMS = {
    "a": (4_649_060, 4_437_300),
    "f": (6_489_328, 6_235_216),
    "p": (11_080_520, 10_741_704),
    "n": (18_818_880, 18_318_560),
    "t": (31_693_420, 31_037_980),
    "s": (56_456_704, 55_645_984),
    "b": (99_089_416, 98_008_456),
    "l": (220_076_056, 218_454_616),
    "xl": (388_690_984, 386_529_064),
}

# Official DilatedReparamBlock table: K -> (branch kernel sizes, dilations).
OFFICIAL_BRANCHES = {
    17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7)),
    15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    7: ((5, 3, 3), (1, 2, 3)),
    5: ((3, 3), (1, 2)),
}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, norm affines, layer scales and BN running statistics (well-conditioned)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() > 1:
            p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
        elif name.endswith("gamma"):
            p.copy_(torch.rand(p.shape, generator=gen) * 0.15 + 0.05)
        elif name.endswith("weight"):
            p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
        else:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(torch.rand(b.shape, generator=gen) * 0.6 - 0.3)
        elif name.endswith("running_var"):
            b.copy_(torch.rand(b.shape, generator=gen) * 1.5 + 0.5)
    return model


# --------------------------------------------------------------------------------------------
# Official key layout, rebuilt from the facts of the official code (not from checkpoint_filter_fn)

_BLOCK = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(.+)$")
_BRANCH = re.compile(r"^dwconv\.branches\.(\d+)\.(conv|bn)\.(.+)$")


def to_official_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our state_dict under the key names (and GRN shapes) of the official unireplknet.py."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("stem."):
            key = "downsample_layers.0." + key[len("stem.") :]
        elif m := re.match(r"^stages\.(\d+)\.downsample\.(.+)$", key):
            key = f"downsample_layers.{m[1]}.{m[2]}"
        elif key.startswith("head.norm."):
            key = "norm." + key[len("head.norm.") :]
        elif key.startswith("head.fc."):
            key = "head." + key[len("head.fc.") :]
        elif m := _BLOCK.match(key):
            stage, block, rest = m.groups()
            if b := _BRANCH.match(rest):
                conv = model.stages[int(stage)].blocks[int(block)].dwconv.branches[int(b[1])].conv
                k, r = conv.kernel_size[0], conv.dilation[0]
                rest = f"dwconv.dil_{b[2]}_k{k}_{r}.{b[3]}"
            elif rest.startswith("grn."):
                value = value.reshape(1, 1, 1, -1)  # official GRN params are (1, 1, 1, D)
                rest = {"grn.weight": "act.1.gamma", "grn.bias": "act.1.beta"}[rest]
            else:
                for ours, official in (
                    ("se.fc1.", "se.down."),
                    ("se.fc2.", "se.up."),
                    ("pwconv1.", "pwconv1.1."),
                    ("pwconv2_bn.", "pwconv2.2."),
                    ("pwconv2.", "pwconv2.0."),
                ):
                    if rest.startswith(ours):
                        rest = official + rest[len(ours) :]
                        break
            key = f"stages.{stage}.{block}.{rest}"
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# Parameter counts and structure


@pytest.mark.parametrize("variant", VARIANTS)
def test_param_counts_equal_official_training_and_deploy(variant: str) -> None:
    with torch.device("meta"):
        train = timm.create_model(f"unireplknet_{variant}")
        deploy = timm.create_model(f"unireplknet_{variant}", deploy=True)
    assert (count_params(train), count_params(deploy)) == OFFICIAL_PARAMS[variant]


def test_reparameterize_on_meta_gives_deploy_param_count_for_xl() -> None:
    with torch.device("meta"):
        model = zoo.reparameterize(timm.create_model("unireplknet_xl"))
    assert count_params(model) == OFFICIAL_PARAMS["xl"][1]


@pytest.mark.parametrize("kernel_size", sorted(OFFICIAL_BRANCHES))
def test_dilated_branch_table_is_the_official_one(kernel_size: int) -> None:
    block = DilatedReparamBlock(4, kernel_size)
    got = [(b.conv.kernel_size[0], b.conv.dilation[0]) for b in block.branches]
    assert got == list(zip(*OFFICIAL_BRANCHES[kernel_size], strict=True))
    assert block.lk_origin.bias is None  # bias only in the deploy form


@pytest.mark.parametrize("deploy", [False, True])
def test_every_depthwise_conv_is_the_ops_module(deploy: bool) -> None:
    with torch.device("meta"):
        model = timm.create_model("unireplknet_t", deploy=deploy)
    depthwise = [
        m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1
    ]
    # T: 27 blocks, 15 of them 13x13 (3 + 3 + 9 + 3... minus the 3x3 ones: stages 2 and 4 all,
    # stage 3 every other); each training-form 13x13 block adds 5 dilated branches
    assert len(depthwise) == (27 if deploy else 27 + 15 * 5)
    assert all(isinstance(m, DepthwiseConv2d) for m in depthwise)


def test_block_is_a_single_residual_ffn_with_se_grn_and_bn() -> None:
    block = timm.create_model("unireplknet_a").stages[1].blocks[0]
    assert isinstance(block.norm, nn.BatchNorm2d) and isinstance(block.pwconv2_bn, nn.BatchNorm2d)
    assert block.pwconv2.bias is None and block.dwconv.lk_origin.bias is None
    assert block.se.fc1.out_channels == 80 // 4 and block.pwconv1.out_features == 4 * 80
    assert torch.allclose(block.gamma, torch.full((80,), 1e-6))


# --------------------------------------------------------------------------------------------
# Structural re-parameterisation


@pytest.mark.parametrize("kernel_size", sorted(OFFICIAL_BRANCHES))
def test_dilated_reparam_merge_equals_sum_of_branches(kernel_size: int) -> None:
    block = randomize_(DilatedReparamBlock(6, kernel_size), seed=kernel_size).eval()
    x = torch.randn(2, 6, 21, 23)
    with torch.no_grad():
        # independent reference: every branch as F.conv2d + eval BN
        ref = block.origin_bn(
            nn.functional.conv2d(x, block.lk_origin.weight, None, 1, kernel_size // 2, 1, 6)
        )
        for branch in block.branches:
            c = branch.conv
            y = nn.functional.conv2d(x, c.weight, None, 1, c.padding, c.dilation, 6)
            ref = ref + branch.bn(y)
        block.reparameterize()
        merged = block(x)
    assert len(block.branches) == 0 and isinstance(block.origin_bn, nn.Identity)
    assert block.lk_origin.kernel_size == (kernel_size, kernel_size)
    torch.testing.assert_close(merged, ref, rtol=0, atol=1e-5)


def test_reparameterized_model_matches_training_form_and_deploy_keys() -> None:
    model = randomize_(timm.create_model("unireplknet_a")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        zoo.reparameterize(model)
        after = model(x)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-4)
    deploy = timm.create_model("unireplknet_a", deploy=True).eval()
    assert list(model.state_dict()) == list(deploy.state_dict())
    deploy.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), after, rtol=0, atol=0)
    assert count_params(model) == OFFICIAL_PARAMS["a"][1]


def test_reparameterize_is_idempotent() -> None:
    model = zoo.reparameterize(randomize_(timm.create_model("unireplknet_a")).eval())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    zoo.reparameterize(model)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_block_reparameterize_merges_its_own_branches_first() -> None:
    # timm's reparameterize_model converts parents before children: the block cannot rely on
    # its DilatedReparamBlock being merged already
    block = randomize_(timm.create_model("unireplknet_a")).stages[1].blocks[0].eval()
    x = torch.randn(2, 80, 9, 9)
    with torch.no_grad():
        before = block(x)
        block.reparameterize()
        after = block(x)
    assert len(block.dwconv.branches) == 0 and isinstance(block.norm, nn.Identity)
    assert block.dwconv.lk_origin.bias is not None and block.gamma is None
    torch.testing.assert_close(after, before, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Official checkpoints


def test_official_layout_has_the_official_key_names_and_counts() -> None:
    train = to_official_layout(timm.create_model("unireplknet_a"))
    deploy = to_official_layout(timm.create_model("unireplknet_a", deploy=True))
    assert (len(train), len(deploy)) == (626, 156)
    for key in (
        "downsample_layers.0.0.weight",
        "downsample_layers.0.1.weight",
        "downsample_layers.0.3.weight",
        "downsample_layers.0.4.bias",
        "downsample_layers.3.1.weight",
        "stages.0.0.dwconv.weight",
        "stages.1.0.gamma",
        "stages.1.0.dwconv.origin_bn.running_var",
        "stages.1.0.dwconv.dil_conv_k7_2.weight",
        "stages.1.0.dwconv.dil_bn_k3_5.running_mean",
        "stages.1.0.act.1.beta",
        "stages.1.0.pwconv2.2.running_var",
        "stages.2.5.se.down.weight",
        "norm.weight",
        "head.weight",
    ):
        assert key in train, key
    for key in (
        "stages.0.0.dwconv.bias",
        "stages.1.0.dwconv.lk_origin.bias",
        "stages.1.0.pwconv2.0.bias",
        "stages.1.0.act.1.gamma",
    ):
        assert key in deploy, key
    assert not any(k.endswith((".gamma", "beta")) and ".act." not in k for k in deploy)


@pytest.mark.parametrize("deploy", [False, True])
def test_official_layout_round_trips_through_checkpoint_filter(deploy: bool) -> None:
    source = randomize_(timm.create_model("unireplknet_a", deploy=deploy))
    target = timm.create_model("unireplknet_a", deploy=deploy)
    for wrapped in (to_official_layout(source), {"model": to_official_layout(source)}):
        filtered = checkpoint_filter_fn(wrapped, target)
        assert list(filtered) == list(source.state_dict())
        target.load_state_dict(filtered, strict=True)
        loaded = target.state_dict()
        for key, value in source.state_dict().items():
            assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("deploy", [False, True])
def test_official_checkpoint_loads_through_create_model(deploy: bool, tmp_path) -> None:
    source = randomize_(timm.create_model("unireplknet_a", deploy=deploy)).eval()
    path = tmp_path / "official.pth"
    torch.save({"model": to_official_layout(source), "epoch": 299}, path)
    loaded = timm.create_model(
        "unireplknet_a", deploy=deploy, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


def test_deploy_model_rejects_training_form_checkpoint_naming_its_form(tmp_path) -> None:
    path = tmp_path / "train.pth"
    torch.save(to_official_layout(timm.create_model("unireplknet_a")), path)
    with pytest.raises(ValueError, match="checkpoint is in the training form"):
        timm.create_model(
            "unireplknet_a",
            deploy=True,
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(path)),
        )
    deploy_sd = to_official_layout(timm.create_model("unireplknet_a", deploy=True))
    with pytest.raises(ValueError, match="checkpoint is in the deploy form"):
        checkpoint_filter_fn(deploy_sd, timm.create_model("unireplknet_a"))


def test_default_cfgs_name_the_official_weights() -> None:
    expected = {
        "unireplknet_a.in1k": ("unireplknet_a_in1k_224_acc77.03.pth", 224, 0.875, 1000),
        "unireplknet_t.in1k": ("unireplknet_t_in1k_224_acc83.21.pth", 224, 0.875, 1000),
        "unireplknet_s.in22k_ft_in1k_384": (
            "unireplknet_s_in22k_to_in1k_384_acc86.44.pth", 384, 1.0, 1000),
        "unireplknet_l.in22k": ("unireplknet_l_in22k_pretrain.pth", 192, 0.875, 21841),
        "unireplknet_xl.in22k_ft_in1k_384": (
            "unireplknet_xl_in22k_to_in1k_384_acc87.96.pth", 384, 1.0, 1000),
    }  # fmt: skip
    for name, (file_name, size, crop_pct, num_classes) in expected.items():
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.hf_hub_filename == file_name
        assert (cfg.input_size[-1], cfg.crop_pct, cfg.num_classes) == (size, crop_pct, num_classes)
        assert (cfg.license, cfg.paper_ids) == ("apache-2.0", "arXiv:2311.15599")
        assert not cfg.has_weights  # metadata only: nothing is downloaded
    assert len(timm.list_models("unireplknet_*", include_tags=True)) == 14


# --------------------------------------------------------------------------------------------
# timm contract beyond timm's own suite (tests/test_timm_suite.py)


def test_features_only_out_indices_channels_and_strides() -> None:
    model = timm.create_model("unireplknet_a", features_only=True, out_indices=(1, 3)).eval()
    assert model.feature_info.channels() == [80, 320]
    assert model.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 80, 8, 8), (1, 320, 2, 2)]


def test_grad_checkpointing_is_non_reentrant_and_matches_plain_grads() -> None:
    model = randomize_(timm.create_model("unireplknet_a", num_classes=5))
    x = torch.randn(2, 3, 32, 32)  # no requires_grad: re-entrant checkpointing would drop grads
    model.train()
    model(x).square().sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    model(x).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, plain[name], rtol=1e-4, atol=1e-5)


def test_optimizer_groups_follow_the_official_recipe() -> None:
    model = timm.create_model("unireplknet_a")
    groups = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for g in groups.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        # official: 1-D params (layer scale, norms, GRN here) and biases get no weight decay
        assert (id(p) in decayed) == (p.dim() > 1 and not name.endswith(".bias")), name


# --------------------------------------------------------------------------------------------
# torch.compile


def test_compile_fullgraph_deploy_form_runs_on_cpu() -> None:
    model = zoo.reparameterize(randomize_(timm.create_model("unireplknet_a")).eval())
    x = torch.randn(1, 3, 64, 64)
    torch._dynamo.reset()
    # aot_eager: full dynamo capture (fullgraph=True: no graph breaks) and AOT tracing of the
    # custom op through its fake kernel, without inductor's minutes of C++ compilation
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_compile_fullgraph_inductor_deploy_form_runs_on_cpu() -> None:
    model = zoo.reparameterize(randomize_(timm.create_model("unireplknet_a")).eval())
    x = torch.randn(1, 3, 64, 64)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Bad input


def test_unsupported_kernel_size_names_the_supported_sizes() -> None:
    kernel_sizes = ((3, 3), (13, 21), (13,) * 6, (13, 13))
    with pytest.raises(ValueError, match=r"unsupported kernel size 21.*\(0, 3, 5, 7, 9, 11, 13"):
        timm.create_model("unireplknet_a", kernel_sizes=kernel_sizes)
    with pytest.raises(ValueError, match=r"supported sizes are \[5, 7, 9, 11, 13, 15, 17\]"):
        DilatedReparamBlock(8, 19)


def test_kernel_sizes_must_match_depths() -> None:
    with pytest.raises(ValueError, match="one per block"):
        timm.create_model("unireplknet_a", kernel_sizes=((3, 3), (13,), (13,) * 6, (13, 13)))
    with pytest.raises(ValueError, match="no default kernel_sizes for depths"):
        timm.create_model("unireplknet_a", depths=(1, 1, 1, 1))


def test_unknown_kwarg_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="in_1k_pretrained"):
        timm.create_model("unireplknet_a", in_1k_pretrained=True)


def test_custom_kernel_sizes_with_conv_less_blocks_reparameterize() -> None:
    kernel_sizes = ((0, 5), (7, 9), (11, 15, 17, 3, 13, 0), (13, 5))
    model = randomize_(timm.create_model("unireplknet_a", kernel_sizes=kernel_sizes)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        after = zoo.reparameterize(model)(x)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-4)
    deploy = timm.create_model("unireplknet_a", kernel_sizes=kernel_sizes, deploy=True)
    assert list(deploy.state_dict()) == list(model.state_dict())


@pytest.mark.parametrize("channels_last", [True, False])
def test_grn_matches_timm_global_response_norm(channels_last: bool) -> None:
    from timm.layers.grn import GlobalResponseNorm as TimmGRN

    from zoo.layers import GlobalResponseNorm

    ours, ref = (
        GlobalResponseNorm(12, channels_last=channels_last),
        TimmGRN(12, channels_last=channels_last),
    )
    no_bias = GlobalResponseNorm(12, bias=False, channels_last=channels_last)
    with torch.no_grad():
        ours.weight.normal_(), ours.bias.normal_()
        ref.weight.copy_(ours.weight), ref.bias.copy_(ours.bias), no_bias.weight.copy_(ours.weight)
        x = torch.randn(2, 5, 7, 12) if channels_last else torch.randn(2, 12, 5, 7)
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)
        ref.bias.zero_()
        torch.testing.assert_close(no_bias(x), ref(x), rtol=0, atol=1e-5)
