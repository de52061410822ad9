"""Benchmark `ops.selective_scan` on the CPU: our C kernels, the chunked formulation and the
sequential reference side by side.

The call is DeepRFTv2's (variable B and C, one group, D, delta_bias, delta_softplus, no z),
float32. For each shape and direction (forward; forward + backward producing every gradient)
the backends are timed in one interleaved run (tools/benchmark_ops.py's `time_interleaved`:
blocks of back-to-back calls, the backends shuffled anew for each repetition) and the median
is reported, with the speed-up of `native` over the others. The
headline row is the issue's target: (1, 64, 4096), N = 8, one thread, forward >= 50x the
sequential reference.

    python tools/benchmark_scan.py                # writes benchmarks/scan_cpu.md and .json
    python tools/benchmark_scan.py --quick        # fewer repetitions, no large shapes
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_ops import time_interleaved  # noqa: E402
from machine_info import cpu_model, load_average  # noqa: E402

import ops  # noqa: E402

BACKENDS = ("native", "chunked", "reference")
# (batch, dim, L, N, threads): the target, then DeepRFTv2's per-block scans at a 256x256 input
# (level 1: 2C = 192 channels over a 128x128 map; level 2: 384 over 64x64) on 1 and 2 threads
SHAPES = [
    (1, 64, 4096, 8, 1),
    (1, 192, 16384, 8, 1),
    (1, 192, 16384, 8, 2),
    (1, 384, 4096, 8, 2),
]
# the chunked formulation takes seconds per call at DeepRFTv2's sizes: fewer repetitions there
LARGE_SHAPE_REPS = 5


def make_case(backend: str, shape, backward: bool) -> Callable[[], None]:
    batch, dim, length, dstate, _ = shape
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(batch, dim, length, generator=gen)
    delta = torch.randn(batch, dim, length, generator=gen) - 1.0
    A = -torch.exp(torch.rand(dim, dstate, generator=gen) * 2)
    B = torch.randn(batch, 1, dstate, length, generator=gen)
    C = torch.randn(batch, 1, dstate, length, generator=gen)
    D = torch.randn(dim, generator=gen)
    bias = torch.rand(dim, generator=gen) * 0.1
    tensors = [u, delta, A, B, C, D, bias]

    def scan():
        return ops.selective_scan(
            u, delta, A, B, C, D, None, bias, delta_softplus=True, backend=backend
        )

    if not backward:

        def forward_only() -> None:
            with torch.no_grad():
                scan()

        return forward_only
    for t in tensors:
        t.requires_grad_(True)
    grad = torch.randn(batch, dim, length, generator=gen)

    def forward_backward() -> None:
        for t in tensors:
            t.grad = None
        scan().backward(grad)

    return forward_backward


def benchmark(shape, reps: int, backends) -> list[dict]:
    torch.set_num_threads(shape[4])
    rows = []
    for backward in (False, True):
        # all backends in one interleaved run, so that machine load hits them alike
        cases = {b: make_case(b, shape, backward) for b in backends}
        ms = time_interleaved(cases, reps, torch.device("cpu"))
        rows.append(dict(shape=list(shape), direction="fwd+bwd" if backward else "fwd", ms=ms))
        print(format_row(rows[-1], backends), flush=True)
    return rows


def format_row(row, backends) -> str:
    batch, dim, length, dstate, threads = row["shape"]
    ms = row["ms"]
    cells = [f"({batch}, {dim}, {length})", str(dstate), str(threads), row["direction"]]
    cells += [f"{ms[b]:.2f}" if b in ms else "-" for b in backends]
    cells += [f"{ms[b] / ms['native']:.1f}x" if b in ms else "-" for b in backends[1:]]
    return "| " + " | ".join(cells) + " |"


def table(rows, backends) -> str:
    head = ["(batch, dim, L)", "N", "threads", "dir"] + [f"{b} ms" for b in backends]
    head += [f"native vs {b}" for b in backends[1:]]
    lines = [
        f"### CPU: {cpu_model()}",
        "",
        "DeepRFTv2's call: float32, variable B and C (one group), D, delta_bias, "
        "delta_softplus, no z; time per call = median over repetitions of ~10 ms blocks of "
        "back-to-back calls, the backends shuffled anew for each repetition ("
        f"{LARGE_SHAPE_REPS} repetitions for the shapes after the first); fwd+bwd computes "
        "every gradient; "
        "speed-up = other backend's time / native time.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    return "\n".join(lines + [format_row(r, backends) for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3 repetitions, the target only")
    parser.add_argument("--out", default="benchmarks")
    args = parser.parse_args()
    reps = 3 if args.quick else args.reps
    shapes = SHAPES[:1] if args.quick else SHAPES

    start_load = load_average()
    rows = []
    for shape in shapes:
        # the reference's L Python steps take seconds at L = 16384: the target row only
        backends = BACKENDS if shape == SHAPES[0] else BACKENDS[:2]
        rows += benchmark(shape, reps if shape == SHAPES[0] else LARGE_SHAPE_REPS, backends)
    date = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    command = f"python tools/benchmark_scan.py {' '.join(sys.argv[1:])}".strip()
    versions = f"torch {torch.__version__}, python {platform.python_version()}"
    header = [
        "# ops.selective_scan CPU benchmark",
        "",
        f"- date: {date}; load average {start_load} at the start, {load_average()} at the end "
        "(other processes on the machine slow every backend, and the 2-thread rows most)",
        f"- {versions}",
        f"- command: `{command}`",
        "",
    ]
    text = "\n".join(header) + table(rows, BACKENDS) + "\n"
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (out / f"scan_cpu{suffix}.md").write_text(text)
    record = dict(date=date, load_average=[start_load, load_average()], machine=cpu_model(),
                  versions=versions, command=command, rows=rows)  # fmt: skip
    (out / f"scan_cpu{suffix}.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out / f'scan_cpu{suffix}.md'}")


if __name__ == "__main__":
    main()
