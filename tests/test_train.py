"""train.py / zoo.tasks: the CLI end to end (fit, print_config, DDP, kill + resume), checkpoint
safety, the timm schedule, and user errors that must read as one clear line."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import timm
import torch
import yaml

from zoo.data.layout import ConfigError
from zoo.tasks import AtomicCheckpointIO, ClassificationTask
from zoo.tasks.cli import ZooCLI, main

ROOT = Path(__file__).resolve().parents[1]
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
    "--trainer.accelerator=cpu",
]
# test_convnext: timm's 0.2M-parameter ConvNeXt; digits at 32x32 (its stride is 32)
CLS = [
    "--model=ClassificationTask",
    "--model.model_name=test_convnext",
    "--model.num_classes=10",
    "--data=DigitsDataModule",
    "--data.image_size=32",
    "--data.batch_size=8",
]
# BEVANet at a fraction of its width so that a step takes well under a second
TINY_BEVANET_KWARGS = {"planes": 8, "ppm_planes": 8, "head_planes": 8, "depths": [1, 1, 1],
                       "semantic_kernel_size": 7, "detail_kernel_size": 7}  # fmt: skip
TINY_BEVANET = f"--model.model_kwargs={json.dumps(TINY_BEVANET_KWARGS)}"


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("ZOO_TRACEBACK", None)
    return env


def run_cli(tmp_path: Path, *args: str, **kwargs) -> ZooCLI:
    return ZooCLI(args=["fit", *QUIET, f"--trainer.default_root_dir={tmp_path}", *args], **kwargs)


class _Snapshot(pl.Callback):
    """Keeps a copy of the weights as training starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.before = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------------
# fit through the CLI, one run per task


def test_fit_two_steps_classification_with_all_switches(tmp_path: Path, capsys) -> None:
    """Mixup/CutMix + label smoothing + EMA + bf16 autocast + clipping + grad checkpointing +
    channels_last in one 2-step run; the checkpoint is weights-only loadable."""
    snap = _Snapshot()
    cli = run_cli(
        tmp_path,
        *CLS,
        "--model.mixup_alpha=0.8",
        "--model.cutmix_alpha=1.0",
        "--model.label_smoothing=0.1",
        "--model.warmup_epochs=0.05",
        "--model.grad_checkpointing=true",
        "--model.channels_last=true",
        "--trainer.precision=bf16-mixed",
        "--trainer.gradient_clip_val=1.0",
        "--trainer.callbacks+=EMAWeightAveraging",
        "--trainer.callbacks.decay=0.9",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=2",
        "--trainer.val_check_interval=2",
        trainer_defaults={"callbacks": [snap]},
    )
    task = cli.model
    assert cli.trainer.global_step == 2
    assert all(stage.grad_checkpointing for stage in task.model.stages)
    stem_w = task.model.stem[0].weight
    assert stem_w.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    ckpt = _load(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 2
    # EMAWeightAveraging: averaged weights in state_dict, live ones kept alongside
    assert "current_model_state" in ckpt
    live = ckpt["current_model_state"]["model.head.fc.weight"]
    avg = ckpt["state_dict"]["model.head.fc.weight"]
    assert not torch.equal(live, avg)
    assert not torch.equal(snap.before["model.head.fc.weight"], live)
    assert (tmp_path / "metrics.png").stat().st_size > 0
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "trained 2 steps, 0 epochs finished; epoch 1 stopped after 2 of 179 batches" in out
    acc1 = float(cli.trainer.callback_metrics["val/acc1"])
    assert f"validation (run 1, at epoch 1, step 2): val/acc1={acc1:.4f}" in out


def test_fit_two_steps_binary_segmentation_mkunet_deep_supervision(tmp_path: Path) -> None:
    snap = _Snapshot()
    cli = run_cli(
        tmp_path,
        "--model=SegmentationTask",
        "--model.model_name=mk_unet_t",
        "--model.num_classes=1",
        "--model.loss=structure",
        "--model.deep_supervision=true",
        "--data=MaskFolderDataModule",  # root unset: generated blobs
        "--data.embedded_size=32",
        "--data.batch_size=4",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.val_check_interval=2",
        trainer_defaults={"callbacks": [snap]},
    )
    assert cli.trainer.global_step == 2
    assert cli.model.use_heads and cli.model.loss_name == "structure"
    assert {"val/dice", "val/miou", "val/iou_fg"} <= set(cli.trainer.callback_metrics)
    # deep supervision: the auxiliary heads (unused by forward()) received gradients
    after = cli.model.model.aux_heads[0].weight
    assert not torch.equal(snap.before["model.aux_heads.0.weight"], after)
    assert (tmp_path / "overlays" / "epoch_000.png").is_file()


def test_fit_two_steps_multiclass_segmentation_bevanet_loss(tmp_path: Path) -> None:
    cli = run_cli(
        tmp_path,
        "--model=SegmentationTask",
        "--model.model_name=bevanet_s",
        "--model.num_classes=5",
        "--model.loss=bevanet",
        TINY_BEVANET,
        "--data=ShapesDataModule",
        "--data.num_classes=5",
        "--data.image_size=64",
        "--data.num_train=8",
        "--data.num_val=4",
        "--data.batch_size=4",
        "--trainer.max_steps=2",
    )
    assert cli.trainer.global_step == 2
    assert cli.model.loss_name == "bevanet"
    assert 0.0 <= float(cli.trainer.callback_metrics["val/miou"]) <= 1.0
    # predict writes overlay PNGs
    cli.trainer.predict(cli.model, datamodule=cli.datamodule)
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir())[0].endswith(".png")


def test_binary_segmentation_metrics_match_hand_computed_dice_and_miou() -> None:
    from zoo.tasks import SegmentationTask

    task = SegmentationTask(model_name="mk_unet_t", num_classes=1, num_overlays=0)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = 1  # 8 foreground pixels
    logits = torch.full((1, 1, 4, 4), -3.0)
    logits[0, 0, 1:3] = 3.0  # predicted foreground: rows 1-2 -> TP 4, FP 4, FN 4, TN 4
    task.forward = lambda x: logits
    with pytest.warns(UserWarning):  # self.log without a Trainer
        task.validation_step((torch.zeros(1, 3, 4, 4), target), 0)
    tp, fp, fn, tn = 4, 4, 4, 4
    assert float(task.val_dice.compute()) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    miou = (tp / (tp + fp + fn) + tn / (tn + fn + fp)) / 2
    assert float(task.val_miou.compute()) == pytest.approx(miou)


def test_summary_after_a_max_steps_stop_says_what_ran_and_how_to_validate(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    import zoo.tasks.callbacks as callbacks

    titles = []
    real_plot = callbacks.plot_metrics
    monkeypatch.setattr(
        callbacks,
        "plot_metrics",
        lambda h, p, title: (titles.append(title), real_plot(h, p, title)),
    )
    run_cli(tmp_path, *CLS, "--trainer.max_steps=2", "--trainer.check_val_every_n_epoch=10")
    out = capsys.readouterr().out
    assert "trained 2 steps, 0 epochs finished; epoch 1 stopped after 2 of 179 batches" in out
    assert "no validation ran: it runs every 10 epochs (check_val_every_n_epoch=10)" in out
    assert "--trainer.check_val_every_n_epoch=1" in out
    assert "after 1 epochs" not in out
    assert titles == ["test_convnext on scikit-learn digits"]
    assert (tmp_path / "metrics.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------------
# segmentation losses: chosen by the model, options checked


def _seg_task(model_name: str, num_classes: int, **kwargs):
    from zoo.tasks import SegmentationTask

    tiny = {"model_kwargs": TINY_BEVANET_KWARGS} if model_name.startswith("bevanet") else {}
    return SegmentationTask(model_name, num_classes, num_overlays=0, **tiny, **kwargs)


def test_ce_loss_takes_class_weights_label_smoothing_and_sums_heads() -> None:
    import torch.nn.functional as F

    weights = [1.0, 2.0, 0.5]
    task = _seg_task(
        "mk_unet_t", 3, loss="ce", loss_kwargs={"class_weights": weights, "label_smoothing": 0.1}
    )
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=gen)
    labels = torch.randint(0, 3, (2, 8, 8), generator=gen)
    labels[0, :2] = 255  # the task's ignore_index
    expect = F.cross_entropy(
        logits, labels, weight=torch.tensor(weights), ignore_index=255, label_smoothing=0.1
    )
    assert torch.allclose(task.criterion(logits, labels), expect)
    heads = {"out": logits, "aux": logits.flip(-1)}
    both = expect + F.cross_entropy(
        heads["aux"], labels, weight=torch.tensor(weights), ignore_index=255, label_smoothing=0.1
    )
    assert torch.allclose(task.criterion(heads, labels), both)


@pytest.mark.parametrize(
    ("model_name", "num_classes", "loss", "accepted"),
    [
        ("mk_unet_t", 3, "ce", ["class_weights", "ignore_index", "label_smoothing"]),
        ("mk_unet_t", 1, "structure", ["weights"]),
        ("mk_unet_t", 1, "dice_bce", ["bce_weight", "dice_weight", "smooth"]),
        ("bevanet_s", 3, "bevanet", ["class_weights", "ohem_thresh", "boundary_weight"]),
    ],
)
def test_unknown_loss_kwargs_name_the_loss_and_what_it_accepts(
    model_name: str, num_classes: int, loss: str, accepted: list[str]
) -> None:
    with pytest.raises(ConfigError) as exc:
        _seg_task(model_name, num_classes, loss=loss, loss_kwargs={"gamma": 2.0})
    msg = str(exc.value)
    assert "gamma" in msg and f"loss='{loss}'" in msg
    assert all(key in msg.split("accepts:")[1] for key in accepted), msg


def test_auto_loss_is_the_models_declared_default(monkeypatch) -> None:
    from zoo.losses import CITYSCAPES_CLASS_WEIGHTS
    from zoo.models.mkunet import MKUNet

    assert _seg_task("mk_unet_t", 1).loss_name == "structure"
    assert _seg_task("mk_unet_t", 3).loss_name == "ce"  # structure is binary: the fallback
    bevanet = _seg_task("bevanet_s", 19, loss_kwargs={"class_weights": "cityscapes"})
    assert bevanet.loss_name == "bevanet"
    expect = torch.tensor(CITYSCAPES_CLASS_WEIGHTS).float()
    assert torch.equal(bevanet.criterion.class_weights, expect)
    # the model's attribute decides, not its name
    monkeypatch.setattr(MKUNet, "default_loss", "dice_bce")
    assert _seg_task("mk_unet_t", 1).loss_name == "dice_bce"
    monkeypatch.delattr(MKUNet, "default_loss")
    assert _seg_task("mk_unet_t", 1).loss_name == "dice_bce"
    assert _seg_task("mk_unet_t", 3).loss_name == "ce"


# ------------------------------------------------------------------------------------------------
# loggers: CSV by default, TensorBoard on request


def test_csv_logger_by_default_and_tensorboard_on_request(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    args = [*CLS, "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"]
    default = ZooCLI(args=[*args, f"--trainer.default_root_dir={tmp_path / 'd'}"], run=False)
    assert [type(lg) for lg in default.trainer.loggers] == [CSVLogger]
    cli = ZooCLI(
        args=[
            "fit",
            *args,
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--trainer.limit_val_batches=2",
            "--trainer.log_every_n_steps=1",
            "--tensorboard=true",
        ]
    )
    assert [type(lg) for lg in cli.trainer.loggers] == [CSVLogger, TensorBoardLogger]
    run = tmp_path / "lightning_logs" / "version_0"
    events = list(run.glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(run)).Reload().Tags()["scalars"]
    assert "train/loss_step" in scalars and "val/acc1" in scalars
    assert "val/acc1" in (run / "metrics.csv").read_text().splitlines()[0]
    assert (tmp_path / "metrics.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------------
# --print_config


def _print_config(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        ZooCLI(args=["fit", *args, "--print_config"])
    assert exc.value.code in (0, None)
    return capsys.readouterr().out


def test_print_config_round_trips_with_overrides(tmp_path: Path, capsys) -> None:
    demo = ROOT / "configs" / "classification" / "demo.yaml"
    first = _print_config(capsys, f"--config={demo}", "--model.lr=0.0123", "--trainer.max_epochs=3")
    printed = yaml.safe_load(first)
    assert printed["model"]["init_args"]["lr"] == 0.0123
    assert printed["trainer"]["max_epochs"] == 3
    assert printed["checkpoint"]["save_last"] is True
    saved = tmp_path / "printed.yaml"
    saved.write_text(first)
    assert _print_config(capsys, f"--config={saved}") == first


# ------------------------------------------------------------------------------------------------
# scheduler: timm's warm-up + cosine, stepped per iteration


def test_warmup_cosine_schedule_matches_formula() -> None:
    base, warm_lr, min_lr, steps, warm_steps = 1e-2, 1e-5, 1e-4, 20, 4
    task = ClassificationTask(
        model_name="test_convnext",
        num_classes=10,
        lr=base,
        warmup_epochs=1,
        warmup_lr=warm_lr,
        min_lr=min_lr,
        weight_decay=0.0,
    )
    fake = SimpleNamespace(estimated_stepping_batches=steps, max_epochs=5, global_step=0)
    task._trainer = fake  # configure_optimizers only reads these three attributes
    conf = task.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    for t in range(steps):
        if t < warm_steps:
            expect = warm_lr + t * (base - warm_lr) / warm_steps
        else:
            expect = min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * t / steps))
        assert opt.param_groups[0]["lr"] == pytest.approx(expect, rel=1e-6), t
        fake.global_step = t + 1
        task.lr_scheduler_step(sched, None)


# ------------------------------------------------------------------------------------------------
# checkpoints: atomic writes, weights-only loading


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_loading_refuses_pickled_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Evil(str(marker))}, evil)
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)
    assert not marker.exists()
    # through the CLI as well: validate --ckpt_path goes through the same CheckpointIO
    with pytest.raises(pickle.UnpicklingError):
        ZooCLI(
            args=[
                "validate",
                *QUIET,
                *CLS,
                f"--trainer.default_root_dir={tmp_path}",
                f"--ckpt_path={evil}",
            ]
        )
    assert not marker.exists()


def test_atomic_save_keeps_old_file_when_write_dies(tmp_path: Path, monkeypatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def dying_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # a kill in the middle of torch.save

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    assert _load(path)["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


class _FirstStep(pl.Callback):
    def __init__(self) -> None:
        self.first: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first is None:
            self.first = trainer.global_step


def test_sigkill_mid_epoch_then_resume_from_last(tmp_path: Path) -> None:
    args = [
        *QUIET,
        *CLS,
        f"--trainer.default_root_dir={tmp_path}",
        "--data.batch_size=4",
        "--trainer.max_epochs=1",
        "--trainer.limit_val_batches=0",
        "--checkpoint.every_n_train_steps=1",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "fit", *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    last = tmp_path / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if last.exists() and _load(last)["global_step"] >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    # every checkpoint under its final name is complete (temp files are dot-prefixed)
    ckpts = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    steps = {p.name: _load(p)["global_step"] for p in ckpts}
    killed_at = steps["last.ckpt"]
    assert killed_at >= 3 and killed_at < 1437 // 4  # mid-epoch
    recorder = _FirstStep()
    cli = ZooCLI(
        args=["fit", *args, "--ckpt_path=last", f"--trainer.max_steps={killed_at + 2}"],
        trainer_defaults={"callbacks": [recorder]},
    )
    assert recorder.first == killed_at
    assert cli.trainer.global_step == killed_at + 2
    assert _load(last)["global_step"] == killed_at + 2
    # and the resumed checkpoint serves `validate`
    val = ZooCLI(args=["validate", *args, f"--ckpt_path={last}", "--trainer.limit_val_batches=2"])
    assert 0.0 <= float(val.trainer.callback_metrics["val/acc1"]) <= 1.0


# ------------------------------------------------------------------------------------------------
# DDP: two CPU ranks over gloo end with the same weights

DDP_SCRIPT = """
import sys, torch
import lightning.pytorch as pl
from zoo.tasks.cli import ZooCLI

class Dump(pl.Callback):
    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.state_dict(), f"{OUT}/rank{trainer.global_rank}.pt")

ZooCLI(args=sys.argv[1:], trainer_defaults={"callbacks": [Dump()]})
"""


def test_ddp_two_cpu_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    script = tmp_path / "ddp_fit.py"
    script.write_text(f"OUT = {str(tmp_path)!r}\n" + DDP_SCRIPT)
    cmd = [
        sys.executable,
        str(script),
        "fit",
        *QUIET,
        *CLS,
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.max_steps=3",
        "--trainer.limit_val_batches=0",
    ]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "distributed_backend=gloo" in res.stderr + res.stdout
    r0, r1 = _load(tmp_path / "rank0.pt"), _load(tmp_path / "rank1.pt")
    init = ClassificationTask(model_name="test_convnext", num_classes=10).state_dict()
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    assert not torch.equal(r0["model.head.fc.weight"], init["model.head.fc.weight"])


# ------------------------------------------------------------------------------------------------
# user errors: one clear line, exit status 2, no traceback


def _cli_error(capsys, *args: str) -> str:
    """stderr of a run that stops on a user error: exit status 2 and no traceback."""
    with pytest.raises(SystemExit) as exc:
        main(["fit", *QUIET, *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_unknown_model_name_suggests_close_matches_without_traceback(tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "fit",
            *QUIET,
            *CLS,
            "--model.model_name=inceptionnext_atoo",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "unknown model name 'inceptionnext_atoo'" in res.stderr
    assert "inceptionnext_atto" in res.stderr.split("Did you mean:")[1]


def test_invalid_config_key_is_rejected_by_name(capsys, tmp_path: Path) -> None:
    err = _cli_error(capsys, *CLS, "--model.learning_rate=0.1")
    assert "learning_rate" in err
    config = tmp_path / "bad.yaml"
    config.write_text("trainer:\n  max_epochz: 3\n")
    err = _cli_error(capsys, *CLS, f"--config={config}")
    assert "max_epochz" in err


def test_missing_data_folder_names_path_and_layout(capsys, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    err = _cli_error(
        capsys,
        "--model=SegmentationTask",
        "--model.model_name=mk_unet_t",
        "--data=MaskFolderDataModule",
        f"--data.root={missing}",
    )
    assert str(missing) in err and "does not exist" in err
    assert "<root>/images/" in err and "<root>/masks/" in err


def test_malformed_data_folder_says_what_is_missing(capsys, tmp_path: Path) -> None:
    (tmp_path / "train" / "cat").mkdir(parents=True)
    args = (*CLS[:3], "--data=ImageFolderDataModule", f"--data.root={tmp_path}")
    err = _cli_error(capsys, *args)
    assert "class folders without images" in err and f"{tmp_path / 'train'}" in err
    _png(tmp_path / "train" / "cat" / "a.png")
    err = _cli_error(capsys, *args)
    assert f"{tmp_path / 'val'}" in err and "does not exist" in err
    assert "<root>/val/<class_name>/" in err


def _png(path: Path, value: int = 0, size: int = 8) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), value).save(path)


def test_mask_image_count_mismatch_lists_the_unpaired_files(capsys, tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "images" / f"case{i}.png", 100)
    for i in range(2):
        _png(tmp_path / "masks" / f"case{i}_segmentation.png", 255)  # ISIC-style names pair
    err = _cli_error(
        capsys,
        "--model=SegmentationTask",
        "--model.model_name=mk_unet_t",
        "--data=MaskFolderDataModule",
        f"--data.root={tmp_path}",
    )
    assert "3 images" in err and "2 masks" in err and "case2.png" in err


def test_num_classes_disagreeing_with_labels_found(capsys, tmp_path: Path) -> None:
    for split in ("train", "val"):
        for cls in ("cat", "dog", "eel"):
            _png(tmp_path / split / cls / "a.png", 50, size=32)
    # the data's own check (data.num_classes) ...
    err = _cli_error(
        capsys,
        *CLS[:3],
        "--data=ImageFolderDataModule",
        f"--data.root={tmp_path}",
        "--data.num_classes=5",
    )
    assert "data.num_classes=5" in err and "3 class folders" in err
    # ... and the model's (model.num_classes vs the classes the data found)
    err = _cli_error(
        capsys,
        *CLS[:3],
        "--data=ImageFolderDataModule",
        "--data.image_size=32",
        f"--data.root={tmp_path}",
        "--data.num_workers=0",
        "--trainer.max_steps=1",
        f"--trainer.default_root_dir={tmp_path}",
    )
    assert "model.num_classes=10" in err and "has 3 classes (cat, dog, eel)" in err
    assert "--model.num_classes=3" in err


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_pretrained_file_with_a_head_of_the_requested_classes_keeps_it(tmp_path):
    """Fine-tuning from one's own 10-class checkpoint: timm alone drops the classifier whenever
    num_classes differs from the architecture's default (1000), losing the trained head."""
    from safetensors.torch import save_file

    from zoo.tasks import create_model_by_name

    torch.manual_seed(0)
    trained = timm.create_model("inceptionnext_atto", num_classes=10).eval()
    with torch.no_grad():
        trained.get_classifier().weight.normal_()
    path = tmp_path / "digits.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    loaded = create_model_by_name("inceptionnext_atto", str(path), num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained(x))
    # a head of another size is still dropped (fine-tuning an ImageNet file to 7 classes)
    other = create_model_by_name("inceptionnext_atto", str(path), num_classes=7)
    assert other.get_classifier().weight.shape[0] == 7


def test_model_summary_counts_flops_on_a_sample_of_the_data():
    """Lightning's summary measures FLOPs on example_input_array: without one it said
    "Total FLOPs: 0" for every config."""
    from lightning.pytorch.utilities.model_summary import ModelSummary
    from torch.utils.flop_counter import FlopCounterMode

    from zoo.data import DigitsDataModule

    data = DigitsDataModule(batch_size=8)
    data.setup("fit")
    task = ClassificationTask(model_name="inceptionnext_atto", num_classes=10)
    task.use_example_input(data)
    assert tuple(task.example_input_array.shape) == (1, *data.val_set[0][0].shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        task.model.eval()(task.example_input_array)
    assert ModelSummary(task).total_flops == counter.get_total_flops() > 0
