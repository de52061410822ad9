"""zoo.tasks.DistillationTask under Lightning: the logged loss parts, checkpoints that hold the
bare student (and its EMA), resuming with the branches, the configs in configs/distill/."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import timm
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

import zoo  # noqa: F401  (registers the zoo families)
from zoo.data import DigitsDataModule
from zoo.distill import OFA
from zoo.errors import ConfigError
from zoo.tasks import DistillationTask
from zoo.tasks.cli import ZooCLI, main

ROOT = Path(__file__).resolve().parents[1]
STUDENT, TEACHER = "inceptionnext_atto", "test_resnet"


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    torch.save({"state_dict": timm.create_model(TEACHER, num_classes=10).state_dict()}, path)
    return str(path)


def _task(teacher_file: str, **kwargs) -> DistillationTask:
    args = dict(model_name=STUDENT, num_classes=10, teacher_name=TEACHER, teacher_file=teacher_file)
    return DistillationTask(**{**args, **kwargs})


def _trainer(tmp_path: Path, steps: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps,
        limit_val_batches=1,
        val_check_interval=steps if steps > 0 else 1.0,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
        **kwargs,
    )


def _data() -> DigitsDataModule:
    return DigitsDataModule(image_size=32, batch_size=8)


def test_fit_logs_every_loss_part_and_checkpoints_the_bare_student(tmp_path, teacher_file) -> None:
    task = _task(teacher_file, ema_decay=0.5, eps=[1.0, 1.1, 1.2, 1.3, 1.4])
    teacher_before = {k: v.clone() for k, v in task.model.teacher.state_dict().items()}
    trainer = _trainer(tmp_path, steps=2)
    trainer.fit(task, _data())
    metrics = trainer.callback_metrics
    for part in ("loss_gt", "loss_kd", "loss_ofa"):
        assert torch.isfinite(metrics[f"train/{part}"])
    assert {"train/loss", "val/acc1", "val/acc1_ema"} <= set(metrics)
    for k, v in task.model.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    assert all(p.grad is None for p in task.model.teacher.parameters())

    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    plain = timm.create_model(STUDENT, num_classes=10)
    for key in ("state_dict", "state_dict_ema"):
        result = plain.load_state_dict(ckpt[key], strict=True)
        assert not result.missing_keys and not result.unexpected_keys
    student = task.student.state_dict()
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in student.items())
    assert not all(torch.equal(ckpt["state_dict_ema"][k], v) for k, v in student.items())
    assert not any("teacher" in k for k in ckpt["state_dict"])
    assert set(ckpt["distill_branches"]) == {
        f"branches.{k}" for k in task.model.branches.state_dict()
    }
    # the file is also a pretrained file for timm (whose convention picks the EMA weights; the
    # overlay's num_classes stops timm from dropping a head of a non-default size)
    overlay = dict(file=str(path), num_classes=10)
    again = timm.create_model(
        STUDENT, num_classes=10, pretrained=True, pretrained_cfg_overlay=overlay
    )
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ckpt["state_dict_ema"].items())


def test_resume_restores_student_branches_and_ema(tmp_path, teacher_file) -> None:
    task = _task(teacher_file, ema_decay=0.5)
    trainer = _trainer(tmp_path, steps=2)
    trainer.fit(task, _data())
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)

    loaded = DistillationTask.load_from_checkpoint(path)
    for mine, theirs in ((task.model.student, loaded.model.student),
                         (task.model.branches, loaded.model.branches),
                         (task.student_ema, loaded.student_ema)):  # fmt: skip
        want = mine.state_dict()
        assert all(torch.equal(v, want[k]) for k, v in theirs.state_dict().items())
    # and training continues from there (optimizer state over student + branches)
    resumed = _task(teacher_file, ema_decay=0.5)
    trainer = _trainer(tmp_path, steps=3)
    trainer.fit(resumed, _data(), ckpt_path=path)
    assert trainer.global_step == 3


@pytest.mark.parametrize("distiller", ["kd", "dkd", "none"])
def test_baseline_distillers_train(tmp_path, teacher_file, distiller) -> None:
    task = _task(teacher_file, distiller=distiller, temperature=2.0)
    trainer = _trainer(tmp_path, steps=1)
    trainer.fit(task, _data())
    logged = {k.removesuffix("_epoch").removesuffix("_step") for k in trainer.callback_metrics}
    parts = logged & {"train/loss_gt", "train/loss_kd", "train/loss_ofa"}
    assert parts == (
        {"train/loss_gt"} if distiller == "none" else {"train/loss_gt", "train/loss_kd"}
    )
    assert (task.model.teacher is None) == (distiller == "none")


def test_lightning_weight_averaging_is_refused(tmp_path, teacher_file) -> None:
    trainer = _trainer(tmp_path, steps=1, callbacks=[EMAWeightAveraging()])
    with pytest.raises(ConfigError, match="set model.ema_decay"):
        trainer.fit(_task(teacher_file), _data())


def test_a_teacher_file_is_required_and_the_distiller_name_checked() -> None:
    with pytest.raises(ConfigError, match="needs a trained teacher"):
        DistillationTask(model_name=STUDENT, num_classes=10)
    with pytest.raises(ConfigError, match="distiller must be one of ofa, kd, dkd, none"):
        DistillationTask(model_name=STUDENT, num_classes=10, distiller="fitnet")


def test_step_schedule_decays_every_decay_epochs(tmp_path, teacher_file) -> None:
    task = _task(teacher_file, sched="step", decay_epochs=2, lr=0.1, opt="sgd", distiller="none",
                 model_name="test_convnext")  # fmt: skip
    trainer = _trainer(tmp_path, steps=-1, max_epochs=4, limit_train_batches=3)
    trainer.fit(task, _data())
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    lrs = [scheduler._get_lr(t)[0] for t in (0, 5, 6, 11, 12)]  # 3 updates per epoch
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])


# a ViT student small enough for the digits at 32x32 (a token student in the ViT/MLP recipe)
TINY_VIT = json.dumps(dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2))


@pytest.mark.parametrize(
    ("config", "student"),
    [
        ("imagenet_cnn.yaml", ["--model.model_name=test_convnext"]),
        ("cifar100_cnn.yaml", ["--model.model_name=test_convnext"]),
        ("imagenet_vit_mlp.yaml", ["--model.model_name=vit_tiny_patch16_224",
                                   f"--model.model_kwargs={TINY_VIT}"]),
    ],
)  # fmt: skip
def test_distill_configs_train_on_the_embedded_digits(tmp_path, teacher_file, config, student):
    cli = ZooCLI(
        args=[
            "fit",
            f"--config={ROOT / 'configs' / 'distill' / config}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.accelerator=cpu",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=1",
            "--trainer.val_check_interval=2",
            "--figures.enabled=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--model.teacher_name={TEACHER}",
            f"--model.teacher_file={teacher_file}",
            "--data.batch_size=8",
            *student,
        ]
    )
    task = cli.model
    assert isinstance(task.model, OFA) and task.trainer.global_step == 2
    assert task.hparams.num_classes == 10  # taken from the data (the digits)
    assert task.model.layout.tokens == ("vit" in config)
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss_ofa"])


def test_train_py_reports_a_teacher_of_other_classes_in_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "seven.pth"
    torch.save(timm.create_model(TEACHER, num_classes=7).state_dict(), path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", f"--config={ROOT / 'configs' / 'distill' / 'imagenet_cnn.yaml'}",
              f"--trainer.default_root_dir={tmp_path}", "--model.model_name=test_convnext",
              f"--model.teacher_name={TEACHER}", f"--model.teacher_file={path}"])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: teacher checkpoint") and "num_classes=10" in err[-1]
