"""Benchmark `ops.dwconv2d` backends side by side with `F.conv2d` in both memory layouts.

For each kernel (k x k for k in 3, 7, 13, 31, plus the bands 1x31 and 31x1) and each direction
(forward; forward + backward producing dx, dW, db), every variant is timed in the same run with
interleaved repetitions (so machine load hits all variants alike) and the median is reported.
Ratios are printed against F.conv2d in NCHW and against the best F.conv2d layout.

On a CUDA machine the GPU table adds the Triton backend, TFLOP/s (2 FLOPs per multiply-add,
all kh*kw taps counted) and the percentage of the device's FP32 CUDA-core peak.

    python tools/benchmark_ops.py                 # CPU (and GPU when present), default shapes
    python tools/benchmark_ops.py --quick         # fewer repetitions (used by `make demo`)
    python tools/benchmark_ops.py --device cuda   # GPU only: bf16 and fp32 tables with TFLOP/s
                                                  # for every variant -> benchmarks/ops_cuda.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import cpu_model, load_average  # noqa: E402

import ops  # noqa: E402

KERNELS = [(3, 3), (7, 7), (13, 13), (31, 31), (1, 31), (31, 1)]
# FP32 non-tensor-core peaks (TFLOP/s) of the GPUs we may be lent (NVIDIA Hopper whitepaper).
FP32_PEAK_TFLOPS = {"H100": 66.9, "H200": 66.9}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_case(variant: str, shape, kernel, dtype, device, backward: bool) -> Callable[[], None]:
    """Return a closure running one forward (and backward) of a variant on fresh-grad tensors."""
    n, c, h, w = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=gen).to(device=device, dtype=dtype)
    weight = (torch.randn(c, 1, *kernel, generator=gen) / (kernel[0] * kernel[1]) ** 0.5).to(
        device=device, dtype=dtype
    )
    bias = torch.randn(c, generator=gen).to(device=device, dtype=dtype)
    layout, _, backend = variant.partition(":")
    if layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last)
    padding = (kernel[0] // 2, kernel[1] // 2)
    if backend == "F.conv2d":
        run = lambda a, b, c_: F.conv2d(a, b, c_, 1, padding, 1, c)
    else:
        run = lambda a, b, c_: ops.dwconv2d(a, b, c_, padding=padding, backend=backend)
    if not backward:

        def forward_only() -> None:
            with torch.no_grad():
                run(x, weight, bias)

        return forward_only
    x.requires_grad_(True)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    grad = torch.randn_like(run(x, weight, bias).detach())

    def forward_backward() -> None:
        x.grad = weight.grad = bias.grad = None
        run(x, weight, bias).backward(grad)

    return forward_backward


def time_interleaved(cases: dict[str, Callable[[], None]], reps: int, device) -> dict[str, float]:
    """Median per-call wall time in ms of each case.

    Each repetition runs every case as a block of back-to-back calls (about 10 ms per block),
    the cases in an order shuffled anew for every repetition. Within a block a case follows
    itself, so it meets the allocator and caches in its own steady state: timing single calls
    in a fixed order let one case inherit another's freed buffers (and page faults), which
    moved sub-millisecond rows by up to 3x depending only on their position in the list.
    Shuffling spreads slow drifts in machine load evenly over the cases.
    """
    times: dict[str, list[float]] = {name: [] for name in cases}
    calls: dict[str, int] = {}
    for name, fn in cases.items():  # warm-up (and Triton compilation), then one timed call
        fn()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        calls[name] = max(1, min(50, int(0.01 / max(time.perf_counter() - t0, 1e-6))))
    order = list(cases)
    shuffle = random.Random(0).shuffle
    for _ in range(reps):
        shuffle(order)
        for name in order:
            fn = cases[name]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            _sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3 / calls[name])
    return {name: statistics.median(ts) for name, ts in times.items()}


def useful_flops(shape, kernel, backward: bool) -> float:
    n, c, h, w = shape
    macs = n * c * h * w * kernel[0] * kernel[1]
    return 2 * macs * (3 if backward else 1)


def benchmark_device(device, shape, dtype, reps, variants, kernels) -> list[dict]:
    rows = []
    for kernel in kernels:
        for backward in (False, True):
            cases = {v: make_case(v, shape, kernel, dtype, device, backward) for v in variants}
            medians = time_interleaved(cases, reps, device)
            rows.append(
                dict(
                    kernel=f"{kernel[0]}x{kernel[1]}",
                    direction="fwd+bwd" if backward else "fwd",
                    ms=medians,
                    flops=useful_flops(shape, kernel, backward),
                )
            )
            print(_format_row(rows[-1], variants), flush=True)
    return rows


def _ours(variants) -> list[str]:
    """The rows the ratios are taken for: the auto backend, or triton where auto is not timed."""
    return [v for v in variants if v.endswith(":auto")] or [
        v for v in variants if v.endswith(":triton")
    ]


def _format_row(row, variants) -> str:
    ms = row["ms"]
    best_torch = min(ms["nchw:F.conv2d"], ms["cl:F.conv2d"])
    cells = [row["kernel"], row["direction"]] + [f"{ms[v]:.2f}" for v in variants]
    auto = min(ms[v] for v in _ours(variants))
    cells += [f"{ms['nchw:F.conv2d'] / auto:.2f}x", f"{best_torch / auto:.2f}x"]
    return "| " + " | ".join(cells) + " |"


def machine_description(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def table(device, shape, dtype, rows, variants) -> str:
    ours = _ours(variants)[0].partition(":")[2]
    head = (
        ["kernel", "dir"]
        + [f"{v} ms" for v in variants]
        + [f"{ours} vs NCHW F.conv2d", f"{ours} vs best F.conv2d"]
    )
    lines = [
        f"### {device.type.upper()}: {machine_description(device)}",
        "",
        f"shape (N, C, H, W) = {tuple(shape)}, {str(dtype).replace('torch.', '')}, stride 1, "
        "'same' padding, bias; time per call = median over repetitions of ~10 ms blocks of "
        "back-to-back calls, the cases shuffled anew for each repetition; "
        f"speed-up = F.conv2d time / {ours} time "
        f"({ours} = the faster of the {ours} rows, i.e. NCHW or channels_last input).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += [_format_row(r, variants) for r in rows]
    if device.type == "cuda" and "nchw:auto" not in variants:  # --device cuda: every variant
        lines += [
            "",
            "TFLOP/s (useful: 2 N C H W kh kw per direction, all taps counted)",
            "",
            "| kernel | dir | " + " | ".join(variants) + " |",
            "|---|---|" + "---|" * len(variants),
        ]
        for r in rows:
            cells = [f"{r['flops'] / r['ms'][v] / 1e9:.1f}" for v in variants]
            lines.append(f"| {r['kernel']} | {r['direction']} | " + " | ".join(cells) + " |")
    elif device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in FP32_PEAK_TFLOPS.items() if k in name), None)
        lines += [
            "",
            "| kernel | dir | triton TFLOP/s (useful) | % of FP32 CUDA-core peak |",
            "|---|---|---|---|",
        ]
        for r in rows:
            ms = min(r["ms"][v] for v in variants if v.endswith(":triton"))
            tflops = r["flops"] / ms / 1e9
            pct = f"{100 * tflops / peak:.1f}%" if peak else "n/a"
            lines.append(f"| {r['kernel']} | {r['direction']} | {tflops:.1f} | {pct} |")
    return "\n".join(lines)


CUDA_VARIANTS = ["nchw:F.conv2d", "cl:F.conv2d", "nchw:triton", "cl:triton"]


def versions() -> str:
    import triton  # noqa: PLC0415  (CUDA mode only; the CPU benchmark needs no triton)

    cuda = torch.version.cuda or "none"
    return (
        f"torch {torch.__version__} (CUDA {cuda}, cuDNN {torch.backends.cudnn.version()}), "
        f"triton {triton.__version__}, python {platform.python_version()}"
    )


def slide_candidates(device, shape, reps: int, k: int = 31) -> str:
    """Time every candidate launch configuration of the fp32 sliding kernels (forward and
    weight-grad, both layouts) at `shape`, k x k, so that a GPU run can pick the table's entries
    (ops/dwconv/triton_slide.py FORWARD_CANDIDATES / WEIGHT_GRAD_CANDIDATES, first = table)."""
    from ops.dwconv import triton as dwconv_triton  # noqa: PLC0415
    from ops.dwconv import triton_slide  # noqa: PLC0415

    n, c, h, w = shape
    gen = torch.Generator().manual_seed(0)
    lines = [
        "",
        f"### fp32 sliding-kernel candidates, {tuple(shape)}, k = {k} (ms; first = the table)",
        "",
        "| layout | direction | config (tile_h, tile_w, block_c, warps) | ms | TFLOP/s |",
        "|---|---|---|---|---|",
    ]
    weight = torch.randn(c, 1, k, k, generator=gen).to(device)
    pad = (k // 2, k // 2)
    flops = useful_flops(shape, (k, k), False)
    for layout, fmt in (("nchw", torch.contiguous_format), ("cl", torch.channels_last)):
        x = torch.randn(*shape, generator=gen).to(device).contiguous(memory_format=fmt)
        for direction, table in (
            ("fwd", triton_slide.FORWARD_CANDIDATES),
            ("wgrad", triton_slide.WEIGHT_GRAD_CANDIDATES),
        ):

            def case(config, direction=direction, x=x):
                def run() -> None:
                    triton_slide.FORCE_CONFIG = config
                    try:
                        if direction == "fwd":
                            dwconv_triton.forward(x, weight, None, pad, (1, 1))
                        else:
                            dwconv_triton.backward_weight(x, x, (k, k), pad, (1, 1))
                    finally:
                        triton_slide.FORCE_CONFIG = None

                return run

            cases = {str(cfg): case(cfg) for cfg in table[layout]}
            ms = time_interleaved(cases, reps, device)
            for cfg in table[layout]:
                t = ms[str(cfg)]
                lines.append(
                    f"| {layout} | {direction} | {cfg} | {t:.3f} | {flops / t / 1e9:.1f} |"
                )
    return "\n".join(lines)


def main_cuda(args) -> None:
    """--device cuda: the GPU tables only, one per dtype, written to benchmarks/ops_cuda.md."""
    if not torch.cuda.is_available():
        sys.exit(
            "benchmark_ops.py --device cuda: no CUDA device (torch.cuda.is_available() is False)"
        )
    gpu = torch.device("cuda")
    kernels = [tuple(int(v) for v in k.split("x")) for k in args.kernels]
    sections, record = [], {}
    for name in args.gpu_dtypes:
        dtype = getattr(torch, name)
        print(f"CUDA {tuple(args.gpu_shape)} {name}, variants: {CUDA_VARIANTS}", flush=True)
        rows = benchmark_device(gpu, args.gpu_shape, dtype, args.reps, CUDA_VARIANTS, kernels)
        sections.append(table(gpu, args.gpu_shape, dtype, rows, CUDA_VARIANTS))
        record[name] = dict(shape=args.gpu_shape, rows=rows)
    if args.slide_candidates:
        print("fp32 sliding-kernel candidates ...", flush=True)
        sections.append(slide_candidates(gpu, args.gpu_shape, args.reps))
    header = [
        "# ops.dwconv2d benchmark (CUDA)",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        f"load average {load_average()}",
        f"- device: {torch.cuda.get_device_name(gpu)}; {versions()}",
        f"- command: `python tools/benchmark_ops.py {' '.join(sys.argv[1:])}`",
        f"- {args.reps} repetitions per variant; triton = ops.dwconv2d(backend='triton'), "
        "F.conv2d = PyTorch (cuDNN or its native depthwise kernel), both on the same tensors; "
        f"torch.backends.cudnn.allow_tf32 = {torch.backends.cudnn.allow_tf32}",
        "",
        "",
    ]
    text = "\n".join(header) + "\n\n".join(sections) + "\n"
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    (out / "ops_cuda.md").write_text(text)
    (out / "ops_cuda.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out / 'ops_cuda.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cuda"],
        help="auto: CPU table, plus a GPU table when CUDA is present (default); cuda: GPU only, "
        "--gpu-dtypes tables with TFLOP/s of every variant (fails without CUDA)",
    )
    parser.add_argument(
        "--gpu-dtypes", nargs="+", default=["bfloat16", "float32"],
        choices=["float32", "float16", "bfloat16"], help="with --device cuda",
    )  # fmt: skip
    parser.add_argument(
        "--kernels", nargs="+", default=[f"{kh}x{kw}" for kh, kw in KERNELS],
        help="with --device cuda: kernel sizes as KHxKW",
    )  # fmt: skip
    parser.add_argument(
        "--slide-candidates", action="store_true",
        help="with --device cuda: also time every candidate config of the fp32 sliding kernels",
    )  # fmt: skip
    parser.add_argument("--cpu-shape", type=int, nargs=4, default=[2, 64, 56, 56])
    parser.add_argument("--gpu-shape", type=int, nargs=4, default=[64, 384, 32, 32])
    parser.add_argument(
        "--gpu-dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"]
    )
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3 repetitions, CPU only")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default="benchmarks")
    args = parser.parse_args()
    for k in args.kernels:
        if not re.fullmatch(r"[1-9]\d*x[1-9]\d*", k):
            parser.error(f"--kernels: expected KHxKW such as 31x31, got {k!r}")
    if args.device == "cuda":
        main_cuda(args)
        return
    torch.set_num_threads(args.threads)
    reps = 3 if args.quick else args.reps

    sections, record = [], {}
    cpu = torch.device("cpu")
    cpu_variants = ["nchw:F.conv2d", "cl:F.conv2d", "nchw:fft", "nchw:auto", "cl:auto"]
    print(f"CPU {tuple(args.cpu_shape)} float32, variants: {cpu_variants}")
    cpu_rows = benchmark_device(cpu, args.cpu_shape, torch.float32, reps, cpu_variants, KERNELS)
    sections.append(table(cpu, args.cpu_shape, torch.float32, cpu_rows, cpu_variants))
    record["cpu"] = dict(shape=args.cpu_shape, rows=cpu_rows)

    if torch.cuda.is_available() and not args.quick:
        gpu = torch.device("cuda")
        dtype = getattr(torch, args.gpu_dtype)
        gpu_variants = [
            "nchw:F.conv2d",
            "cl:F.conv2d",
            "nchw:triton",
            "cl:triton",
            "nchw:auto",
            "cl:auto",
        ]
        gpu_rows = benchmark_device(gpu, args.gpu_shape, dtype, reps, gpu_variants, KERNELS)
        sections.append(table(gpu, args.gpu_shape, dtype, gpu_rows, gpu_variants))
        record["gpu"] = dict(shape=args.gpu_shape, dtype=args.gpu_dtype, rows=gpu_rows)

    load = "load average " + load_average()
    header = [
        "# ops.dwconv2d benchmark",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {load}",
        f"- torch {torch.__version__}, python {platform.python_version()}, "
        f"threads {torch.get_num_threads()}",
        f"- command: `python tools/benchmark_ops.py {' '.join(sys.argv[1:])}`",
        "",
    ]
    text = "\n".join(header) + "\n\n".join(sections) + "\n"
    print("\n" + text)
    device_name = "cuda_" + torch.cuda.get_device_name().split()[-1] if "gpu" in record else "cpu"
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (out / f"ops_{device_name}{suffix}.md").write_text(text)
    (out / f"ops_{device_name}{suffix}.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out / f'ops_{device_name}{suffix}.md'}")


if __name__ == "__main__":
    main()
