"""Parameters, FLOPs and CPU throughput of zoo models, training form vs deploy form.

For every model: parameter count, fvcore FLOPs at the model's default resolution (its
pretrained_cfg input_size, batch 1) and eval-mode CPU throughput (batch 8, no_grad) of the
training form and of the deploy form (`zoo.reparameterize`), with the deploy/train speed-up.
Families without a deploy form show the same model twice. Results are printed and written to
benchmarks/models_<device>.md and .json, with the machine, versions and the exact command.

FLOPs are fvcore's: 1 FLOP per multiply-add. fvcore cannot see inside the custom op
`zoo::dwconv2d` (every depthwise conv of the zoo), so a handle counts it as
output numel x kh x kw multiply-adds, like fvcore's own conv handle; counting runs with the
`torch` (F.conv2d) dwconv backend so that no depthwise conv takes a path fvcore cannot count
(FFT). Elementwise ops (GELU, residual adds, SE gating, GRN) count 0 in fvcore.

    python tools/benchmark_models.py                     # one model per family (default_models)
    python tools/benchmark_models.py unireplknet_a --runs 7 --threads 2
    python tools/benchmark_models.py --device cuda       # GPU: inference and a training step
                                                         # -> benchmarks/models_cuda.md
"""

import argparse
import copy
import datetime
import json
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import timm  # noqa: E402
from fvcore.nn import FlopCountAnalysis  # noqa: E402
from machine_info import cpu_model, load_average  # noqa: E402

import zoo  # noqa: E402

# Extra timm.create_model kwargs by family (zoo.models.FAMILIES name), for any of its models.
FAMILY_KWARGS: dict[str, dict] = {
    # the inference graph (no auxiliary/boundary heads), as the official FLOPs/FPS are measured
    "bevanet": {"aux_heads": False},
}

# Side-by-side CPU throughput of a zoo model and reference models, measured in ONE interleaved
# run (same load for all), printed with ratios. Runs whenever the zoo model is benchmarked.
COMPARISONS: dict[str, tuple[str, ...]] = {
    # timm's own port of the same network, and ConvNeXt-T, the paper's speed baseline
    "inceptionnext_tiny": ("inception_next_tiny", "convnext_tiny"),
}

# Published FLOPs, printed under the table next to ours with how the paper counted them.
PAPER_FLOPS: dict[str, tuple[float, str]] = {
    "unireplknet_a": (
        0.6e9,
        "UniRepLKNet README, 224x224, a deploy-form count. fvcore on the official code gives "
        "0.682 G (training form) / 0.640 G (deploy); its conv part equals ours exactly "
        "(192,674,880 in training form). Ours counts 1.85 M more in both forms: fvcore sees the "
        "stem/downsample LayerNorms here (F.layer_norm, 2.43 M) but not the official "
        "hand-written ones, and our SE pools with x.mean (not counted) where the official "
        "uses adaptive_avg_pool2d (0.58 M)",
    ),
    "inceptionnext_tiny": (
        4.2e9,
        "InceptionNeXt README / paper Table 4 'MACs' at 224x224 (1 per multiply-add). fvcore on "
        "the official model gives 4,194,591,648; ours and timm's port count 37,632 more, the "
        "adaptive avg-pool of the head (the official head's x.mean is invisible to fvcore)",
    ),
    "mk_unet_b": (
        0.314e9,
        "MK-UNet paper, 256x256. It is ptflops' module-hook count of the official model "
        "(313,757,368 measured). Relative to our count it adds, exactly: ReLU6/ReLU modules "
        "(9.63 M), CBAM adaptive avg/max pools (0.99 M), conv biases and the three "
        "deep-supervision heads the official forward computes but discards (1.05 M); and it "
        "skips F.interpolate (6.13 M, counted by fvcore). "
        "fvcore on the official model gives 0.3087 G (its avg-pool module adds 0.49 M; our "
        "channel attention pools with x.mean, which fvcore does not count)",
    ),
    "bevanet_s": (
        60.26e9,
        "no Cityscapes FLOPs are published (README: 20.1 G for BEVANet-S on CamVid 720x960); "
        "60.26 G is fvcore on the official inference model at 1024x2048: up to the 1/8 logits "
        "ours counts the same 60,261,155,104 (conv parts of SW/B/L equal too: 227.51, 237.18, "
        "276.02 G). Ours counts 0.16 G more: forward() resizes the 19-class logits to "
        "1024x2048 (bilinear), which the official model leaves to the caller. Speed for "
        "reference: 70.0 FPS (S) / 32.8 FPS (B) on an RTX 3090 at 1024x2048, fp32 PyTorch, "
        "batch 1 (README)",
    ),
}

FLOP_CONVENTION = "fvcore, 1 FLOP per multiply-add"


def family_of(name: str) -> str:
    """The registry module (family) a model name belongs to."""
    return timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]


def create_kwargs(name: str) -> dict:
    return FAMILY_KWARGS.get(family_of(name), {})


def default_models() -> list[str]:
    """One model per zoo family (zoo.models.FAMILIES, as the registry lists them): the one with
    published FLOPs (PAPER_FLOPS) to compare against, else the smallest."""
    chosen = []
    for family in zoo.models.FAMILIES:
        names = timm.list_models(module=family)
        published = [n for n in names if n in PAPER_FLOPS]
        chosen.append(published[0] if published else min(names, key=_meta_param_count))
    return chosen


def _meta_param_count(name: str) -> int:
    return sum(p.numel() for p in timm.create_model(name, device="meta").parameters())


def compare(name: str, references: tuple[str, ...], batch: int, warmup: int, runs: int) -> dict:
    """img/s of `name` and its references in one interleaved run; ratio > 1: `name` is faster."""
    models = {n: timm.create_model(n).eval() for n in (name, *references)}
    x = torch.randn(batch, *models[name].pretrained_cfg["input_size"])
    speed = throughput(models, x, warmup, runs)
    return dict(model=name, img_s=speed, ratio={n: speed[name] / speed[n] for n in references})


def render_comparisons(comparisons: list[dict]) -> str:
    lines = []
    for c in comparisons:
        lines += [
            "",
            f"Side by side, one interleaved run (same settings as above): {c['model']}",
            "",
            f"| model | img/s | {c['model']} speed / this |",
            "|---|---|---|",
        ]
        for n, img_s in c["img_s"].items():
            ratio = "1.00x" if n == c["model"] else f"{c['ratio'][n]:.2f}x"
            lines.append(f"| {n} | {img_s:.1f} | {ratio} |")
    return "\n".join(lines) + ("\n" if lines else "")


def count_flops(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """fvcore's count (1 per multiply-add); `import zoo` gave fvcore the depthwise op's handle,
    so the count is the same whatever backend computes the depthwise convs."""
    flops = FlopCountAnalysis(model, torch.randn(1, *input_size))
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return int(flops.total())


def has_deploy_form(model: nn.Module) -> bool:
    return any(callable(getattr(m, "reparameterize", None)) for m in model.modules())


@torch.no_grad()
def time_runs(models: dict[str, nn.Module], x: torch.Tensor, warmup: int, runs: int) -> dict:
    """Per model: wall-clock and process CPU seconds of each run, runs interleaved across the
    models so that machine load hits them alike."""
    for model in models.values():
        for _ in range(warmup):
            model(x)
    seconds = {name: {"wall": [], "cpu": []} for name in models}
    for _ in range(runs):
        for name, model in models.items():
            wall, cpu = time.perf_counter(), time.process_time()
            model(x)
            seconds[name]["cpu"].append(time.process_time() - cpu)
            seconds[name]["wall"].append(time.perf_counter() - wall)
    return seconds


def throughput(models: dict[str, nn.Module], x: torch.Tensor, warmup: int, runs: int) -> dict:
    """Median wall-clock images/s of each model (interleaved runs)."""
    seconds = time_runs(models, x, warmup, runs)
    return {name: x.shape[0] / statistics.median(s["wall"]) for name, s in seconds.items()}


def benchmark(name: str, kwargs: dict, batch: int, warmup: int, runs: int) -> dict:
    train = timm.create_model(name, **kwargs).eval()
    input_size = tuple(train.pretrained_cfg["input_size"])
    deployable = has_deploy_form(train)
    deploy = zoo.reparameterize(copy.deepcopy(train)) if deployable else train
    x = torch.randn(batch, *input_size)
    with torch.no_grad():
        max_diff = (train(x[:1]) - deploy(x[:1])).abs().max().item()
    seconds = time_runs({"train": train, "deploy": deploy}, x, warmup, runs)
    wall = {k: batch / statistics.median(v["wall"]) for k, v in seconds.items()}
    # CPU time is what a loaded shared machine cannot steal: preemption adds wall time only
    cpu = {k: batch / statistics.median(v["cpu"]) for k, v in seconds.items()}
    return dict(
        model=name,
        kwargs=kwargs,
        input_size=input_size,
        has_deploy_form=deployable,
        params_train=sum(p.numel() for p in train.parameters()),
        params_deploy=sum(p.numel() for p in deploy.parameters()),
        flops_train=count_flops(train, input_size),
        flops_deploy=count_flops(deploy, input_size),
        img_s_train=wall["train"],
        img_s_deploy=wall["deploy"],
        speedup=wall["deploy"] / wall["train"],
        img_cpu_s_train=cpu["train"],
        img_cpu_s_deploy=cpu["deploy"],
        speedup_cpu_time=cpu["deploy"] / cpu["train"],
        max_abs_diff_deploy_vs_train=max_diff,
    )


def render(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Model benchmark (training form vs deploy form)",
        "",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']}",
        f"- torch {meta['torch']}, timm {meta['timm']}, fvcore {meta['fvcore']}, "
        f"python {meta['python']}",
        f"- CPU throughput: eval, no_grad, batch {meta['batch']}, float32, NCHW input, "
        f"torch.set_num_threads({meta['threads']}), {meta['warmup']} warm-up runs, median of "
        f"{meta['runs']} interleaved runs",
        f"- load average (1, 5, 15 min) before: {meta['load_before']}; after: {meta['load_after']}",
        f"- FLOPs: {FLOP_CONVENTION} (`zoo::dwconv2d` counted as output numel x kh x kw), "
        "batch 1 at the model's default resolution",
        f"- command: `{meta['command']}`",
        "",
        "img/s = images per wall-clock second; img/CPU-s = images per second of process CPU "
        "time (all threads), which preemption by other processes does not inflate.",
        "",
        "| model | input | params train | params deploy | GFLOPs train | GFLOPs deploy "
        "| img/s train | img/s deploy | deploy/train | img/CPU-s train | img/CPU-s deploy "
        "| deploy/train (CPU time) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        deploy = "" if r["has_deploy_form"] else " (no deploy form)"
        lines.append(
            f"| {r['model']}{deploy} | {r['input_size'][1]}x{r['input_size'][2]} "
            f"| {r['params_train']:,} | {r['params_deploy']:,} "
            f"| {r['flops_train'] / 1e9:.3f} | {r['flops_deploy'] / 1e9:.3f} "
            f"| {r['img_s_train']:.1f} | {r['img_s_deploy']:.1f} | {r['speedup']:.2f}x "
            f"| {r['img_cpu_s_train']:.1f} | {r['img_cpu_s_deploy']:.1f} "
            f"| {r['speedup_cpu_time']:.2f}x |"
        )
    published = [r for r in rows if r["model"] in PAPER_FLOPS]
    if published:
        lines += ["", "Published FLOPs:", ""]
    for r in published:
        paper, how = PAPER_FLOPS[r["model"]]
        lines.append(
            f"- {r['model']}: ours {r['flops_train'] / 1e9:.4f} G (fvcore) vs paper "
            f"{paper / 1e9:.3f} G. {how}."
        )
    return "\n".join(lines) + "\n"


# --device cuda: the zoo's large-kernel models next to timm's ConvNeXt-T and InceptionNeXt-T.
CUDA_MODELS = ("unireplknet_t", "inceptionnext_tiny", "convnext_tiny", "inception_next_tiny")
CUDA_DEVICE = "cuda"  # a module constant so that the CUDA path can be dry-run on a CPU


def _cuda_time(fns: dict, warmup: int, runs: int) -> dict:
    """Median seconds per call of each fn, runs interleaved across fns (CUDA-synchronised)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    seconds = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in seconds.items()}


def _cuda_cases(name: str, args) -> tuple[dict, dict]:
    """Inference (eval, no_grad; deploy form too where the model has one) and one training step
    (forward, cross-entropy, backward, SGD step) of `name` under bf16 autocast."""
    device = torch.device(CUDA_DEVICE)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = timm.create_model(name, **create_kwargs(name)).to(device, memory_format=fmt)
    size = model.pretrained_cfg["input_size"]
    info = dict(params=sum(p.numel() for p in model.parameters()), input=size)
    x_eval = torch.randn(args.batch, *size, device=device).contiguous(memory_format=fmt)
    x_train = torch.randn(args.train_batch, *size, device=device).contiguous(memory_format=fmt)
    labels = torch.randint(0, model.num_classes, (args.train_batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731

    def train_step() -> None:
        model.train()
        with autocast():
            loss = nn.functional.cross_entropy(model(x_train), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def inference(m):
        def run() -> None:
            with torch.no_grad(), autocast():
                m(x_eval)

        return run

    cases = {f"{name}:train": train_step, f"{name}:infer": inference(model.eval())}
    if has_deploy_form(model):
        deploy = zoo.reparameterize(copy.deepcopy(model).eval())
        cases[f"{name}:infer-deploy"] = inference(deploy)
    return cases, info


def main_cuda(args) -> None:
    if not torch.cuda.is_available():
        sys.exit(
            "benchmark_models.py --device cuda: no CUDA device (torch.cuda.is_available() is False)"
        )
    import triton  # noqa: PLC0415  (versions for the record; CUDA mode only)

    names = args.models or list(CUDA_MODELS)
    cases, info = {}, {}
    for name in names:
        print(f"{name} ...", flush=True)
        model_cases, info[name] = _cuda_cases(name, args)
        cases.update(model_cases)
    seconds = _cuda_time(cases, args.warmup, args.runs)
    batch = {"train": args.train_batch, "infer": args.batch, "infer-deploy": args.batch}
    img_s = {k: batch[k.partition(":")[2]] / v for k, v in seconds.items()}
    base = "convnext_tiny" if "convnext_tiny" in names else names[0]
    lines = [
        "# Model benchmark (CUDA)",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- device: {torch.cuda.get_device_name()}; torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), triton {triton.__version__}, timm {timm.__version__}, "
        f"python {platform.python_version()}",
        f"- bf16 autocast, {'channels_last' if args.channels_last else 'NCHW'} input; inference: "
        f"eval, no_grad, batch {args.batch}; training step: forward + cross-entropy + backward "
        f"+ SGD step, batch {args.train_batch}; {args.warmup} warm-up calls (Triton compiles "
        f"there), median of {args.runs} interleaved calls",
        "- dwconv backend: auto (Triton on CUDA) for the zoo models; timm's models use F.conv2d",
        f"- command: `python tools/benchmark_models.py {' '.join(sys.argv[1:])}`",
        "",
        f"| model | params | train img/s | infer img/s | infer img/s (deploy form) "
        f"| train vs {base} | infer vs {base} |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        deploy = img_s.get(f"{name}:infer-deploy")
        lines.append(
            f"| {name} | {info[name]['params'] / 1e6:.1f} M | {img_s[f'{name}:train']:.0f} "
            f"| {img_s[f'{name}:infer']:.0f} | {'-' if deploy is None else f'{deploy:.0f}'} "
            f"| {img_s[f'{name}:train'] / img_s[f'{base}:train']:.2f}x "
            f"| {max(img_s[f'{name}:infer'], deploy or 0) / img_s[f'{base}:infer']:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    (out / "models_cuda.md").write_text(text)
    (out / "models_cuda.json").write_text(json.dumps(dict(img_s=img_s, info=info), indent=1))
    print(f"wrote {out / 'models_cuda.md'} and .json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="timm names (default: one per zoo family)")
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"],
        help="cpu: the CPU table (default); cuda: inference and training-step img/s on the GPU, "
        f"default models {', '.join(CUDA_MODELS)} (fails without CUDA)",
    )  # fmt: skip
    parser.add_argument("--train-batch", type=int, default=64, help="with --device cuda")
    parser.add_argument(
        "--nchw", dest="channels_last", action="store_false", help="with --device cuda"
    )
    parser.add_argument("--batch", type=int, default=None, help="8 on the CPU, 128 with CUDA")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", default="benchmarks")
    args = parser.parse_args()
    unknown = [m for m in args.models if not timm.is_model(m)]
    if unknown:
        parser.error(f"unknown model(s) {unknown}")
    if args.batch is None:
        args.batch = 128 if args.device == "cuda" else 8
    if args.device == "cuda":
        main_cuda(args)
        return
    models = {m: create_kwargs(m) for m in args.models or default_models()}
    torch.set_num_threads(args.threads)

    meta = dict(
        date=f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        machine=cpu_model(),
        torch=torch.__version__,
        timm=timm.__version__,
        fvcore=version("fvcore"),
        python=platform.python_version(),
        threads=torch.get_num_threads(),
        batch=args.batch,
        warmup=args.warmup,
        runs=args.runs,
        load_before=load_average(),
        command="python tools/benchmark_models.py " + " ".join(sys.argv[1:]),
        flop_convention=FLOP_CONVENTION,
    )
    rows = []
    for name, kwargs in models.items():
        print(f"{name} ...", flush=True)
        rows.append(benchmark(name, kwargs, args.batch, args.warmup, args.runs))
    comparisons = [
        compare(name, COMPARISONS[name], args.batch, args.warmup, args.runs)
        for name in models
        if name in COMPARISONS
    ]
    meta["load_after"] = load_average()
    text = render(rows, meta) + render_comparisons(comparisons)
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    (out / "models_cpu.md").write_text(text)
    (out / "models_cpu.json").write_text(
        json.dumps(dict(meta=meta, rows=rows, comparisons=comparisons), indent=1)
    )
    print(f"wrote {out / 'models_cpu.md'} and .json")


if __name__ == "__main__":
    main()
