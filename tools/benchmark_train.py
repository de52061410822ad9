"""Lightning overhead per training step: `zoo.tasks.ClassificationTask` under `lightning.Trainer`
vs a bare PyTorch loop, same model, optimizer, schedule, batch and data, measured side by side.

Both sides time the full period between the starts of consecutive steps (data fetch, forward,
backward, optimizer and scheduler step, and for Lightning its loop, hooks and logging), as wall
time and as this process's CPU time (all threads; on a shared CPU the wall time also counts the
time other processes held the cores, the CPU time does not). They run in alternating blocks
(Lightning, bare, Lightning, ...) so that drift in machine load hits both alike; the first step
of every block is dropped; medians are compared.

    python tools/benchmark_train.py                      # inceptionnext_atto, digits 32x32, b64
    python tools/benchmark_train.py --model unireplknet_a --batch-size 32 --rounds 5
Writes benchmarks/train_<device>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import lightning
import lightning.pytorch as pl
import timm
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch.utils.data import DataLoader, TensorDataset

from zoo.data import DigitsDataModule
from zoo.tasks import ClassificationTask

ROOT = Path(__file__).resolve().parents[1]
Clock = tuple[float, float]  # (wall seconds, process CPU seconds)


def _now(device: torch.device) -> Clock:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


class _StepClock(pl.Callback):
    """The clock at the start of every training step and at the end of training."""

    def __init__(self) -> None:
        self.starts: list[Clock] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(_now(pl_module.device))

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append(_now(pl_module.device))


def _periods(starts: list[Clock]) -> list[Clock]:
    # the first period of a block carries the block's start-up: dropped
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(starts[1:-1], starts[2:], strict=True)]


def _loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> DataLoader:
    return DataLoader(
        TensorDataset(images, labels), batch_size=batch_size, shuffle=True, drop_last=True
    )


class _FixedData(pl.LightningDataModule):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        super().__init__()
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.num_classes = 10

    def train_dataloader(self) -> DataLoader:
        return _loader(self.images, self.labels, self.batch_size)


def lightning_block(
    task: ClassificationTask, data: _FixedData, steps: int, accel: str, precision: str
) -> list[Clock]:
    clock = _StepClock()
    trainer = pl.Trainer(
        accelerator=accel,
        devices=1,
        max_steps=steps,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, datamodule=data)
    return _periods(clock.starts)


def bare_block(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched,
    loader: DataLoader,
    steps: int,
    device: torch.device,
    precision: str,
    step0: int,
) -> list[Clock]:
    autocast = precision.startswith(("bf16", "16"))
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=precision.startswith("16"))
    starts, batches = [], iter(loader)
    model.train()
    for step in range(steps):
        starts.append(_now(device))
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step_update(num_updates=step0 + step + 1)
    starts.append(_now(device))
    return _periods(starts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="inceptionnext_atto")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12, help="steps per block")
    ap.add_argument("--rounds", type=int, default=3, help="Lightning/bare block pairs")
    ap.add_argument("--precision", default="32-true", help="32-true | bf16-mixed | 16-mixed")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="output stem (default benchmarks/train_<dev>)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    dm = DigitsDataModule(image_size=args.image_size, augment=False)
    dm.setup("fit")
    images, labels = dm.train_set.images, dm.train_set.labels
    if device.type == "cuda":
        # the data lives on the device for both sides, so neither pays host-to-device copies
        images, labels = images.to(device), labels.to(device)
    data = _FixedData(images, labels, args.batch_size)
    hp = dict(model_name=args.model, num_classes=10, sched="cosine", warmup_epochs=1)
    task = ClassificationTask(**hp)

    # the bare side: the same model, optimizer factory and schedule as the task builds
    model = ClassificationTask(**hp).model.to(device)
    opt = create_optimizer_v2(
        model, opt=task.hparams.opt, lr=task.hparams.lr, weight_decay=task.hparams.weight_decay
    )
    per_epoch = len(images) // args.batch_size
    sched, _ = create_scheduler_v2(
        opt,
        sched="cosine",
        num_epochs=max(1, args.steps * args.rounds // per_epoch),
        warmup_epochs=1,
        step_on_epochs=False,
        updates_per_epoch=per_epoch,
    )
    loader = _loader(images, labels, args.batch_size)

    accel = "gpu" if device.type == "cuda" else "cpu"
    light: list[Clock] = []
    bare: list[Clock] = []
    for r in range(args.rounds):
        light += lightning_block(task, data, args.steps, accel, args.precision)
        bare += bare_block(
            model, opt, sched, loader, args.steps, device, args.precision, r * args.steps
        )
        lw, bw = (statistics.median(t[0] for t in v) * 1e3 for v in (light, bare))
        lc, bc = (statistics.median(t[1] for t in v) * 1e3 for v in (light, bare))
        print(
            f"round {r + 1}/{args.rounds}: wall ms lightning {lw:.1f} bare {bw:.1f} | "
            f"cpu ms lightning {lc:.1f} bare {bc:.1f}",
            flush=True,
        )

    stats = {}
    for k, kind in enumerate(("wall", "cpu")):
        lt, bt = [t[k] * 1e3 for t in light], [t[k] * 1e3 for t in bare]
        lm, bm = statistics.median(lt), statistics.median(bt)
        stats[kind] = {
            "lightning_median_ms": lm,
            "bare_median_ms": bm,
            "overhead_percent": (lm / bm - 1) * 100,
            "lightning_ms": lt,
            "bare_ms": bt,
        }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    load = os.getloadavg()
    result = {
        "model": args.model,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "precision": args.precision,
        "device": f"{device.type} ({name or platform.machine()})",
        "threads": torch.get_num_threads(),
        "steps_timed_each": len(light),
        "load_average_at_end": load,
        "logical_cpus": os.cpu_count(),
        **stats,
        "versions": {
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
        },
        "command": " ".join(
            [f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] * ("OMP_NUM_THREADS" in os.environ)
            + ["python tools/benchmark_train.py", *sys.argv[1:]]
        ),
    }
    stem = Path(args.out) if args.out else ROOT / "benchmarks" / f"train_{device.type}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    w, c = stats["wall"], stats["cpu"]
    md = [
        "# Lightning overhead per training step",
        "",
        f"`{result['command']}`: {args.model}, batch {args.batch_size}, "
        f"{args.image_size}x{args.image_size} digits, {args.precision}, {result['device']}, "
        f"{result['threads']} threads; torch {torch.__version__}, lightning "
        f"{lightning.__version__}, timm {timm.__version__}. Alternating blocks of "
        f"{args.steps} Lightning and {args.steps} bare steps, {args.rounds} rounds; time from "
        "the start of one step to the next; the first step of each block dropped.",
        "",
        "| loop | median wall ms/step | median CPU ms/step | steps |",
        "|---|---|---|---|",
        f"| Lightning (`ClassificationTask` + `Trainer`) | {w['lightning_median_ms']:.1f} | "
        f"{c['lightning_median_ms']:.1f} | {len(light)} |",
        f"| bare PyTorch loop | {w['bare_median_ms']:.1f} | {c['bare_median_ms']:.1f} | "
        f"{len(bare)} |",
        f"| **Lightning overhead** | **{w['overhead_percent']:+.1f} %** | "
        f"**{c['overhead_percent']:+.1f} %** | |",
        "",
        f"Load average at the end: {load[0]:.1f} on {os.cpu_count()} logical CPUs. On a shared "
        "machine the CPU-time column is the robust one (wall time also counts the time other "
        "processes held the cores).",
    ]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md[-9:]))


if __name__ == "__main__":
    main()
