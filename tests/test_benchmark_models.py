"""tools/benchmark_models.py: FLOP counting of the zoo's custom depthwise op (fvcore's default
handles, from `import zoo`), checked by hand;
the default model selection, derived from the registry."""

import sys
from pathlib import Path

import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis

import zoo
from ops import DepthwiseConv2d

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from benchmark_models import (  # noqa: E402
    PAPER_FLOPS,
    count_flops,
    create_kwargs,
    default_models,
    family_of,
)


class CustomOpConv(nn.Module):
    """Calls the registered op directly, as traced graphs (compile, export) see it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 1, 5, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.zoo.dwconv2d(x, self.weight, None, [2, 1], [1, 1], "auto")


def test_fvcore_counts_the_op_out_of_the_box_as_taps_times_output_numel() -> None:
    flops = FlopCountAnalysis(CustomOpConv(), torch.randn(2, 6, 10, 12))
    flops.unsupported_ops_warnings(False)
    assert flops.total() == 2 * 6 * 10 * 12 * 5 * 3


def test_count_flops_counts_every_depthwise_conv_once() -> None:
    model = nn.Sequential(
        DepthwiseConv2d(8, 13, bias=False),
        DepthwiseConv2d(8, 3, padding=3, dilation=3, bias=False),
        nn.Conv2d(8, 4, 1, bias=False),
    )
    expected = 8 * 16 * 16 * (13 * 13 + 3 * 3) + 4 * 8 * 16 * 16
    assert count_flops(model, (8, 16, 16)) == expected


def test_default_models_are_one_per_family_published_flops_first(monkeypatch) -> None:
    names = default_models()
    assert [family_of(n) for n in names] == list(zoo.models.FAMILIES)
    # every family has a published count today but DeepRFTv2 (its paper's tables could not
    # be retrieved: README), which gets its smallest model
    assert all(n in PAPER_FLOPS for n in names if family_of(n) != "deeprftv2")
    assert "deeprftv2_s" in names
    # a family without published FLOPs gets its smallest model, without editing the tool
    monkeypatch.setattr(zoo.models, "FAMILIES", (*zoo.models.FAMILIES, "inception_next"))
    assert default_models()[-1] == "inception_next_atto"


def test_bevanet_is_benchmarked_as_its_inference_graph_whatever_its_size() -> None:
    assert {n: create_kwargs(n) for n in ("bevanet_s", "bevanet_l", "mk_unet_b")} == {
        "bevanet_s": {"aux_heads": False},
        "bevanet_l": {"aux_heads": False},
        "mk_unet_b": {},
    }
