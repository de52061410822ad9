"""DeepRFTv2 on the CPU: speed against the official code, and training memory with and without
the reversible columns.

speed:  deeprftv2_b (width 48) on one 1 x 3 x S x S image, eval, no_grad, ONE thread for both
        sides, against the official model with mamba's pure-PyTorch reference scan
        (`selective_scan_ref`, the only way the official code runs without CUDA), same weights,
        runs interleaved in one process (machine load hits both alike). Also prints the largest
        difference of the eight output images.
        The official side is imported from --official-root: a directory holding a module
        `official_deeprftv2` that defines `DeepRFTv2(dims=..., dims_ker=...)` with the official
        `global_model` layout and a module-level `SCAN = {"fn": ...}` switch, i.e. the official
        classes of INVOKERer/DeepRFTv2 @ 512587be with the spec's two CPU patches. Nothing of it
        is part of this repository.
memory: one training step (forward_heads, L1 over the eight images, backward) at width 48,
        S x S, batch 1, in a fresh subprocess per setting: the official save_memory settings
        (stage-1 global columns plain, stage-2 reversible, every FKE column reversible) vs every
        column plain. Peak memory = the subprocess's peak resident set size
        (resource.getrusage(RUSAGE_SELF).ru_maxrss), reported whole and as the rise during the
        step (peak after the step minus the peak before it: weights, input and imports
        excluded). The gradients of both runs are compared.

    python tools/benchmark_deeprftv2.py speed --official-root /work/official/deeprftv2
    python tools/benchmark_deeprftv2.py memory
Results are merged into benchmarks/deeprftv2_cpu.md and .json (machine, versions, command, load).
"""

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
import timm  # noqa: E402
from machine_info import cpu_model, load_average  # noqa: E402

import zoo  # noqa: E402, F401  (registers deeprftv2_b)
from zoo.layers.reversible import ReversibleColumn  # noqa: E402

HEADS = ("spatial1", "fke1", "spatial2", "fke2")


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights with non-zero layer scales (a fresh model has beta = gamma = 0)."""
    gen = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("alpha") and leaf[5:].isdigit():
            t.copy_(0.5 + 0.1 * torch.randn(t.shape, generator=gen))
        elif leaf == "A_logs":
            continue
        elif t.dim() > 1:
            t.copy_(torch.randn(t.shape, generator=gen) / t[0].numel() ** 0.5)
        elif leaf == "weight":
            t.copy_(1 + 0.1 * torch.randn(t.shape, generator=gen))
        else:
            t.copy_(0.1 * torch.randn(t.shape, generator=gen))
    return model


def _meta(command: str) -> dict:
    return dict(
        date=f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        machine=cpu_model(),
        torch=torch.__version__,
        timm=timm.__version__,
        python=platform.python_version(),
        command=command,
        load_before=load_average(),
    )


def speed(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(Path(args.official_root).resolve()))
    import official_deeprftv2 as official  # the user-supplied official classes

    torch.set_num_threads(1)
    ours = randomize_(timm.create_model("deeprftv2_b")).eval()
    width = ours.num_features
    ref = official.DeepRFTv2(dims=[width] * 3, dims_ker=[width] * 3).eval()
    missing = ref.load_state_dict(
        {f"global_model.{k}": v for k, v in ours.state_dict().items()}, strict=True
    )
    assert not missing.missing_keys and not missing.unexpected_keys
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    meta = _meta("python tools/benchmark_deeprftv2.py " + " ".join(sys.argv[1:]))
    times: dict[str, list[float]] = {"ours": [], "official": []}
    with torch.no_grad():
        heads = ours.forward_heads(x)  # warm-up (op dispatch, the scan's compiled kernel)
        for _ in range(args.runs):
            for side in ("ours", "official"):
                start = time.perf_counter()
                out = ours.forward_heads(x) if side == "ours" else ref(x)
                times[side].append(time.perf_counter() - start)
                if side == "official":
                    want = dict(zip(HEADS, out["img"], strict=True))
                    want |= {f"{h}_mid": v for h, v in zip(HEADS, out["img_mid"], strict=True)}
    diffs = {k: (heads[k] - want[k]).abs().max().item() for k in heads}
    meta["load_after"] = load_average()
    best = {k: min(v) for k, v in times.items()}
    return dict(
        meta=meta,
        threads=1,
        size=args.size,
        seconds=times,
        best_seconds=best,
        speedup=best["official"] / best["ours"],
        max_abs_diff=diffs,
    )


def _train_step(args: argparse.Namespace) -> None:
    """(subprocess) one training step; prints JSON with peak RSS, saves the gradients."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = randomize_(timm.create_model("deeprftv2_b")).train()
    if args.save_memory == "off":
        for column in model.modules():
            if isinstance(column, ReversibleColumn):
                column.save_memory = False
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, args.size, args.size, generator=gen)
    target = torch.rand(1, 3, args.size, args.size, generator=gen)
    target_mid = torch.rand(1, 3, args.size // 2, args.size // 2, generator=gen)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    heads = model.forward_heads(x)
    loss = sum(
        (h - (target_mid if name.endswith("_mid") else target)).abs().mean()
        for name, h in heads.items()
    )
    loss.backward()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.save({n: p.grad for n, p in model.named_parameters()}, args.grads)
    columns = [m.save_memory for m in model.modules() if isinstance(m, ReversibleColumn)]
    print(
        json.dumps(
            dict(
                save_memory=args.save_memory,
                reversible_columns=sum(columns),
                columns=len(columns),
                peak_rss_mib=after / 1024,
                rss_before_step_mib=before / 1024,
                step_rise_mib=(after - before) / 1024,
                step_seconds=seconds,
                loss=loss.item(),
            )
        )
    )


def memory(args: argparse.Namespace) -> dict:
    meta = _meta("python tools/benchmark_deeprftv2.py " + " ".join(sys.argv[1:]))
    runs, grads = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for setting in ("official", "off"):
            path = Path(tmp) / f"{setting}.pt"
            cmd = [sys.executable, __file__, "_train-step", "--save-memory", setting]
            cmd += ["--size", str(args.size), "--threads", str(args.threads), "--grads", str(path)]
            print(" ".join(cmd[1:]), flush=True)
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            runs[setting] = json.loads(done.stdout.strip().splitlines()[-1])
            print(runs[setting], flush=True)
            grads[setting] = torch.load(path, weights_only=True)
    diff = max((grads["official"][n] - g).abs().max().item() for n, g in grads["off"].items())
    scale = max(g.abs().max().item() for g in grads["off"].values())
    meta["load_after"] = load_average()
    return dict(
        meta=meta,
        size=args.size,
        threads=args.threads,
        runs=runs,
        grad_max_abs_diff=diff,
        grad_max_abs=scale,
        saved_mib=runs["off"]["step_rise_mib"] - runs["official"]["step_rise_mib"],
    )


def render(record: dict) -> str:
    lines = ["# DeepRFTv2 (deeprftv2_b, width 48) on the CPU", ""]
    if "speed" in record:
        s = record["speed"]
        m = s["meta"]
        lines += [
            f"## Speed: 1 x 3 x {s['size']} x {s['size']}, eval, no_grad, {s['threads']} thread",
            "",
            f"{m['date']}, {m['machine']}, torch {m['torch']}, timm {m['timm']}, "
            f"python {m['python']}; load average {m['load_before']} -> {m['load_after']}",
            f"`{m['command']}`",
            "",
            "| side | runs (s) | best (s) |",
            "|---|---|---|",
        ]
        for side in ("ours", "official"):
            runs = ", ".join(f"{t:.1f}" for t in s["seconds"][side])
            lines.append(f"| {side} | {runs} | {s['best_seconds'][side]:.1f} |")
        worst = max(s["max_abs_diff"].values())
        lines += [
            "",
            f"Speed-up (best official / best ours): **{s['speedup']:.1f}x**. Official = the "
            "official classes with mamba's `selective_scan_ref` (pure PyTorch); ours = "
            "`ops.selective_scan` (auto backend). Largest difference over the eight images: "
            f"{worst:.2e}.",
            "",
        ]
    if "memory" in record:
        r = record["memory"]
        m = r["meta"]
        lines += [
            f"## Memory: one training step, 1 x 3 x {r['size']} x {r['size']}, "
            f"{r['threads']} threads",
            "",
            f"{m['date']}, {m['machine']}, torch {m['torch']}; load average "
            f"{m['load_before']} -> {m['load_after']}",
            f"`{m['command']}`",
            "",
            "Each setting in a fresh subprocess; peak RSS = `resource.getrusage(RUSAGE_SELF)."
            "ru_maxrss`; rise = peak after the step - peak before it.",
            "",
            "| save_memory | reversible columns | peak RSS (MiB) | rise during the step (MiB) "
            "| step (s) |",
            "|---|---|---|---|---|",
        ]
        for setting, run in r["runs"].items():
            lines.append(
                f"| {setting} | {run['reversible_columns']} of {run['columns']} | "
                f"{run['peak_rss_mib']:.0f} | {run['step_rise_mib']:.0f} | "
                f"{run['step_seconds']:.1f} |"
            )
        lines += [
            "",
            f"The official settings save {r['saved_mib']:.0f} MiB of the step's rise. "
            f"Gradients: largest difference {r['grad_max_abs_diff']:.2e} "
            f"(largest gradient {r['grad_max_abs']:.2e}).",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["speed", "memory", "_train-step"])
    parser.add_argument("--official-root", help="directory with official_deeprftv2.py (speed)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-memory", choices=["official", "off"], default="official")
    parser.add_argument("--grads", help="(_train-step) where to save the gradients")
    parser.add_argument("--out", default=str(ROOT / "benchmarks"))
    args = parser.parse_args()
    if args.what == "_train-step":
        return _train_step(args)
    if args.what == "speed" and not args.official_root:
        parser.error("speed needs --official-root (the official classes, not in this repo)")
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    record_path = out / "deeprftv2_cpu.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    record[args.what] = speed(args) if args.what == "speed" else memory(args)
    text = render(record)
    print("\n" + text)
    record_path.write_text(json.dumps(record, indent=1))
    (out / "deeprftv2_cpu.md").write_text(text)
    print(f"wrote {out / 'deeprftv2_cpu.md'} and .json")


if __name__ == "__main__":
    main()
