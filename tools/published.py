"""Published numbers of the zoo's models, as data, with their sources: one place for every tool.

Three kinds of numbers, each keyed by a timm pretrained tag (`model.tag`, whose pretrained cfg
carries the input size and class count the number was measured at) or a model name:

- `RESULTS`: accuracy / mIoU / Dice as published (paper table or official README), one entry
  per number, with the dataset, the resolution and the source.
- `COSTS`: parameters and FLOPs as published (1 FLOP per multiply-add, the papers' "MACs"),
  with the resolution and how the authors counted where it is known.
- `OFFICIAL_FVCORE`: fvcore's count of the OFFICIAL implementation, measured when each family
  was ported (on the official code, the same random weights); `CONVENTIONS` says, per family,
  exactly how our
  fvcore count differs from it. tests/test_flops_tool.py checks those statements.

A family that is not listed here still gets rows in the tables (without published numbers).
Sources: the papers' tables and the official READMEs, named per entry.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOP_CONVENTION = "fvcore, 1 FLOP per multiply-add"


@dataclass(frozen=True)
class Result:
    tag: str  # timm name with pretrained tag: the weights the number belongs to
    metric: str  # e.g. "top-1 (%)", "mIoU (%)", "Dice (%)"
    value: float
    dataset: str
    source: str


@dataclass(frozen=True)
class Cost:
    tag: str
    params: float | None  # as published (rounded as published)
    flops: float | None  # as published, 1 per multiply-add
    source: str
    note: str = ""


@dataclass(frozen=True)
class OfficialCount:
    """fvcore total of the official model (batch 1, the tag's input size), as measured."""

    tag: str
    training: float | None  # training form (or the only form); None: not measured
    deploy: float | None  # deploy form where the family has one
    digits: int | None  # the measurement's precision in decimals of GFLOPs; None: exact
    source: str


_URLK_README = "UniRepLKNet official README (ImageNet-1K table)"
_URLK_README_22K = "UniRepLKNet official README (ImageNet-22K -> 1K table, 384x384)"
_INX_README = "InceptionNeXt official README table (= paper Table 4)"
_MKU_3P = "third-party quote of the MK-UNet paper Table 1"
_BEVA_README = "BEVANet official README"

RESULTS: tuple[Result, ...] = (
    # UniRepLKNet: the README's one-decimal numbers; the checkpoint names carry two decimals
    Result("unireplknet_a.in1k", "top-1 (%)", 77.0, "ImageNet-1K val", _URLK_README),
    Result("unireplknet_f.in1k", "top-1 (%)", 78.6, "ImageNet-1K val", _URLK_README),
    Result("unireplknet_p.in1k", "top-1 (%)", 80.2, "ImageNet-1K val", _URLK_README),
    Result("unireplknet_n.in1k", "top-1 (%)", 81.6, "ImageNet-1K val", _URLK_README),
    Result("unireplknet_t.in1k", "top-1 (%)", 83.2, "ImageNet-1K val", _URLK_README),
    Result("unireplknet_s.in1k", "top-1 (%)", 83.9, "ImageNet-1K val", _URLK_README),
    Result(
        "unireplknet_s.in22k_ft_in1k_384", "top-1 (%)", 86.4, "ImageNet-1K val", _URLK_README_22K
    ),
    Result(
        "unireplknet_b.in22k_ft_in1k_384", "top-1 (%)", 87.4, "ImageNet-1K val", _URLK_README_22K
    ),
    Result(
        "unireplknet_l.in22k_ft_in1k_384", "top-1 (%)", 87.9, "ImageNet-1K val", _URLK_README_22K
    ),
    Result(
        "unireplknet_xl.in22k_ft_in1k_384", "top-1 (%)", 88.0, "ImageNet-1K val", _URLK_README_22K
    ),
    Result("inceptionnext_atto.sail_in1k", "top-1 (%)", 75.3, "ImageNet-1K val", _INX_README),
    Result("inceptionnext_tiny.sail_in1k", "top-1 (%)", 82.3, "ImageNet-1K val", _INX_README),
    Result("inceptionnext_small.sail_in1k", "top-1 (%)", 83.5, "ImageNet-1K val", _INX_README),
    Result("inceptionnext_base.sail_in1k", "top-1 (%)", 84.0, "ImageNet-1K val", _INX_README),
    Result("inceptionnext_base_384.sail_in1k", "top-1 (%)", 85.2, "ImageNet-1K val", _INX_README),
    # MK-UNet: no official weights or README numbers; the paper's Table 1 as quoted by third
    # parties (means of 5 runs, 80:10:10 splits)
    Result("mk_unet_t", "Dice (%)", 91.26, "CVC-ClinicDB", _MKU_3P + " (niloycste/MK-UNET-paper)"),
    Result("mk_unet_t", "Dice (%)", 75.64, "BUSI", _MKU_3P + " (niloycste/MK-UNET-paper)"),
    Result("mk_unet_t", "mean Dice of 6 (%)", 87.87, "6 datasets", _MKU_3P + " (niloycste)"),
    Result("mk_unet_s", "mean Dice of 6 (%)", 89.10, "6 datasets", _MKU_3P + " (niloycste)"),
    Result("mk_unet_b", "Dice (%)", 93.48, "CVC-ClinicDB", _MKU_3P + " (four independent quotes)"),
    Result("mk_unet_b", "Dice (%)", 90.01, "CVC-ColonDB", _MKU_3P + " (GAD-MambaUNet table)"),
    Result("mk_unet_b", "mean Dice of 6 (%)", 89.75, "6 datasets", _MKU_3P + " (niloycste)"),
    Result(
        "mk_unet_m", "Dice (%)", 93.67, "CVC-ClinicDB", _MKU_3P + " (yateendogra2109/MK-UNet-final)"
    ),
    Result(
        "mk_unet_l", "Dice (%)", 93.85, "CVC-ClinicDB", _MKU_3P + " (yateendogra2109/MK-UNet-final)"
    ),
    Result("mk_unet_l", "Dice (%)", 91.82, "CVC-ColonDB", _MKU_3P + " (GAD-MambaUNet table)"),
    Result("bevanet_s.cityscapes", "mIoU (%)", 78.2, "Cityscapes val", _BEVA_README),
    Result("bevanet_s.camvid", "mIoU (%)", 83.1, "CamVid", _BEVA_README),
    Result(
        "bevanet_b.cityscapes",
        "mIoU (%)",
        81.0,
        "Cityscapes val",
        _BEVA_README + " (ImageNet-pretrained; 79.3 from scratch, abstract)",
    ),
    Result("bevanet_b.ade20k", "mIoU (%)", 39.8, "ADE20K val", _BEVA_README),
)

COSTS: tuple[Cost, ...] = (
    Cost("unireplknet_a.in1k", 4.4e6, 0.6e9, _URLK_README, "deploy-form counts"),
    Cost("unireplknet_f.in1k", 6.2e6, 0.9e9, _URLK_README, "deploy-form counts"),
    Cost("unireplknet_p.in1k", 10.7e6, 1.6e9, _URLK_README, "deploy-form counts"),
    Cost("unireplknet_n.in1k", 18.3e6, 2.8e9, _URLK_README, "deploy-form counts"),
    Cost("unireplknet_t.in1k", 31e6, 4.9e9, _URLK_README, "deploy-form counts"),
    Cost("unireplknet_s.in1k", 56e6, 9.1e9, _URLK_README, "deploy-form counts"),
    Cost("unireplknet_s.in22k_ft_in1k_384", 56e6, 26.7e9, _URLK_README_22K, "deploy form"),
    Cost("unireplknet_b.in22k_ft_in1k_384", 98e6, 47.2e9, _URLK_README_22K, "deploy form"),
    Cost("unireplknet_l.in22k_ft_in1k_384", 218e6, 105.4e9, _URLK_README_22K, "deploy form"),
    Cost("unireplknet_xl.in22k_ft_in1k_384", 386e6, 187e9, _URLK_README_22K, "deploy form"),
    Cost("inceptionnext_atto.sail_in1k", 4.2e6, 0.51e9, _INX_README, "'MACs'"),
    Cost("inceptionnext_tiny.sail_in1k", 28e6, 4.2e9, _INX_README, "'MACs'"),
    Cost("inceptionnext_small.sail_in1k", 49e6, 8.4e9, _INX_README, "'MACs'"),
    Cost("inceptionnext_base.sail_in1k", 87e6, 14.9e9, _INX_README, "'MACs'"),
    Cost("inceptionnext_base_384.sail_in1k", 87e6, 43.6e9, _INX_README, "'MACs'"),
    Cost("mk_unet_t", 0.027e6, 0.062e9, _MKU_3P, "ptflops module hooks (see conventions)"),
    Cost(
        "mk_unet_b",
        0.316e6,
        0.314e9,
        "MK-UNet paper abstract",
        "ptflops module hooks: 313,757,368 on the official model",
    ),
    Cost("mk_unet_m", 1.15e6, 0.951e9, _MKU_3P, "ptflops module hooks"),
    Cost("mk_unet_l", 3.76e6, 3.19e9, _MKU_3P, "ptflops module hooks"),
    Cost(
        "bevanet_s.cityscapes",
        15.2e6,
        None,
        _BEVA_README,
        "params with the training heads; no Cityscapes FLOPs published",
    ),
    Cost("bevanet_s.camvid", 15.2e6, 20.1e9, _BEVA_README, "CamVid, 720x960"),
    Cost("bevanet_b.cityscapes", 58.6e6, None, _BEVA_README, "params of the inference model"),
    Cost("bevanet_b.ade20k", 58.9e6, None, _BEVA_README, "params with the training heads"),
)

_URLK_MEAS = "fvcore on the official unireplknet.py, measured when the family was ported"
_INX_MEAS = "fvcore on the official models/inceptionnext.py, measured when ported"
_MKU_MEAS = "fvcore on the official mkunet_network.py, measured when ported"
_BEVA_MEAS = "fvcore on the official inference model, measured when ported"

OFFICIAL_FVCORE: tuple[OfficialCount, ...] = (
    OfficialCount("unireplknet_a.in1k", 0.682e9, 0.640e9, 3, _URLK_MEAS),
    OfficialCount("unireplknet_f.in1k", 0.955e9, 0.906e9, 3, _URLK_MEAS),
    OfficialCount("unireplknet_p.in1k", 1.640e9, 1.574e9, 3, _URLK_MEAS),
    OfficialCount("unireplknet_n.in1k", 2.865e9, 2.768e9, 3, _URLK_MEAS),
    OfficialCount("unireplknet_t.in1k", 5.028e9, 4.901e9, 3, _URLK_MEAS),
    OfficialCount("unireplknet_s.in1k", 9.252e9, 9.097e9, 3, _URLK_MEAS),
    OfficialCount("unireplknet_s.in22k_ft_in1k_384", None, 26.728e9, 3, _URLK_MEAS),
    OfficialCount("unireplknet_b.in22k_ft_in1k_384", None, 47.190e9, 3, _URLK_MEAS),
    OfficialCount("unireplknet_l.in22k_ft_in1k_384", None, 105.442e9, 3, _URLK_MEAS),
    OfficialCount("unireplknet_xl.in22k_ft_in1k_384", None, 186.800e9, 3, _URLK_MEAS),
    OfficialCount("inceptionnext_atto.sail_in1k", 504_921_440, None, None, _INX_MEAS),
    OfficialCount("inceptionnext_tiny.sail_in1k", 4_194_591_648, None, None, _INX_MEAS),
    OfficialCount("inceptionnext_small.sail_in1k", 8_364_348_960, None, None, _INX_MEAS),
    OfficialCount("inceptionnext_base.sail_in1k", 14_852_627_840, None, None, _INX_MEAS),
    OfficialCount("inceptionnext_base_384.sail_in1k", 43_636_454_400, None, None, _INX_MEAS),
    OfficialCount("mk_unet_t", 0.0597e9, None, 4, _MKU_MEAS),
    OfficialCount("mk_unet_s", 0.1213e9, None, 4, _MKU_MEAS),
    OfficialCount("mk_unet_b", 0.3087e9, None, 4, _MKU_MEAS),
    OfficialCount("mk_unet_m", 0.9425e9, None, 4, _MKU_MEAS),
    OfficialCount("mk_unet_l", 3.1795e9, None, 4, _MKU_MEAS),
    # S exactly (README's BEVANet section; the spec rounds it to 60.26 G), up to the 1/8 logits
    OfficialCount("bevanet_s.cityscapes", 60_261_155_104, None, None, _BEVA_MEAS),
    OfficialCount("bevanet_sw.cityscapes_untrained", 228.15e9, None, 2, _BEVA_MEAS),
    OfficialCount("bevanet_b.cityscapes", 237.82e9, None, 2, _BEVA_MEAS),
    OfficialCount("bevanet_l.cityscapes_untrained", 276.73e9, None, 2, _BEVA_MEAS),
    OfficialCount("bevanet_s.camvid", 20.00e9, None, 2, _BEVA_MEAS),
    OfficialCount("bevanet_b.ade20k", 29.80e9, None, 2, _BEVA_MEAS),
)

# How our fvcore count differs from fvcore on the official code, per family (zoo.models module
# name). Each statement is an exact identity, checked by tests/test_flops_tool.py.
CONVENTIONS: dict[str, str] = {
    "unireplknet": (
        "official = ours - stem/downsample LayerNorms + SE pooling - head pooling: fvcore counts "
        "our F.layer_norm (5 per element) but not the official hand-written channels-first "
        "LayerNorm; it counts the official SE's adaptive_avg_pool2d (1 per input element) but "
        "not our SE's x.mean, and our head's adaptive pool (C x h x w) but not the official "
        "head's x.mean. Convs (conv + dwconv2d) and linears are equal."
    ),
    "inceptionnext": (
        "official = ours - C x h x w of the head's pooling: our head pools with "
        "adaptive_avg_pool2d (counted, like timm's inception_next_*), the official one with "
        "x.mean (not counted)."
    ),
    "mkunet": (
        "official = ours + the channel attentions' average pools (one per input element): the "
        "official CBAM uses nn.AdaptiveAvgPool2d (counted), ours x.mean (not counted). The "
        "paper's FLOPs are ptflops module hooks on the official model (0.3138 G for B), which "
        "also count ReLU6/ReLU, the max pools and the discarded deep-supervision heads, and "
        "skip F.interpolate."
    ),
    "bevanet": (
        "official = ours - the final bilinear resize of the logits to the input size (fvcore: "
        "4 per output element), which our forward() does and the official model leaves to "
        "the caller."
    ),
}


def _index(items: tuple, key: str = "tag") -> dict:
    out: dict = {}
    for item in items:
        out.setdefault(getattr(item, key), []).append(item)
    return out


RESULTS_BY_TAG: dict[str, list[Result]] = _index(RESULTS)
COSTS_BY_TAG: dict[str, Cost] = {c.tag: c for c in COSTS}
OFFICIAL_BY_TAG: dict[str, OfficialCount] = {c.tag: c for c in OFFICIAL_FVCORE}


def model_of(tag: str) -> str:
    return tag.split(".", 1)[0]


def format_official(value: float, digits: int | None) -> str:
    """An official-code count at the precision it was measured."""
    return f"{int(value):,}" if digits is None else f"{value / 1e9:.{digits}f} G"


def _official_text(tag: str) -> str:
    count = OFFICIAL_BY_TAG.get(tag)
    if count is None:
        return ""
    forms = [("training ", count.training), ("deploy ", count.deploy)]
    if count.deploy is None:
        forms = [("", count.training)]
    values = ", ".join(
        f"{form}{format_official(value, count.digits)}" for form, value in forms if value
    )
    return f"{count.source}: {values}"


def paper_flops(model: str) -> tuple[float, str] | None:
    """(published FLOPs, how they were counted + the official-code count) for a model's default
    tag, or None: the `PAPER_FLOPS` entries of tools/benchmark_models.py."""
    import timm.models

    tag = timm.models.get_pretrained_cfg(model).tag if "." not in model else model
    tag = f"{model_of(model)}.{tag}" if tag else model_of(model)
    cost = COSTS_BY_TAG.get(tag)
    if cost is None or cost.flops is None:
        return None
    how = "; ".join(t for t in (f"{cost.source}, {cost.note}", _official_text(tag)) if t)
    return cost.flops, how


# Where a family's official weights are, when its pretrained cfgs name no file.
CHECKPOINT_NOTES: dict[str, str] = {
    "mkunet": "none published (official code only)",
    "bevanet": "Google Drive links in the official README (no file names; the official "
    "training saves `best.pt` under its FullModel wrapper, which tools/convert.py reads)",
    "deeprftv2": "none published (official code only; basicsr's `net_g_*.pth` files load as "
    "they are)",
}
