"""tools/flops.py, tools/published.py and benchmarks/flops.json.

References: fvcore's own conv handle on a copy of the model whose every depthwise conv is a
plain nn.Conv2d; the FFT and scan formulas written out by hand; the official code's fvcore
counts and the published numbers (tools/published.py, transcribed from the papers and READMEs), with
each family's convention difference computed here from the official architecture tables.
"""

import copy
import importlib
import json
import math
import pkgutil
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis

import ops
import zoo
from zoo.layers.nafnet import DepthwiseConv1d

from test_models_common import SMALLEST, randomize_  # isort: skip
from zoo_registry import SLOW_TO_TRACE  # isort: skip

ROOT = Path(__file__).resolve().parents[1]
import sys  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
import convert as convert_tool  # noqa: E402
import flops as flops_tool  # noqa: E402
import published  # noqa: E402

RECORD = json.loads((ROOT / "benchmarks" / "flops.json").read_text())
ROWS = {r["tag"]: r for r in RECORD["rows"]}


def plain_conv2d_copy(model: nn.Module) -> nn.Module:
    """The model with every ops.DepthwiseConv2d replaced by an nn.Conv2d holding its weights
    (and every depthwise 1-D conv computed by ops, DeepRFTv2's, by an nn.Conv1d)."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is DepthwiseConv1d:
                conv = nn.Conv1d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,
                    padding=child.padding,
                    groups=child.groups,
                    bias=child.bias is not None,
                )
                conv.load_state_dict(child.state_dict())
                setattr(parent, name, conv)
            if isinstance(child, ops.DepthwiseConv2d):
                conv = nn.Conv2d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,
                    stride=child.stride,
                    padding=child.padding,
                    dilation=child.dilation,
                    groups=child.groups,
                    bias=child.bias is not None,
                )
                conv.load_state_dict(child.state_dict())
                setattr(parent, name, conv)
    assert not any(isinstance(m, ops.DepthwiseConv2d) for m in model.modules())
    return model


def _traced(family: str):
    """Families whose smallest model takes minutes to trace (zoo_registry.SLOW_TO_TRACE) run
    with the slow tests."""
    marks = [pytest.mark.slow] if family in SLOW_TO_TRACE else []
    return pytest.param(family, id=SMALLEST[family], marks=marks)


@pytest.mark.parametrize("family", [_traced(f) for f in zoo.models.FAMILIES])
def test_count_equals_fvcore_of_the_plain_conv2d_model(family) -> None:
    torch.manual_seed(0)
    model = randomize_(timm.create_model(SMALLEST[family])).eval()
    plain = plain_conv2d_copy(model).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        # float32 rounding grows with depth and output size (DeepRFTv2: ~200 layers, outputs
        # ~10): the tolerance is relative to the largest output
        scale = max(1.0, expected.abs().max().item())
        torch.testing.assert_close(plain(x), expected, rtol=1e-5, atol=1e-5 * scale)
    reference = FlopCountAnalysis(plain, x).unsupported_ops_warnings(False)
    reference.uncalled_modules_warnings(False)
    counted = flops_tool.count(model, x)
    # the tool also counts FFTs (its handles; fvcore's defaults skip them)
    ffts = sum(v for k, v in counted["by_operator"].items() if k.startswith("fft_"))
    assert counted["flops"] - ffts == reference.total()
    ours = counted["by_operator"]
    assert ours["conv"] + ours["dwconv2d"] == reference.by_operator()["conv"]


def test_fft_handles_count_the_stated_formulas() -> None:
    class Spectral(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.fft.irfft2(torch.fft.rfft2(x), s=x.shape[-2:])
            return y + torch.fft.fft2(x.to(torch.complex64)).real

    x = torch.randn(2, 3, 8, 16)
    counted = flops_tool.count(Spectral(), x)
    n, planes = 8 * 16, 2 * 3
    real = planes * 2.5 * n * math.log2(n)  # rfft2 and irfft2 (real side 8 x 16)
    assert counted["flops"] == int(real) * 2 + int(planes * 5 * n * math.log2(n))


def test_every_op_handle_is_an_fvcore_default_after_import_zoo() -> None:
    from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

    for package in pkgutil.iter_modules(ops.__path__):  # every op package of ops
        if package.ispkg:
            handles = importlib.import_module(f"ops.{package.name}").FVCORE_HANDLES
            assert handles and all(_DEFAULT_SUPPORTED_OPS[k] is h for k, h in handles.items())


@pytest.mark.skipif(
    not hasattr(ops, "selective_scan"), reason="ops.selective_scan is not in this checkout"
)
@pytest.mark.parametrize(("with_d", "with_z"), [(False, False), (True, False), (True, True)])
def test_selective_scan_counts_mambas_formula(with_d, with_z) -> None:
    batch, dim, length, state = 2, 6, 7, 5

    class Scan(nn.Module):
        def forward(self, u: torch.Tensor) -> torch.Tensor:
            A = -torch.ones(dim, state)
            B = C = torch.ones(batch, state, length)
            D = torch.ones(dim) if with_d else None
            return ops.selective_scan(u, u, A, B, C, D, u if with_z else None)

    counted = flops_tool.count(Scan(), torch.rand(batch, dim, length))
    expected = 9 * batch * length * dim * state + (with_d + with_z) * batch * dim * length
    assert counted["flops"] == expected


def test_record_covers_every_registered_tag_with_the_codes_parameter_counts() -> None:
    for name in timm.list_models(module=list(zoo.models.FAMILIES)):
        for tag in flops_tool.tags(name):
            assert tag in ROWS, f"{tag} missing from benchmarks/flops.json: run tools/flops.py"
            model = convert_tool._meta_model(tag)
            assert ROWS[tag]["params"] == sum(p.numel() for p in model.parameters()), tag


def _current(tag: str):
    slow = math.prod(ROWS[tag]["input_size"]) > 3 * 512 * 512
    slow = slow or ROWS[tag]["family"] in SLOW_TO_TRACE
    return pytest.param(tag, id=tag, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize(
    "tag", [_current(flops_tool.tags(SMALLEST[f])[0]) for f in zoo.models.FAMILIES]
)
def test_recorded_counts_are_those_of_the_current_code(tag) -> None:
    row = flops_tool.measure(tag)
    recorded = ROWS[tag]
    for key in ("flops", "params", "params_forward", "by_operator", "deploy"):
        assert row[key] == recorded[key], (tag, key)


# --------------------------------------------------------------------------------------------
# Our counts against the official code's, with each family's convention difference


def _stage_maps(h: int, stride: int, n: int) -> list[int]:
    return [(h // (stride * 2**i)) ** 2 for i in range(n)]


# the official architecture tables: UniRepLKNet's depths and dims, MK-UNet's channels
UNIREPLKNET = {
    "a": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "f": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "p": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "n": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "t": ((3, 3, 18, 3), (80, 160, 320, 640)),
    "s": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "b": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "l": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xl": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
}
MKUNET = {
    "t": (4, 8, 16, 24, 32),
    "s": (8, 16, 32, 48, 80),
    "b": (16, 32, 64, 96, 160),
    "m": (32, 64, 128, 192, 320),
    "l": (64, 128, 256, 384, 512),
}
INCEPTIONNEXT_LAST_DIM = {"atto": 320, "tiny": 768, "small": 768, "base": 1024, "base_384": 1024}


def official_convention(tag: str, ours: dict) -> float:
    """Our fvcore count turned into the official code's, by the stated conventions."""
    row = ROWS[tag]
    h = row["input_size"][1]
    variant = row["model"].split("_", 1 if row["family"] != "mkunet" else 2)[-1]
    if row["family"] == "unireplknet":
        depths, dims = UNIREPLKNET[variant]
        # official: no channels-first LayerNorm counted (ours: 5 per element); the head's
        # nn.LayerNorm on the pooled (1, C) vector counts in both
        layer_norms = ours["by_operator"].get("layer_norm", 0) - 5 * dims[-1]
        # official SE: adaptive_avg_pool2d, 1 per input element, in every block
        se_pools = sum(
            d * n * hw for d, n, hw in zip(dims, depths, _stage_maps(h, 4, 4), strict=True)
        )
        head_pool = dims[-1] * (h // 32) ** 2  # ours: adaptive_avg_pool2d; official: x.mean
        return ours["flops"] - layer_norms + se_pools - head_pool
    if row["family"] == "inceptionnext":  # official head: x.mean, not counted
        return ours["flops"] - INCEPTIONNEXT_LAST_DIM[variant] * (h // 32) ** 2
    if row["family"] == "mkunet":  # official CBAM: AdaptiveAvgPool2d on each decoder input
        channels = MKUNET[variant][::-1]  # decoder stages run C5 @ H/32 ... C1 @ H/2
        return ours["flops"] + sum(c * (h // 2 ** (5 - i)) ** 2 for i, c in enumerate(channels))
    if row["family"] == "bevanet":  # official: logits at 1/8, not resized (4 per output value)
        h, w = row["input_size"][1:]
        return ours["flops"] - 4 * row["num_classes"] * h * w
    raise AssertionError(f"state the {row['family']} convention in tools/published.py and here")


@pytest.mark.parametrize("official", published.OFFICIAL_FVCORE, ids=lambda c: c.tag)
def test_counts_equal_the_official_codes_by_the_stated_convention(official) -> None:
    row = ROWS[official.tag]
    assert row["family"] in published.CONVENTIONS
    for measured, ours in ((official.training, row), (official.deploy, row["deploy"])):
        if measured is None:
            continue
        converted = official_convention(official.tag, ours)
        if official.digits is None:
            assert converted == measured
        else:
            assert abs(converted - measured) <= 0.5 * 10 ** (9 - official.digits), official.tag


def test_recorded_differences_are_the_documented_ones() -> None:
    # the exact statements of benchmarks/models_cpu.md and the family READMEs
    a = ROWS["unireplknet_a.in1k"]["by_operator"]
    assert a["conv"] + a["dwconv2d"] == 192_674_880  # equals the official conv part
    assert ROWS["inceptionnext_tiny.sail_in1k"]["flops"] - 4_194_591_648 == 37_632
    s = ROWS["bevanet_s.cityscapes"]
    assert s["flops"] - 60_261_155_104 == 4 * 19 * 1024 * 2048


def test_markdown_is_the_rendering_of_the_record() -> None:
    text = (ROOT / "benchmarks" / "flops.md").read_text()
    assert text == flops_tool.render(RECORD["rows"], RECORD["meta"]), (
        "benchmarks/flops.md is stale: python tools/flops.py --render-only"
    )
    for family, statement in published.CONVENTIONS.items():
        assert f"- {family}: {statement}" in text
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}
    for official in published.OFFICIAL_FVCORE:  # every official count beside ours
        value = official.deploy if official.training is None else official.training
        assert published.format_official(value, official.digits) in rows[official.tag]
