"""Scenarios for the sm_90 report tool (`../shared/tools/triton_sm90_report.py`): every Triton
launch of the depthwise op (`ops.dwconv.triton`: forward, backward_input, backward_weight) that
the issue's example shape and the zoo's models make, called on meta tensors (nothing runs).

    .venv/bin/python ../shared/tools/triton_sm90_report.py tools/triton_sm90_scenarios.py \
        [--only LABEL] [--jobs 2] [--json OUT.json]

Labels:
- `{fp32|bf16}_{nchw|cl}_k{13|31}_{fwd|dgrad|wgrad}`: x = (64, 384, 32, 32), "same" padding.
- `urlk_t_s{2,3,4}_{fp32|bf16}_nchw_k13_{fwd|dgrad|wgrad}`: UniRepLKNet-T's 13x13 depthwise
  convs (NCHW, as the model runs them) at its stage resolutions for a 224 input: 160 channels
  at 28x28, 320 at 14x14, 640 at 7x7; batch 64. Plus `urlk_t_s3_bf16_nchw_k{K}d{D}_*`, the
  training-time dilated branches of stage 3 (K, D) in (5, 1), (7, 2), (3, 3), (3, 4), (3, 5).
- `tccfg{i}_bf16-nchw-k{13|31}_{fwd|wgrad}`: the tensor-core kernels (ops/dwconv/triton_tc.py)
  at the example shape with candidate tile config i (`triton_tc.candidates`; 0 is the table's
  default), so every config a GPU run should time compiles here.
- `incnext_t_s1_{fp32|bf16}_cl_{1x11|11x1}_{fwd|dgrad|wgrad}`: InceptionNeXt-T's band convs in
  stage 1: 12 of 96 channels (a channel slice of a channels_last tensor, as the model passes
  it) at 56x56, batch 64.
- `limit_{fp32|bf16}_{nchw|cl}_{1x129|3x51d3}_{fwd|dgrad|wgrad}`: the widths that spilled before
  (kw = 129; kw = 51 at dilation 3), x = (8, 384, 32, 160), "same" padding.
- `tf32_{nchw|cl}_k{13|31}_{fwd|dgrad|wgrad}`: fp32 storage with the opt-in TF32 tensor-core
  mode (ops/dwconv/triton_tc.py ALLOW_TF32, off by default), example shape.
- `cand_fp32_{nchw|cl}_k31_{fwd|wgrad}_{TH}x{TW}c{BC}w{WARPS}`: the fp32 sliding kernels'
  alternative launch configurations (ops/dwconv/triton_slide.py FORWARD_CANDIDATES /
  WEIGHT_GRAD_CANDIDATES, the table's entry excluded: it is the plain label) at the example
  shape, so that every configuration a GPU run may pick is compiled.

The third item of each scenario is the useful work of the call, 2 N C Ho Wo kh kw FLOPs (the
same for all three directions at stride 1; taps that only read padding count as useful, as they
do in every TFLOP/s figure we quote).
"""

from __future__ import annotations

from functools import partial

import torch

from ops.dwconv import triton as T
from ops.dwconv import triton_slide, triton_tc
from ops.dwconv import triton_tc as TC

# The launchers pick interpreter-sized tiles when TRITON_INTERPRET was set at import (the tool
# unsets it before importing anything).
assert not T._INTERPRETED, "ops.dwconv.triton was imported under TRITON_INTERPRET"

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = {"nchw": torch.contiguous_format, "cl": torch.channels_last}


def _flops(n: int, c: int, ho: int, wo: int, kh: int, kw: int) -> int:
    return 2 * n * c * ho * wo * kh * kw


def _calls(tag: str, x, kernel_hw, padding, dilation=(1, 1)):
    """The three directions of one conv on input x (output size = input size here)."""
    n, c, h, w = x.shape
    kh, kw = kernel_hw
    ho = h + 2 * padding[0] - dilation[0] * (kh - 1)
    wo = w + 2 * padding[1] - dilation[1] * (kw - 1)
    dy = torch.empty_like(x) if (ho, wo) == (h, w) else None
    assert dy is not None, "scenarios use 'same' padding"
    wt = torch.empty(c, 1, kh, kw, dtype=x.dtype, device="meta")
    flops = _flops(n, c, ho, wo, kh, kw)
    yield f"{tag}_fwd", lambda: T.forward(x, wt, None, padding, dilation), flops
    yield f"{tag}_dgrad", lambda: T.backward_input(dy, wt, (h, w), padding, dilation), flops
    yield f"{tag}_wgrad", lambda: T.backward_weight(dy, x, (kh, kw), padding, dilation), flops


def _candidate(index: int, call):
    """call() with the tensor-core kernels' tile config forced to candidate `index`."""
    TC.FORCE_CANDIDATE = index
    try:
        return call()
    finally:
        TC.FORCE_CANDIDATE = None


def _tc_candidates():
    x = _input((64, 384, 32, 32), torch.bfloat16, torch.contiguous_format)
    dy = torch.empty_like(x)
    for k in (13, 31):
        wt = torch.empty(384, 1, k, k, dtype=x.dtype, device="meta")
        pad = (k // 2, k // 2)
        flops = _flops(64, 384, 32, 32, k, k)
        base = TC.config("forward", 64, (32, 32), k, k // 2, 1, x.element_size())
        for i in range(len(TC.candidates(base))):
            tag = f"tccfg{i}_bf16-nchw-k{k}"
            fwd = partial(T.forward, x, wt, None, pad, (1, 1))
            wgrad = partial(T.backward_weight, dy, x, (k, k), pad, (1, 1))
            yield f"{tag}_fwd", partial(_candidate, i, fwd), flops
            yield f"{tag}_wgrad", partial(_candidate, i, wgrad), flops


def _patched(module, name: str, value, fn):
    """fn run with module.name = value (restored after)."""

    def run():
        saved = getattr(module, name)
        setattr(module, name, value)
        try:
            fn()
        finally:
            setattr(module, name, saved)

    return run


def _input(shape, dtype, fmt):
    return torch.empty(shape, dtype=dtype, device="meta", memory_format=fmt)


def scenarios():
    # The example shape.
    for dname, dtype in DTYPES.items():
        for lname, fmt in LAYOUTS.items():
            for k in (13, 31):
                x = _input((64, 384, 32, 32), dtype, fmt)
                yield from _calls(f"{dname}_{lname}_k{k}", x, (k, k), (k // 2, k // 2))

    # UniRepLKNet-T (depths 3, 3, 18, 3; dims 80, 160, 320, 640): 13x13 in stages 2-4.
    for stage, (c, hw) in ((2, (160, 28)), (3, (320, 14)), (4, (640, 7))):
        for dname, dtype in DTYPES.items():
            x = _input((64, c, hw, hw), dtype, torch.contiguous_format)
            yield from _calls(f"urlk_t_s{stage}_{dname}_nchw_k13", x, (13, 13), (6, 6))
    # Its training-time dilated branches next to each 13x13 (stage 3, bf16).
    x = _input((64, 320, 14, 14), torch.bfloat16, torch.contiguous_format)
    for k, d in ((5, 1), (7, 2), (3, 3), (3, 4), (3, 5)):
        pad = (d * (k - 1) + 1) // 2
        yield from _calls(f"urlk_t_s3_bf16_nchw_k{k}d{d}", x, (k, k), (pad, pad), (d, d))

    yield from _tc_candidates()

    # InceptionNeXt-T stage 1: dim 96, 12 channels per band branch, channels_last slices.
    for dname, dtype in DTYPES.items():
        full = _input((64, 96, 56, 56), dtype, torch.channels_last)
        x_w, x_h = full[:, 72:84], full[:, 84:96]  # the model's split (60, 12, 12, 12)
        yield from _calls(f"incnext_t_s1_{dname}_cl_1x11", x_w, (1, 11), (0, 5))
        yield from _calls(f"incnext_t_s1_{dname}_cl_11x1", x_h, (11, 1), (5, 0))

    # The kernel widths that spilled before this work.
    for dname, dtype in DTYPES.items():
        for lname, fmt in LAYOUTS.items():
            x = _input((8, 384, 32, 160), dtype, fmt)
            yield from _calls(f"limit_{dname}_{lname}_1x129", x, (1, 129), (0, 64))
            yield from _calls(f"limit_{dname}_{lname}_3x51d3", x, (3, 51), (3, 75), (3, 3))

    # The opt-in TF32 mode for fp32 storage (example shape).
    for lname, fmt in LAYOUTS.items():
        for k in (13, 31):
            x = _input((64, 384, 32, 32), torch.float32, fmt)
            for label, fn, flops in _calls(f"tf32_{lname}_k{k}", x, (k, k), (k // 2, k // 2)):
                yield label, _patched(triton_tc, "ALLOW_TF32", True, fn), flops

    # The fp32 sliding kernels' alternative configurations (k = 31, example shape).
    for lname, fmt in LAYOUTS.items():
        x = _input((64, 384, 32, 32), torch.float32, fmt)
        wt = torch.empty(384, 1, 31, 31, device="meta")
        flops = _flops(64, 384, 32, 32, 31, 31)
        for direction, table in (
            ("fwd", triton_slide.FORWARD_CANDIDATES),
            ("wgrad", triton_slide.WEIGHT_GRAD_CANDIDATES),
        ):
            for config in table[lname][1:]:
                th, tw, bc, warps = config
                if direction == "fwd":
                    fn = lambda x=x, wt=wt: T.forward(x, wt, None, (15, 15), (1, 1))  # noqa: E731
                else:
                    fn = lambda x=x: T.backward_weight(x, x, (31, 31), (15, 15), (1, 1))  # noqa: E731
                label = f"cand_fp32_{lname}_k31_{direction}_{th}x{tw}c{bc}w{warps}"
                yield label, _patched(triton_slide, "FORCE_CONFIG", config, fn), flops
