"""benchmarks/triton_sm90_static.md from two `--json` outputs of the sm_90 report tool
(`../shared/tools/triton_sm90_report.py tools/triton_sm90_scenarios.py --json OUT.json`): the
depthwise op's Triton launches before and after a change, per scenario label.

    python tools/triton_sm90_static.py BEFORE.json AFTER.json --before-rev 5b5c78e \
        --after-rev HEAD > benchmarks/triton_sm90_static.md

Per launch: registers, spills, shared memory (compiled facts, from ptxas), the hot loop's
instruction mix and FMA per instruction (compiled facts, from SASS), the tool's ceiling estimate,
and the useful fraction of the executed math: useful MACs (2 N C Ho Wo kh kw FLOPs per call, as
the scenarios count, split over the call's launches) over the MACs the launch executes,
computed here from the launch's grid, tile constexprs and loop bounds (every lane of a tile
counts, masked or not, and every tap or band column the loops visit). The useful ceiling is
min(fraction x min(issue, L1, tensor), HBM) - the HBM bound is already per useful FLOP.
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _live(lo_pad: int, size: int, out: int, t0: int, tile: int, dil: int, k: int) -> int:
    """Kernel taps [lo, hi) reaching the map for outputs [t0, min(t0 + tile, out)), as the
    kernels clip them (input = output - lo_pad + tap dil)."""
    last = min(t0 + tile, out) - 1
    lo = (max(lo_pad - last, 0) + dil - 1) // dil
    hi = min((max(size - 1 + lo_pad - t0, -1) + dil) // dil, k)
    return max(hi - lo, 0)


def _direct(v):  # _direct_kernel: one (image, tile) x channel block per program
    ho, wo, th, tw = v["HO"], v["WO"], v["TILE_H"], v["TILE_W"]
    per_image = 0
    for oh0 in range(0, ho, th):
        rows = _live(v["pad_h"], v["H"], ho, oh0, th, v["dil_h"], v["KH"])
        for ow0 in range(0, wo, tw):
            cols = _live(v["pad_w"], v["W"], wo, ow0, tw, v["dil_w"], v["KW"])
            rows_run = _cdiv(rows, v["TAP_H"]) * v["TAP_H"] if rows else 0
            cols_run = _cdiv(cols, v["TAP_W"]) * v["TAP_W"] if cols else 0
            per_image += (
                v["BLOCK_P"]
                * v["BLOCK_C"]
                * rows_run
                * cols_run
                * v["BLOCK_T"]
                // (v["TAP_H"] * v["TAP_W"])
            )
    images = v["grid"][0] // (_cdiv(ho, th) * _cdiv(wo, tw))
    return per_image * images * v["grid"][1]


def _slide_forward(v):
    ho, wo, th, tw = v["HO"], v["WO"], v["TILE_H"], v["TILE_W"]
    per_image = 0
    for oh0 in range(0, ho, th):
        rows = _live(-v["off_h"], v["H"], ho, oh0, th, v["dil_h"], v["KH"])
        per_image += _cdiv(wo, tw) * rows * v["W_CHUNKS"] * v["TAP_W"] * th * tw * v["BLOCK_C"]
    return per_image * v["N"] * _cdiv(v["C"], v["BLOCK_C"])


def _slide_weight_grad(v):
    tiles = _cdiv(v["HO"], v["TILE_H"]) * _cdiv(v["WO"], v["TILE_W"])
    per_program_image = tiles * v["TILE_H"] * v["TILE_W"] * v["BLOCK_C"] * v["BLOCK_T"]
    return v["grid"][0] * v["N"] * per_program_image  # the splits share the images


def _weight_grad(v):  # the masked weight-grad kernel (before, and fp16/bf16 small kernels)
    total = 0
    chunks_w = v["tap_chunks_w"]
    chunks_h = v["grid"][0] // chunks_w
    for ch in range(chunks_h):
        th0 = v["kh_first"] + ch * v["TAP_H"]
        for cw in range(chunks_w):
            tw0 = v["kw_first"] + cw * v["TAP_W"]
            oh_lo = max(v["pad_h"] - (min(th0 + v["TAP_H"], v["KH"]) - 1) * v["dil_h"], 0)
            oh_hi = min(v["H"] + v["pad_h"] - th0 * v["dil_h"], v["HO"])
            ow_lo = max(v["pad_w"] - (min(tw0 + v["TAP_W"], v["KW"]) - 1) * v["dil_w"], 0)
            ow_hi = min(v["W"] + v["pad_w"] - tw0 * v["dil_w"], v["WO"])
            tiles = _cdiv(max(oh_hi - oh_lo, 0), v["TILE_H"]) * _cdiv(
                max(ow_hi - ow_lo, 0), v["TILE_W"]
            )
            total += v["N"] * tiles * v["BLOCK_P"] * v["BLOCK_C"] * v["BLOCK_T"]
    return total * v["grid"][1]


def _row_toeplitz(v):  # before: NCHW fp16/bf16 forward, [BLOCK_M rows, BLOCK_N cols] per program
    per_image = 0
    for oh0 in range(0, v["HO"], v["BLOCK_M"]):
        rows = _live(v["pad_h"], v["H"], v["HO"], oh0, v["BLOCK_M"], v["dil_h"], v["KH"])
        per_image += _cdiv(v["WO"], v["BLOCK_N"]) * rows
    tiles = _cdiv(v["HO"], v["BLOCK_M"]) * _cdiv(v["WO"], v["BLOCK_N"])
    images = v["grid"][0] // tiles
    return per_image * images * v["grid"][1] * v["BLOCK_M"] * v["BLOCK_N"] * v["BLOCK_K"]


def _row_toeplitz_weight_grad(v):
    total = 0
    for r in range(v["grid"][0]):
        i = v["kh_first"] + r
        oh_lo = max(v["pad_h"] - i * v["dil_h"], 0)
        oh_hi = min(v["H"] + v["pad_h"] - i * v["dil_h"], v["HO"])
        ow_lo = max(v["pad_w"] - (v["KW"] - 1) * v["dil_w"], 0)
        ow_hi = min(v["W"] + v["pad_w"], v["WO"])
        tiles = _cdiv(max(oh_hi - oh_lo, 0), v["BLOCK_M"]) * _cdiv(
            max(ow_hi - ow_lo, 0), v["BLOCK_N"]
        )
        total += v["N"] * tiles
    return total * v["grid"][1] * v["BLOCK_M"] * v["BLOCK_N"] * v["BLOCK_K"]


def _tc_forward(v):
    m = v["IMG"] * v["BLOCK_H"]
    per_group = 0
    for r0 in range(0, v["HO"], v["BLOCK_H"]):
        rows = _live(v["pad_h"], v["H"], v["HO"], r0, v["BLOCK_H"], v["dil_h"], v["KH"])
        per_group += v["col_tiles"] * rows
    groups = _cdiv(v["N"], v["IMG"])
    return per_group * groups * v["grid"][1] * m * v["BLOCK_N"] * v["BLOCK_K"]


def _tc_weight_grad(v):
    m = v["IMG"] * v["BLOCK_H"]
    total = 0
    for r in range(v["grid"][0]):
        i = v["kh_first"] + r
        oh_lo = max(v["pad_h"] - i * v["dil_h"], 0)
        oh_hi = min(v["H"] + v["pad_h"] - i * v["dil_h"], v["HO"])
        row_tiles = len(range(oh_lo, oh_hi, v["BLOCK_H"]))
        total += row_tiles * _cdiv(v["WO"], v["BLOCK_N"]) * _cdiv(v["N"], v["IMG"])
    return total * v["grid"][1] * m * v["BLOCK_N"] * v["BLOCK_K"]


EXECUTED = {
    "_direct_kernel": _direct,
    "_slide_forward_kernel": _slide_forward,
    "_slide_weight_grad_kernel": _slide_weight_grad,
    "_weight_grad_kernel": _weight_grad,
    "_row_toeplitz_kernel": _row_toeplitz,
    "_row_toeplitz_weight_grad_kernel": _row_toeplitz_weight_grad,
    "_tc_forward_kernel": _tc_forward,
    "_tc_weight_grad_kernel": _tc_weight_grad,
}


def _values(launch) -> dict:
    v = {}
    for source in (launch.get("scalars", {}), launch.get("constexprs", {})):
        for name, text in source.items():
            try:
                v[name] = int(text)
            except ValueError:
                v[name] = text
    v["grid"] = launch["grid"]
    return v


def useful_fraction(launch) -> tuple[float | None, str]:
    """(useful / executed MACs, the arithmetic), or (None, why) for kernels not modelled."""
    fn = EXECUTED.get(launch["kernel"])
    useful = (launch.get("estimate") or {}).get("useful_flops")
    if fn is None or not useful:
        return None, "not modelled"
    try:
        executed = fn(_values(launch))
    except KeyError as missing:
        return None, f"launch lacks {missing}"
    if executed == 0:
        return None, "no math"
    f = useful / 2 / executed
    return f, f"{useful / 2e9:.3g} G useful / {executed / 1e9:.3g} G executed MACs"


def _useful_ceiling(est, f):
    if f is None or not est:
        return None
    math_bound = min(b for b in (est.get("issue"), est.get("l1"), est.get("tensor")) if b)
    hbm = est.get("hbm") or math.inf
    return min(f * math_bound, hbm)


def _mix(hot) -> str:
    if not hot:
        return "-"
    c = hot.get("classes", {})
    parts = [f"{hot['instructions']} instr"]
    for key, name in (
        ("math", "math"),
        ("mma", "mma"),
        ("ldg", "LDG"),
        ("shm", "shm"),
        ("tma", "TMA"),
        ("bar", "bar"),
        ("int", "int"),
        ("pred", "pred"),
    ):
        if c.get(key):
            parts.append(f"{c[key]} {name}")
    return ", ".join(parts)


def _fmt(x, digits=1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def rows(report) -> dict:
    out = {}
    for launch in report["launches"]:
        est = launch.get("estimate") or {}
        hot = launch.get("hot") or {}
        f, arithmetic = useful_fraction(launch)
        out.setdefault(launch["label"], []).append(
            dict(
                kernel=launch["kernel"],
                regs=launch.get("regs"),
                spills=launch.get("spills"),
                smem=launch.get("shared"),
                mix=_mix(hot),
                fma_instr=hot.get("fma_per_instr"),
                ceiling=est.get("ceiling"),
                limiter=est.get("limiter"),
                fraction=f,
                arithmetic=arithmetic,
                useful_ceiling=_useful_ceiling(est, f),
            )
        )
    return out


HEAD = (
    "| label | kernel | regs | spill B | smem B | hot loop (warp-instr / iteration) | FMA/instr "
    "| ceiling est (limiter) | useful / executed | useful ceiling est |"
)


def _line(label, r) -> str:
    frac = "-" if r["fraction"] is None else f"{r['fraction']:.2f} ({r['arithmetic']})"
    return (
        f"| {label} | {r['kernel']} | {r['regs']} | {r['spills']} | {r['smem']} | {r['mix']} "
        f"| {_fmt(r['fma_instr'], 2)} | {_fmt(r['ceiling'])} ({r['limiter']}) | {frac} "
        f"| {_fmt(r['useful_ceiling'])} |"
    )


def render(before, after, before_rev: str, after_rev: str, notes: str = "") -> str:
    b, a = rows(before), rows(after)
    issue_labels = [
        f"{d}_{lay}_k{k}_{dr}"
        for d in ("fp32", "bf16")
        for lay in ("nchw", "cl")
        for k in (13, 31)
        for dr in ("fwd", "dgrad", "wgrad")
    ]
    lines = [
        "# Depthwise-conv Triton kernels compiled for sm_90 (H100): before and after",
        "",
        f"- before: revision {before_rev}; after: revision {after_rev}; both compiled by "
        "`../shared/tools/triton_sm90_report.py tools/triton_sm90_scenarios.py --json ...` "
        f"(triton {after.get('triton')}, target sm_{after.get('arch')}), the same scenario file "
        "(launchers on meta tensors; nothing ran on a GPU). Table made by "
        "`tools/triton_sm90_static.py`.",
        "- **Compiled facts** (read from ptxas and the SASS): regs, spill bytes, shared memory, "
        "the hot loop's warp-instructions per iteration by class, FMA per instruction.",
        "- **Estimates** (the tool's model, not timings): `ceiling est` = min(issue bound, "
        "L1/shared wavefront bound, tensor-core peak, HBM bound) in TFLOP/s, counting all the "
        "math the hot loop executes as useful. `useful / executed` is computed here from each "
        "launch's grid, tile constexprs and loop bounds (masked lanes, taps outside the live "
        "window, band zeros of the Toeplitz kernels and pixels past the map count as executed); "
        "useful = 2 N C Ho Wo kh kw per call (padding taps included, as every TFLOP/s we quote), "
        "so a kernel that skips padding-only taps can exceed 1. `useful ceiling est` = "
        "min(fraction x min(issue, L1, tensor), HBM). Only a GPU run measures "
        "(`make gpu-check`).",
        "",
        *([notes.rstrip("\n"), ""] if notes else []),
        "## The issue's labels, x = (64, 384, 32, 32), side by side",
        "",
        "| label | before: kernel | before: ceiling est | before: useful ceiling est "
        "| after: kernel | after: ceiling est | after: useful ceiling est | after: spills |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label in issue_labels:
        rb, ra = b.get(label, [{}])[0], a.get(label, [{}])[0]
        lines.append(
            f"| {label} | {rb.get('kernel', '-')} | {_fmt(rb.get('ceiling'))} "
            f"| {_fmt(rb.get('useful_ceiling'))} | {ra.get('kernel', '-')} "
            f"| {_fmt(ra.get('ceiling'))} | {_fmt(ra.get('useful_ceiling'))} "
            f"| {ra.get('spills', '-')} |"
        )
    for title, table, rev in (("After", a, after_rev), ("Before", b, before_rev)):
        lines += ["", f"## {title} ({rev}): every launch", "", HEAD, "|---" * 10 + "|"]
        for label, launches in table.items():
            lines += [_line(label, r) for r in launches]
    errors = after.get("errors") or []
    if errors:
        lines += ["", f"Compile errors after: {len(errors)}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--before-rev", default="before")
    parser.add_argument("--after-rev", default="after")
    parser.add_argument("--notes", help="a markdown file placed after the header")
    args = parser.parse_args()
    with open(args.before) as f:
        before = json.load(f)
    with open(args.after) as f:
        after = json.load(f)
    notes = ""
    if args.notes:
        with open(args.notes) as f:
            notes = f.read()
    sys.stdout.write(render(before, after, args.before_rev, args.after_rev, notes))


if __name__ == "__main__":
    main()
