"""zoo.distill: the losses against their definitions written out here, the OFA branches and stage
mapping against the official sizes, and the wrapper's contract (frozen teacher, bare student,
errors) on tiny students and teachers of every family."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock
from torch import nn

import zoo  # noqa: F401  (registers the zoo families)
from zoo.distill import (
    DKD,
    KD,
    OFA,
    Vanilla,
    dkd_loss,
    kd_loss,
    load_teacher,
    ofa_loss,
    resolve_stages,
)
from zoo.errors import CheckpointError, ConfigError
from zoo.models import FAMILIES

C = 10  # classes of the tiny models

# ------------------------------------------------------------------------------------------------
# references: the definitions, per sample, in float64


def _softmax64(z: torch.Tensor, T: float) -> torch.Tensor:
    z = z.double() / T
    e = (z - z.max(dim=1, keepdim=True).values).exp()
    return e / e.sum(dim=1, keepdim=True)


def ofa_reference(zs, zt, target: torch.Tensor, eps: float, T: float) -> torch.Tensor:
    """OFA as coded officially: target weight (1 + p_t)^eps - 1, others p_t^eps, times
    -log p_s, summed over classes, averaged over the batch."""
    ps, pt = _softmax64(zs, T), _softmax64(zt, T)
    labels = target.argmax(-1) if target.ndim == 2 else target
    per_sample = []
    for b, y in enumerate(labels.tolist()):
        w = pt[b] ** eps
        w = torch.cat([w[:y], ((1 + pt[b, y]) ** eps - 1).reshape(1), w[y + 1 :]])
        per_sample.append(-(w * ps[b].log()).sum())
    return torch.stack(per_sample).mean()


def kd_reference(zs, zt, T: float) -> torch.Tensor:
    ps, pt = _softmax64(zs, T), _softmax64(zt, T)
    return T**2 * (pt * (pt.log() - ps.log())).sum(dim=1).mean()


def dkd_reference(zs, zt, y: torch.Tensor, alpha: float, beta: float, T: float) -> torch.Tensor:
    """DKD (Zhao et al. 2022, Eq. 7): TCKD = KL of the binary (target, rest) probabilities,
    NCKD = KL of the distributions renormalised over the non-target classes."""
    ps, pt = _softmax64(zs, T), _softmax64(zt, T)
    total = []
    for b, c in enumerate(y.tolist()):
        bs = torch.stack([ps[b, c], 1 - ps[b, c]])
        bt = torch.stack([pt[b, c], 1 - pt[b, c]])
        keep = torch.arange(ps.shape[1]) != c
        qs, qt = ps[b, keep] / (1 - ps[b, c]), pt[b, keep] / (1 - pt[b, c])
        tckd = (bt * (bt / bs).log()).sum()
        nckd = (qt * (qt / qs).log()).sum()
        total.append(alpha * tckd + beta * nckd)
    return T**2 * torch.stack(total).mean()


def _value_and_grad(fn, zs, *args):
    zs = zs.detach().clone().requires_grad_()
    value = fn(zs, *args)
    (grad,) = torch.autograd.grad(value, zs)
    return value.detach().double(), grad.double()


def _logits(seed: int, batch: int = 6, classes: int = C, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(batch, classes, generator=g) * scale
    zt = torch.randn(batch, classes, generator=g) * scale
    y = torch.randint(0, classes, (batch,), generator=g)
    return zs, zt, y


# ------------------------------------------------------------------------------------------------
# losses


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("eps", [0.8, 1.0, 1.3, 2.0])
@pytest.mark.parametrize("soft", [False, True])
def test_ofa_loss_values_and_gradients_match_the_coded_definition(T, eps, soft) -> None:
    zs, zt, y = _logits(int(10 * T + 100 * eps))
    target = y
    if soft:  # a Mixup-like target whose dominant class is y
        other = torch.roll(F.one_hot(y, C), 1, dims=1).float()
        target = 0.7 * F.one_hot(y, C) + 0.3 * other
    mask = F.one_hot(target.argmax(-1) if soft else target, C)
    got_v, got_g = _value_and_grad(lambda z: ofa_loss(z, zt, mask, eps, T), zs)
    ref_v, ref_g = _value_and_grad(lambda z: ofa_reference(z, zt, target, eps, T), zs)
    torch.testing.assert_close(got_v, ref_v, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(got_g, ref_g, rtol=1e-5, atol=1e-7)


def test_ofa_loss_at_eps_1_is_soft_cross_entropy_with_kd_gradient() -> None:
    zs, zt, y = _logits(3)
    mask = F.one_hot(y, C)
    pt = zt.softmax(1)
    entropy = -(pt * pt.log()).sum(1).mean()
    v_ofa, g_ofa = _value_and_grad(lambda z: ofa_loss(z, zt, mask, 1.0), zs)
    v_kd, g_kd = _value_and_grad(lambda z: kd_loss(z, zt), zs)
    torch.testing.assert_close(v_ofa, v_kd + entropy.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_ofa, g_kd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd_loss_is_t2_scaled_kl(T) -> None:
    zs, zt, _ = _logits(5)
    got_v, got_g = _value_and_grad(lambda z: kd_loss(z, zt, T), zs)
    ref_v, ref_g = _value_and_grad(lambda z: kd_reference(z, zt, T), zs)
    torch.testing.assert_close(got_v, ref_v, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(got_g, ref_g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("alpha", "beta", "T"), [(1.0, 2.0, 1.0), (1.0, 8.0, 4.0), (0.5, 1.0, 2.0)]
)
def test_dkd_loss_matches_the_decoupled_definition(alpha, beta, T) -> None:
    zs, zt, y = _logits(7)
    got_v, got_g = _value_and_grad(lambda z: dkd_loss(z, zt, y, alpha, beta, T), zs)
    ref_v, ref_g = _value_and_grad(lambda z: dkd_reference(z, zt, y, alpha, beta, T), zs)
    torch.testing.assert_close(got_v, ref_v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_g, ref_g, rtol=1e-4, atol=1e-6)


def test_ofa_loss_stays_finite_where_log_of_softmax_underflows() -> None:
    # p_s of class 1 is e^-120 in float32: torch.log(softmax) (the official code) gives inf
    zs, zt = torch.tensor([[120.0, 0.0, -30.0]]), torch.tensor([[0.0, 5.0, 1.0]])
    mask = F.one_hot(torch.tensor([1]), 3)
    assert torch.isinf(-(((zt.softmax(1) + mask) ** 1.5 - mask) * zs.softmax(1).log()).sum())
    got = ofa_loss(zs, zt, mask, 1.5)
    pt = zt.double().softmax(1)[0]
    log_ps = zs.double().log_softmax(1)[0]
    w = torch.stack([pt[0] ** 1.5, (1 + pt[1]) ** 1.5 - 1, pt[2] ** 1.5])
    torch.testing.assert_close(got.double(), -(w * log_ps).sum(), rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------------------------
# branch sizes and stage mapping (full-size models on the meta device: no memory, no compute)


def _meta_ofa(student: str, teacher: str, num_classes: int = 100, **kwargs) -> OFA:
    with torch.device("meta"):
        s = timm.create_model(student, num_classes=num_classes)
        t = timm.create_model(teacher, num_classes=num_classes)
        return OFA(s, t, num_classes, **kwargs)


def _counts(ofa: OFA) -> list[int]:
    return [sum(p.numel() for p in b.parameters()) for b in ofa.branches]


def _sepconv(c: int, o: int) -> int:
    # dw 3x3 + pw c->c + BN, dw 3x3 + pw c->o + BN (no conv biases)
    return 9 * c + c * c + 2 * c + 9 * c + c * o + 2 * o


def _vit_block(d: int) -> int:
    # 2 LayerNorms, qkv without bias, proj, fc1 (4d), fc2
    return 2 * 2 * d + 3 * d * d + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)


def test_cnn_branch_sizes_equal_the_official_ones_resnet18_from_deit_tiny() -> None:
    ofa = _meta_ofa("resnet18", "deit_tiny_patch16_224")
    width, head = 512, 512 * 100 + 100  # max(512, 192)
    formula = [
        _sepconv(64, 128) + _sepconv(128, 256) + _sepconv(256, width) + head,
        _sepconv(128, 256) + _sepconv(256, width) + head,
        _sepconv(256, width) + head,
        512 * width + width + head,  # biased 1x1 conv
    ]
    official = [320_100, 306_276, 254_052, 313_956]  # measured on the official code (spec 1.3)
    assert _counts(ofa) == formula == official


@pytest.mark.parametrize(
    ("student", "teacher", "total"),
    [
        ("resnet18", "deit_tiny_patch16_224", 3_041_184),
        ("resnet18", "mixer_b16_224", 4_394_656),  # width max(512, 768)
        ("mobilenetv2_100", "deit_tiny_patch16_224", 7_140_896),  # stage 4: the 1280-ch head
    ],
)
def test_cnn_branch_totals_at_1000_classes_equal_the_official_ones(student, teacher, total):
    assert sum(_counts(_meta_ofa(student, teacher, num_classes=1000))) == total


@pytest.mark.parametrize(
    ("student", "official"),
    [
        ("deit_tiny_patch16_224", [1_501_156, 1_056_868, 612_580, 612_580]),
        ("resmlp_12_224", [5_951_332, 4_178_020, 2_404_708, 2_404_708]),
    ],
)
def test_token_branch_sizes_equal_the_official_ones(student, official) -> None:
    ofa = _meta_ofa(student, "resnet18")  # the teacher's width never enters a token branch
    d = ofa.layout.num_features
    # one 14x14 -> 7x7 merge (LayerNorm(4d) + Linear(4d, d)), 3/2/1/1 blocks, Linear(d, 100)
    formula = [2 * 4 * d + 4 * d * d + n * _vit_block(d) + d * 100 + 100 for n in (3, 2, 1, 1)]
    assert _counts(ofa) == formula == official


@pytest.mark.parametrize(
    ("name", "channels", "grids", "final_at_stage4"),
    [
        ("resnet18", (64, 128, 256, 512), (56, 28, 14, 7), True),
        ("mobilenetv2_100", (24, 32, 96, 1280), (56, 28, 14, 7), True),
        ("convnext_tiny", (96, 192, 384, 768), (56, 28, 14, 7), True),
        ("swin_tiny_patch4_window7_224", (96, 192, 384, 768), (56, 28, 14, 7), False),
        ("unireplknet_a", (40, 80, 160, 320), (56, 28, 14, 7), True),
        ("inceptionnext_atto", (40, 80, 160, 320), (56, 28, 14, 7), True),
    ],
)
def test_hierarchical_stages_are_the_official_stage_shapes(name, channels, grids, final_at_stage4):
    with torch.device("meta"):
        layout = resolve_stages(timm.create_model(name), (1, 2, 3, 4))
    assert tuple(f.channels for f in layout.stages) == channels
    assert tuple(f.grid for f in layout.stages) == tuple((g, g) for g in grids)
    assert (layout.stages[3].index is None) == final_at_stage4
    assert layout.tokens == name.startswith("swin")


@pytest.mark.parametrize(
    ("name", "kwargs", "indices"),
    [
        ("deit_tiny_patch16_224", {}, (1, 3, 9, 11)),  # the official indices at depth 12
        ("mixer_b16_224", {}, (1, 3, 9, 11)),
        ("resmlp_12_224", {}, (1, 3, 9, 11)),
        ("vit_tiny_patch16_224", {"depth": 8}, (0, 2, 6, 7)),  # blocks round(8 n / 12)
        ("vit_tiny_patch16_224", {"depth": 24}, (3, 7, 19, 23)),
    ],
)
def test_plain_model_stages_are_the_official_blocks_scaled_by_depth(name, kwargs, indices):
    with torch.device("meta"):
        layout = resolve_stages(timm.create_model(name, **kwargs), (1, 2, 3, 4))
    assert layout.tokens
    assert tuple(f.index for f in layout.stages) == indices
    assert {f.grid for f in layout.stages} == {(14, 14)}


# ------------------------------------------------------------------------------------------------
# tiny students and teachers of every family


def _mixer(**kwargs) -> nn.Module:
    return MlpMixer(num_classes=C, img_size=32, patch_size=4, num_blocks=4, embed_dim=32, **kwargs)


_TINY_VIT = dict(img_size=32, patch_size=4, embed_dim=32, depth=4, num_heads=2)
# (name for timm.create_model or a constructor, kwargs, input size); one input size for all, so
# that any two can be student and teacher on the same batch
FAMILY_MODELS = {
    "resnet": ("test_resnet", {}, 32),
    "convnext": ("test_convnext", {}, 32),
    "mobilenet": ("test_efficientnet", {}, 32),
    "vit": ("vit_tiny_patch16_224", _TINY_VIT, 32),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", _TINY_VIT, 32),
    "swin": (
        "swin_tiny_patch4_window7_224",
        dict(img_size=32, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=2),
        32,
    ),
    "mixer": (_mixer, {}, 32),
    "resmlp": (_mixer, dict(block_layer=ResBlock, norm_layer=Affine, mlp_ratio=4), 32),
}


def _zoo_classifiers() -> list[str]:
    """The smallest-named model of every zoo family that classifies (no dense heads)."""
    names = []
    for family in FAMILIES:
        name = timm.list_models(module=family)[0]
        with torch.device("meta"):
            if not hasattr(timm.create_model(name), "forward_heads"):
                names.append(name)
    return names


for _name in _zoo_classifiers():
    FAMILY_MODELS[_name] = (_name, {}, 32)


def _build(family: str) -> nn.Module:
    maker, kwargs, _ = FAMILY_MODELS[family]
    if isinstance(maker, str):
        return timm.create_model(maker, num_classes=C, **kwargs)
    return maker(**kwargs)


def _batch(family: str, batch: int = 2, seed: int = 0):
    size = FAMILY_MODELS[family][2]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g), torch.randint(
        0, C, (batch,), generator=g
    )


def test_every_zoo_classification_family_is_covered() -> None:
    assert {"unireplknet_a", "inceptionnext_atto"} <= set(FAMILY_MODELS)


FAMILIES_IN_ORDER = list(FAMILY_MODELS)
# each family distils once as student and once as teacher (from the family next in the list)
PAIRS = [
    (s, FAMILIES_IN_ORDER[(i + 1) % len(FAMILIES_IN_ORDER)])
    for i, s in enumerate(FAMILIES_IN_ORDER)
]


@pytest.mark.parametrize(("student_family", "teacher_family"), PAIRS)
def test_one_step_trains_student_and_branches_and_leaves_the_teacher_untouched(
    student_family, teacher_family
) -> None:
    torch.manual_seed(0)
    student, teacher = _build(student_family), _build(teacher_family)
    ofa = OFA(student, teacher, C, eps=[1.0, 1.1, 1.2, 1.3, 1.5], temperature=2.0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    ofa.train()
    assert student.training and not any(m.training for m in teacher.modules())
    optimizer = torch.optim.SGD([p for p in ofa.parameters() if p.requires_grad], lr=0.1)
    x, y = _batch(student_family)
    logits, losses = ofa(x, y)
    assert logits.shape == (2, C) and set(losses) == {"loss_gt", "loss_kd", "loss_ofa"}
    assert all(torch.isfinite(v) for v in losses.values())
    torch.stack(list(losses.values())).sum().backward()
    optimizer.step()
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is not None for b in ofa.branches for p in b.parameters())
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, student_before[k])]
    assert changed, "the student did not train"
    # the saved student is the bare model
    fresh = _build(student_family)
    result = fresh.load_state_dict(ofa.student_state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("family", FAMILIES_IN_ORDER)
def test_student_logits_are_the_models_own_forward(family) -> None:
    student = _build(family).eval()
    ofa = OFA(student, _build("convnext"), C).eval()
    x, _ = _batch(family)
    with torch.no_grad():
        logits, _ = ofa.student_features(x)
        torch.testing.assert_close(logits, student(x), rtol=0, atol=1e-6)


def test_cnn_stage_features_are_the_stage_outputs_and_the_final_map() -> None:
    student = _build("resnet").eval()
    ofa = OFA(student, _build("convnext"), C)
    x, _ = _batch("resnet")
    with torch.no_grad():
        _, inputs = ofa.student_features(x)
        h = student.maxpool(student.act1(student.bn1(student.conv1(x))))
        expected = []
        for layer in (student.layer1, student.layer2, student.layer3, student.layer4):
            h = layer(h)
            expected.append(h)
    for (got,), want in zip(inputs, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_mobilenet_stage4_is_the_head_conv_output_like_the_official_stage_info() -> None:
    student = _build("mobilenet").eval()
    ofa = OFA(student, _build("convnext"), C, stages=(4,))
    x, _ = _batch("mobilenet")
    with torch.no_grad():
        (_, [(got,)]) = ofa.student_features(x)
        want = student.bn2(student.conv_head(student.blocks(student.bn1(student.conv_stem(x)))))
    assert got.shape[1] == student.num_features != student.blocks[-1][-1].conv_pwl.out_channels
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_vit_stage_features_are_block_outputs_with_the_prefix_tokens_kept_aside() -> None:
    student = timm.create_model("vit_tiny_patch16_224", num_classes=C, reg_tokens=2, **_TINY_VIT)
    student.eval()
    ofa = OFA(student, _build("convnext"), C)
    assert ofa.layout.num_prefix_tokens == 3 and ofa.layout.class_token  # cls + 2 registers
    x, _ = _batch("vit")
    with torch.no_grad():
        _, inputs = ofa.student_features(x)
        h = student.norm_pre(student._pos_embed(student.patch_embed(x)))
        blocks = []
        for blk in student.blocks:
            h = blk(h)
            blocks.append(h)
    for feature, (patches, prefix) in zip(ofa.layout.stages, inputs, strict=True):
        tokens = blocks[feature.index]
        torch.testing.assert_close(prefix, tokens[:, :3], rtol=0, atol=0)
        grid = tokens[:, 3:].transpose(1, 2).reshape(2, 32, 8, 8)  # row-major patch order
        torch.testing.assert_close(patches, grid, rtol=0, atol=0)
    # the class token is what a branch reads out: changing it changes the branch logits
    branch = ofa.branches[0].eval()
    patches, prefix = inputs[0]
    moved = prefix.clone()
    moved[:, 0] += 1.0
    assert not torch.allclose(branch(patches, prefix), branch(patches, moved))


def test_token_branch_merges_to_7x7_and_reads_the_class_token_of_deit_tiny() -> None:
    ofa = _meta_ofa("deit_tiny_patch16_224", "resnet18")
    merges = [sum(type(m).__name__ == "PatchMerging" for m in b.merge) for b in ofa.branches]
    assert merges == [1, 1, 1, 1]  # 14x14 -> 7x7
    assert [len(b.blocks) for b in ofa.branches] == [3, 2, 1, 1]
    assert all(b.class_token and b.num_prefix_tokens == 1 for b in ofa.branches)
    swin = _meta_ofa("swin_tiny_patch4_window7_224", "resnet18")
    assert [sum(type(m).__name__ == "PatchMerging" for m in b.merge) for b in swin.branches] == [
        3, 2, 1, 0  # 56 -> 7, 28 -> 7, 14 -> 7, 7
    ]  # fmt: skip
    assert not any(b.class_token for b in swin.branches)


@pytest.mark.parametrize("student_family", ["vit", "resmlp"])
def test_token_student_with_branches_trains(student_family) -> None:
    torch.manual_seed(0)
    if student_family == "vit":  # 56x56 / patch 4 = the official 14x14 grid, one merge
        student = timm.create_model(
            "vit_tiny_patch16_224", num_classes=C, **{**_TINY_VIT, "img_size": 56}
        )
    else:
        student = MlpMixer(
            num_classes=C, img_size=56, patch_size=4, num_blocks=4, embed_dim=32,
            block_layer=ResBlock, norm_layer=Affine, mlp_ratio=4,
        )  # fmt: skip
    teacher = _build("convnext")
    with torch.no_grad():  # a confident teacher, far from the branches' near-uniform start
        teacher.get_classifier().weight.mul_(200.0)
    ofa = OFA(student, teacher, C, eps=1.2)
    assert all(len(b.merge) == 2 for b in ofa.branches)  # PatchMerging + GELU
    optimizer = torch.optim.AdamW([p for p in ofa.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 56, 56, generator=g), torch.randint(0, C, (8,), generator=g)

    def branch_kl() -> list[float]:  # how far each branch is from the teacher
        with torch.no_grad():
            zt = ofa.teacher_logits(x)
            _, inputs = ofa.student_features(x)
            return [kd_loss(b(*f), zt).item() for b, f in zip(ofa.branches, inputs, strict=True)]

    before = branch_kl()
    for _ in range(10):
        _, losses = ofa(x, y)
        optimizer.zero_grad()
        torch.stack(list(losses.values())).sum().backward()
        optimizer.step()
    after = branch_kl()
    assert all(a < 0.8 * b for a, b in zip(after, before, strict=True)), (before, after)


# ------------------------------------------------------------------------------------------------
# the objective


def test_objective_is_weighted_ce_plus_ofa_on_logits_and_on_every_branch() -> None:
    torch.manual_seed(0)
    eps, T = [1.0, 1.2, 1.4, 1.6, 1.8], 2.0
    ofa = OFA(_build("resnet"), _build("convnext"), C, eps=eps, temperature=T,
              gt_loss_weight=0.5, kd_loss_weight=2.0, ofa_loss_weight=0.1).eval()  # fmt: skip
    x, y = _batch("resnet", batch=4)
    soft = 0.6 * F.one_hot(y, C) + 0.4 * F.one_hot((y + 3) % C, C).float()
    with torch.no_grad():
        logits, losses = ofa(x, soft)
        zt = ofa.teacher(x)
        _, inputs = ofa.student_features(x)
        branch = [b(*f) for b, f in zip(ofa.branches, inputs, strict=True)]
    ce = -(soft * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(losses["loss_gt"], 0.5 * ce)
    kd = 2.0 * ofa_reference(logits, zt, soft, eps[-1], T)
    torch.testing.assert_close(losses["loss_kd"].double(), kd, rtol=1e-5, atol=1e-7)
    branches = 0.1 * sum(
        ofa_reference(z, zt, soft, e, T) for z, e in zip(branch, eps, strict=False)
    )
    torch.testing.assert_close(losses["loss_ofa"].double(), branches, rtol=1e-5, atol=1e-7)


def test_branches_and_eps_follow_the_given_stage_order() -> None:
    ofa = OFA(_build("resnet"), _build("convnext"), C, stages=(3, 1), eps=[1.5, 1.1, 1.0])
    assert [f.stage for f in ofa.layout.stages] == [3, 1]
    assert [len(b.proj) for b in ofa.branches] == [1, 3]  # 4 - stage SepConvs
    assert ofa.eps == (1.5, 1.1, 1.0)


@pytest.mark.parametrize("cls", [KD, DKD, Vanilla])
def test_logit_baselines_return_their_terms(cls) -> None:
    student, teacher = _build("resnet").eval(), _build("convnext")
    distiller = cls(student, None if cls is Vanilla else teacher, C).eval()
    x, y = _batch("resnet", batch=4)
    with torch.no_grad():
        logits, losses = distiller(x, y)
        zt = teacher(x)
    torch.testing.assert_close(losses["loss_gt"], F.cross_entropy(logits, y))
    if cls is Vanilla:
        assert set(losses) == {"loss_gt"}
        return
    ref = kd_reference(logits, zt, 1.0) if cls is KD else dkd_reference(logits, zt, y, 1, 2, 1)
    torch.testing.assert_close(losses["loss_kd"].double(), ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# the teacher


def test_teacher_stays_in_eval_mode_and_runs_without_grad() -> None:
    ofa = OFA(_build("resnet"), _build("mobilenet"), C)
    ofa.train()
    assert not ofa.teacher.training
    x, _ = _batch("resnet")
    assert not ofa.teacher_logits(x).requires_grad


def test_teacher_in_bfloat16_gives_float32_logits_close_to_the_float32_teacher() -> None:
    torch.manual_seed(0)
    teacher = _build("convnext").eval()
    reference = OFA(_build("resnet"), teacher, C)
    x, _ = _batch("resnet")
    want = reference.teacher_logits(x)
    low = OFA(_build("resnet"), teacher, C, teacher_dtype=torch.bfloat16)
    got = low.teacher_logits(x)
    assert {p.dtype for p in teacher.parameters()} == {torch.bfloat16}
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0.05, atol=0.05 * want.abs().max().item())


def _save(obj, path):
    torch.save(obj, path)
    return str(path)


def test_load_teacher_takes_plain_or_ema_weights_and_keeps_the_files_head(tmp_path) -> None:
    torch.manual_seed(0)
    plain, ema = _build("resnet").state_dict(), _build("resnet").state_dict()
    path = _save({"state_dict": plain, "state_dict_ema": ema, "epoch": 3}, tmp_path / "t.pth")
    for use_ema, want in ((False, plain), (True, ema)):
        teacher = load_teacher("test_resnet", path, num_classes=C, use_ema=use_ema)
        got = teacher.state_dict()
        # timm's own file loading would re-initialise `fc` (num_classes != its default 1000)
        assert all(torch.equal(got[k], want[k]) for k in want)
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_teacher("test_resnet", _save(plain, tmp_path / "raw.pth"), C, use_ema=True)


def test_load_teacher_reads_train_py_and_ddp_checkpoints(tmp_path) -> None:
    weights = timm.create_model("inceptionnext_atto", num_classes=C).state_dict()
    lightning = {
        "pytorch-lightning_version": "2.6",
        "state_dict": {f"model.{k}": v for k, v in weights.items()},
    }
    ddp = {"model": {f"module.{k}": v for k, v in weights.items()}}
    for i, ckpt in enumerate((lightning, ddp)):
        teacher = load_teacher("inceptionnext_atto", _save(ckpt, tmp_path / f"{i}.pth"), C)
        assert all(torch.equal(teacher.state_dict()[k], v) for k, v in weights.items())


# ------------------------------------------------------------------------------------------------
# errors


def test_teacher_with_another_number_of_classes_is_refused(tmp_path) -> None:
    other = timm.create_model("test_resnet", num_classes=7)
    with pytest.raises(ConfigError, match="predicts 7 classes but num_classes=10"):
        OFA(_build("resnet"), other, C)
    path = _save(other.state_dict(), tmp_path / "seven.pth")
    with pytest.raises(ConfigError, match="does not fit test_resnet with num_classes=10"):
        load_teacher("test_resnet", path, num_classes=C)


def test_stage_the_student_lacks_is_refused() -> None:
    dilated = timm.create_model("test_resnet", num_classes=C, output_stride=16)
    with pytest.raises(ConfigError, match="stage 4 needs a stride-32 feature map"):
        OFA(dilated, _build("convnext"), C)
    OFA(dilated, _build("convnext"), C, stages=(1, 2, 3))  # without it, fine
    for stages in ((0, 1), (1, 5), (2, 2)):
        with pytest.raises(ConfigError, match="stages must be distinct numbers among"):
            OFA(_build("resnet"), _build("convnext"), C, stages=stages)


@pytest.mark.parametrize("eps", [[1.0, 1.0], [1.0] * 4, [1.0] * 6])
def test_eps_list_of_the_wrong_length_is_refused(eps) -> None:
    with pytest.raises(ConfigError, match=r"eps needs one value, or len\(stages\) \+ 1 = 5"):
        OFA(_build("resnet"), _build("convnext"), C, eps=eps)
    with pytest.raises(ConfigError, match="must be > 0"):
        OFA(_build("resnet"), _build("convnext"), C, eps=0.0)


class _PlainClassifier(nn.Module):
    num_classes, num_features = C, 8

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, C)
        )

    def forward(self, x):
        return self.body(x)


def test_model_without_forward_intermediates_is_refused() -> None:
    with pytest.raises(TypeError, match="has no forward_intermediates"):
        OFA(_PlainClassifier(), _build("convnext"), C)


def test_teacher_without_num_features_is_refused() -> None:
    class NoWidth(_PlainClassifier):
        num_features = None

    with pytest.raises(TypeError, match="no integer num_features"):
        OFA(_build("resnet"), NoWidth(), C)
    KD(_build("resnet"), NoWidth(), C)  # logit distillers need no width


def test_optimizer_over_the_wrapper_skips_the_teacher_and_keeps_the_students_exemptions() -> None:
    from timm.optim import create_optimizer_v2

    student = _build("vit")
    ofa = OFA(student, _build("convnext"), C)
    optimizer = create_optimizer_v2(ofa, opt="adamw", lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in (*student.parameters(), *ofa.branches.parameters())}
    assert id(student.pos_embed) not in decayed and id(student.cls_token) not in decayed
    assert id(student.blocks[0].attn.qkv.weight) in decayed


def test_building_the_branches_leaves_every_student_module_in_its_own_mode() -> None:
    student = _build("resnet").train()
    student.layer1.eval()  # e.g. a frozen part of the student
    OFA(student, _build("convnext"), C)
    assert student.training and not student.layer1.training and student.layer2.training
