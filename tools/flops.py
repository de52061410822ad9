"""Parameters and FLOPs of every registered zoo variant, next to the published numbers.

    python tools/flops.py                        # every variant and pretrained tag -> benchmarks/
    python tools/flops.py unireplknet_a mk_unet_b --input-size 3 512 512     # print only
    python tools/flops.py deeprftv2_b --update   # count one model into benchmarks/flops.json

Counting convention (also written at the top of benchmarks/flops.md):
- fvcore's `FlopCountAnalysis` of `model(x)` in eval mode, batch 1, at the pretrained tag's
  input size: 1 FLOP per multiply-add (what papers call MACs). Elementwise ops (activations,
  residual adds, gates, x.mean) count 0, as in fvcore.
- `zoo::dwconv2d` (every depthwise conv of the zoo): output numel x kh x kw, the same as fvcore's
  own conv handle on the equivalent `nn.Conv2d(groups=C)` (the handle of ops/dwconv/flops.py,
  which `import zoo` registers into fvcore's defaults).
- FFTs (`torch.fft.*`, which fvcore skips): 2.5 N log2 N per real transform (rfft / irfft) and
  5 N log2 N per complex one, N = points of the transformed dims, per plane (FFTW's operation
  count of a radix-2 transform, the usual estimate for FFT-based models).
- Selective scan (`zoo::selective_scan`) and any other op of `ops`: the fvcore handle its
  package declares (`FVCORE_HANDLES`; for the scan 9 B L D N, + B D L with D, + B D L with z:
  VMamba's formula of mamba's `flops_selective_scan_ref`).
- "params in forward": parameters of the modules `forward` runs (training-only heads excluded).

Published numbers and the official code's counts come from tools/published.py.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import platform
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import timm  # noqa: E402
from convert import family_of, has_deploy_form, zoo_models  # noqa: E402
from fvcore.nn import FlopCountAnalysis  # noqa: E402
from fvcore.nn.jit_handles import get_shape  # noqa: E402
from published import (  # noqa: E402
    CONVENTIONS,
    COSTS_BY_TAG,
    FLOP_CONVENTION,
    OFFICIAL_BY_TAG,
    format_official,
)
from timm.models._registry import get_arch_pretrained_cfgs  # noqa: E402

import zoo  # noqa: E402, F401  (registers the models and the zoo::dwconv2d fvcore handle)

OUT = Path(__file__).resolve().parents[1] / "benchmarks"


def _constant(value: torch._C.Value):
    """The Python value of a constant (or a list of constants) input of a traced node."""
    node = value.node()
    if node.kind() == "prim::ListConstruct":
        return [_constant(v) for v in node.inputs()]
    return value.toIValue()


def fft_flop_jit(real: str | None, default_dims: tuple[int, ...] | None):
    """fvcore handle of a torch.fft op. real: which side is real ("input" for rfft, "output"
    for irfft, None for complex transforms); default_dims: the op's dims when `dim` is None
    (None: every dim)."""

    def handle(inputs: list, outputs: list) -> int:
        shape = get_shape(outputs[0] if real == "output" else inputs[0])
        dims = _constant(inputs[2]) if len(inputs) > 2 else None
        if dims is None:
            dims = default_dims if default_dims is not None else range(len(shape))
        dims = [dims] if isinstance(dims, int) else dims
        n = math.prod(shape[d] for d in dims)
        planes = math.prod(shape) // n
        per_point = 2.5 if real else 5.0
        return int(planes * per_point * n * math.log2(n)) if n > 1 else 0

    return handle


_FFT_OPS = {
    "fft_rfft": ("input", (-1,)),
    "fft_irfft": ("output", (-1,)),
    "fft_fft": (None, (-1,)),
    "fft_ifft": (None, (-1,)),
    "fft_rfft2": ("input", (-2, -1)),
    "fft_irfft2": ("output", (-2, -1)),
    "fft_fft2": (None, (-2, -1)),
    "fft_ifft2": (None, (-2, -1)),
    "fft_rfftn": ("input", None),
    "fft_irfftn": ("output", None),
    "fft_fftn": (None, None),
    "fft_ifftn": (None, None),
}
FFT_HANDLES = {f"aten::{op}": fft_flop_jit(*spec) for op, spec in _FFT_OPS.items()}


def count(model: nn.Module, x: torch.Tensor) -> dict:
    """fvcore total, per-operator counts and the parameters `forward` uses (eval, no grad)."""
    model.eval()
    # the ops' handles are fvcore defaults once zoo is imported (ops.FVCORE_HANDLES); FFTs are
    # counted here by the stated formula
    analysis = FlopCountAnalysis(model, x).set_op_handle(**FFT_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit tracer warnings
        total = int(analysis.total())
    by_operator = {k: int(v) for k, v in sorted(analysis.by_operator().items()) if v}
    uncalled = analysis.uncalled_modules()
    unused = sum(p.numel() for n, p in model.named_parameters() if n.rsplit(".", 1)[0] in uncalled)
    params = sum(p.numel() for p in model.parameters())
    return dict(flops=total, by_operator=by_operator, params=params, params_forward=params - unused)


def tags(name: str) -> list[str]:
    return list(get_arch_pretrained_cfgs(name)) or [name]


def measure(tag: str, input_size: tuple[int, ...] | None = None) -> dict:
    """One row: the tag's model (training form and, where there is one, deploy form)."""
    model = timm.create_model(tag).eval()
    size = tuple(input_size or model.pretrained_cfg["input_size"])
    x = torch.randn(1, *size)
    row = dict(
        tag=tag,
        model=tag.split(".", 1)[0],
        family=family_of(model),
        input_size=size,
        num_classes=model.num_classes,
        **count(model, x),
    )
    row["deploy"] = None
    if has_deploy_form(model):
        deploy = zoo.reparameterize(copy.deepcopy(model))
        row["deploy"] = count(deploy, x)
    return row


def _g(flops: float | None, digits: int = 3) -> str:
    return "—" if flops is None else f"{flops / 1e9:.{digits}f}"


def _m(params: float | None) -> str:
    if params is None:
        return "—"
    return f"{params / 1e6:.3g} M" if params >= 1e5 else f"{params / 1e6:.3f} M"


def _official(row: dict) -> tuple[str, str]:
    """(the official code's fvcore count(s), ours minus it) at the measurement's precision."""
    official = OFFICIAL_BY_TAG.get(row["tag"])
    if official is None or tuple(row["input_size"]) != _cfg_size(row["tag"]):
        return "—", "—"
    texts, deltas = [], []
    for form, value in (("train", official.training), ("deploy", official.deploy)):
        ours = row["flops"] if form == "train" else (row["deploy"] or {}).get("flops")
        if value is None or ours is None:
            continue
        label = f"{form} " if official.deploy is not None else ""
        texts.append(label + format_official(value, official.digits))
        if official.digits is None:
            deltas.append(label + f"{ours - value:+,}")
        else:
            deltas.append(label + f"{(ours - value) / 1e9:+.{official.digits}f} G")
    return "; ".join(texts), "; ".join(deltas)


def _cfg_size(tag: str) -> tuple[int, ...]:
    return tuple(timm.models.get_pretrained_cfg(tag).input_size)


def render(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Parameters and FLOPs of every zoo variant",
        "",
        "Generated by `python tools/flops.py` (do not edit by hand).",
        "",
        f"- FLOPs: {FLOP_CONVENTION}, fvcore's `FlopCountAnalysis` of `model(x)` in eval mode, "
        "batch 1, at the pretrained tag's input size; elementwise ops (activations, adds, "
        "gates, `x.mean`) count 0.",
        "- `zoo::dwconv2d` (every depthwise conv): output numel x kh x kw, as fvcore counts the "
        "equivalent `nn.Conv2d(groups=C)`.",
        "- FFTs: 2.5 N log2 N per real transform (rfft/irfft), 5 N log2 N per complex one, "
        "N = points of the transformed dims, per plane. Selective scan: 9 B L D N (+ B D L "
        "with D, + B D L with z). No variant below uses either yet.",
        "- params: all parameters as built by `timm.create_model(tag)`; in forward: those of "
        "the modules `model(x)` runs (training-only heads excluded). deploy: after "
        "`zoo.reparameterize` (families that have a deploy form).",
        "- published: paper or official README (see the source); official code: fvcore on the "
        "official implementation, measured when the family was ported, at the precision "
        "measured; ours - official is explained per family below the table.",
        f"- {meta['date']}; torch {meta['torch']}, timm {meta['timm']}, fvcore {meta['fvcore']}, "
        f"python {meta['python']}; command: `{meta['command']}`",
        "",
        "| tag | input | classes | params | params in forward | params deploy | GFLOPs "
        "| GFLOPs deploy | published params | published GFLOPs | official code (fvcore) "
        "| ours - official | source of published |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cost = COSTS_BY_TAG.get(r["tag"])
        deploy = r["deploy"] or {}
        official, delta = _official(r)
        pub_flops = cost and cost.flops
        deploy_params = f"{deploy['params']:,}" if deploy else "—"
        lines.append(
            f"| {r['tag']} | {'x'.join(map(str, r['input_size'][1:]))} | {r['num_classes']} "
            f"| {r['params']:,} | {r['params_forward']:,} "
            f"| {deploy_params} | {_g(r['flops'], 4)} "
            f"| {_g(deploy.get('flops'), 4)} | {_m(cost and cost.params)} "
            f"| {_g(pub_flops, 3 if pub_flops and pub_flops < 1e10 else 1)} "
            f"| {official} | {delta} "
            f"| {f'{cost.source} ({cost.note})' if cost else '—'} |"
        )
    lines += ["", "How our count differs from fvcore on the official code:", ""]
    for family in dict.fromkeys(r["family"] for r in rows):
        if family in CONVENTIONS:
            lines.append(f"- {family}: {CONVENTIONS[family]}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="timm names or tags (default: every variant)")
    parser.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"))
    parser.add_argument(
        "--out", help="folder for flops.md/.json (default: benchmarks/ for a full default run)"
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="count only MODELs and merge them into benchmarks/flops.json (a new variant)",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite benchmarks/flops.md from flops.json (after a change of tools/published.py)",
    )
    args = parser.parse_args(argv)
    if args.update and args.input_size:
        parser.error("--update records at each tag's input size: drop --input-size")
    if args.render_only:
        record = json.loads((OUT / "flops.json").read_text())
        (OUT / "flops.md").write_text(render(record["rows"], record["meta"]))
        print(f"wrote {OUT / 'flops.md'} from {OUT / 'flops.json'}")
        return 0
    unknown = [m for m in args.models if not timm.is_model(m)]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; zoo models: {', '.join(zoo_models())}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = [t for m in args.models for t in ([m] if "." in m else tags(m))] or [
        t for m in zoo_models() for t in tags(m)
    ]
    meta = dict(
        date=f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d}",
        torch=torch.__version__,
        timm=timm.__version__,
        fvcore=version("fvcore"),
        python=platform.python_version(),
        command=" ".join(["python tools/flops.py", *(sys.argv[1:] if argv is None else argv)]),
        flop_convention=FLOP_CONVENTION,
    )
    rows = []
    for tag in names:
        print(f"{tag} ...", flush=True)
        rows.append(measure(tag, tuple(args.input_size) if args.input_size else None))
    if args.update:  # merge into the record, in registry order (e.g. a new family's variants)
        record = json.loads((OUT / "flops.json").read_text())
        merged = {r["tag"]: r for r in record["rows"]} | {r["tag"]: r for r in rows}
        order = [t for m in zoo_models() for t in tags(m)]
        rows = [merged[t] for t in order if t in merged]
        meta["command"] = f"{record['meta']['command']}; {meta['command']}"
    text = render(rows, meta)
    print("\n" + text)
    out = args.out or (None if (args.models or args.input_size) and not args.update else OUT)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "flops.md").write_text(text)
        (out / "flops.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1) + "\n")
        print(f"wrote {out / 'flops.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
