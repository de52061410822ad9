"""configs/ through train.py: `_base_` composition, every config building its model and data,
header commands that validate, one short fit per task, and the classes found under --data.root
reaching the model."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_train import TINY_BEVANET, _cli_error

from zoo.errors import ConfigError
from zoo.losses import CITYSCAPES_CLASS_WEIGHTS
from zoo.tasks import SegmentationTask
from zoo.tasks.cli import ZooCLI, load_config

ROOT = Path(__file__).resolve().parents[1]
# configs/distill need a trained teacher file to build at all: tests/test_distill_task.py runs
# each of them on the embedded digits with one.
CONFIGS = sorted(
    p
    for p in (ROOT / "configs").rglob("*.yaml")
    if "_base_" not in p.parts and p.relative_to(ROOT / "configs").parts[0] != "distill"
)
BASES = sorted(
    b for b in (ROOT / "configs").rglob("_base_/*.yaml") if b.parent.parent.name != "distill"
)
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
]


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT / "configs"))


def _is_demo(path: Path) -> bool:
    """`demo.yaml` / `<name>_demo.yaml`: one file to read, on purpose (no `_base_`)."""
    return path.stem == "demo" or path.stem.endswith("_demo")


def _build(config: Path, tmp_path: Path, *args: str) -> ZooCLI:
    return ZooCLI(
        args=[f"--config={config}", f"--trainer.default_root_dir={tmp_path}", *args], run=False
    )


def _error_line(capsys, *args: str) -> str:
    """The message of a run that stops on a user error, checked to be one line."""
    err = _cli_error(capsys, *args)
    message = err[err.index("error: ") :]
    assert message.count("\n") <= 1, message
    return message


# ------------------------------------------------------------------------------------------------
# every config builds; variants hold what differs


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_every_config_builds_its_model_and_data(config: Path, tmp_path: Path) -> None:
    cli = _build(config, tmp_path)
    task, data = cli.model, cli.datamodule
    if not _is_demo(config):  # a variant file is named after its model (and its data)
        name = task.hparams.model_name
        assert config.stem == name or config.stem.startswith(f"{name}_"), (config, name)
    assert sum(p.numel() for p in task.model.parameters()) > 0
    # the model's outputs fit the classes of the data (the embedded stand-in here)
    task.check_num_classes(data, binary_single_logit=isinstance(task, SegmentationTask))
    assert cli.config.checkpoint.monitor.startswith("val/")
    assert "_base_" not in cli.config


def test_variant_configs_name_a_base_and_hold_only_what_differs() -> None:
    used: dict[Path, int] = {base: 0 for base in BASES}
    for config in CONFIGS:
        raw = yaml.safe_load(config.read_text())
        if _is_demo(config):  # `make demo`, `make deblur-demo`: one file to read, on purpose
            assert "_base_" not in raw
            continue
        base = (config.parent / raw["_base_"]).resolve()
        used[base] += 1
        assert len(config.read_text().splitlines()) <= 22, config
    assert len(BASES) >= 3 and all(n >= 2 for n in used.values()), used
    # the Cityscapes class weights live in Python (zoo.losses), configs name them
    first = str(CITYSCAPES_CLASS_WEIGHTS[0])
    assert not [c for c in (ROOT / "configs").rglob("*.yaml") if first in c.read_text()]


def test_base_config_merges_under_the_variant_relative_to_its_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text(
        "trainer:\n  max_epochs: 7\n  log_every_n_steps: 3\n"
        "model:\n  class_path: zoo.tasks.ClassificationTask\n"
        "  init_args:\n    model_name: test_convnext\n    num_classes: 10\n    lr: 0.1\n"
        "data:\n  class_path: zoo.data.DigitsDataModule\n  init_args:\n    batch_size: 8\n"
    )
    (tmp_path / "mid.yaml").write_text("_base_: root.yaml\nmodel:\n  init_args:\n    lr: 0.2\n")
    leaf = tmp_path / "sub" / "leaf.yaml"
    leaf.write_text("_base_: ../mid.yaml\ntrainer:\n  max_epochs: 2\n")
    cfg = _build(leaf, tmp_path).config
    assert cfg.trainer.max_epochs == 2  # the variant wins
    assert cfg.trainer.log_every_n_steps == 3  # two bases down
    assert cfg.model.init_args.lr == 0.2 and cfg.model.init_args.model_name == "test_convnext"
    assert cfg.data.init_args.batch_size == 8


def test_base_merge_replaces_lists_and_sections_of_another_class(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "trainer:\n  callbacks: [a, b]\n"
        "data:\n  class_path: zoo.data.DigitsDataModule\n"
        "  init_args:\n    image_size: 16\n    batch_size: 8\n"
        "model:\n  class_path: zoo.tasks.ClassificationTask\n  init_args:\n    lr: 0.1\n"
    )
    (tmp_path / "child.yaml").write_text(
        "_base_: [base.yaml]\ntrainer:\n  callbacks: [c]\n"
        "data:\n  class_path: ImageFolderDataModule\n  init_args:\n    root: null\n"
        "model:\n  class_path: ClassificationTask\n  init_args:\n    mixup_alpha: 0.2\n"
    )
    merged = load_config(tmp_path / "child.yaml", yaml.safe_load)
    assert merged["trainer"]["callbacks"] == ["c"]
    # another class: the base's init_args (DigitsDataModule's) do not carry over
    assert merged["data"] == {"class_path": "ImageFolderDataModule", "init_args": {"root": None}}
    # the same class by its short name: merged
    assert merged["model"]["init_args"] == {"lr": 0.1, "mixup_alpha": 0.2}


def test_missing_or_cyclic_base_is_one_error_line(capsys, tmp_path: Path) -> None:
    config = tmp_path / "a.yaml"
    config.write_text("_base_: nope.yaml\n")
    err = _error_line(capsys, f"--config={config}")
    assert str(tmp_path / "nope.yaml") in err and "missing file" in err
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    config.write_text("_base_: b.yaml\n")
    err = _error_line(capsys, f"--config={config}")
    assert "cycle" in err and f"{tmp_path / 'b.yaml'} -> {config}" in err


def test_print_config_of_a_variant_is_complete_and_round_trips(capsys, tmp_path: Path) -> None:
    def printed(config: Path) -> str:
        with pytest.raises(SystemExit) as exc:
            ZooCLI(args=["fit", f"--config={config}", "--print_config"])
        assert exc.value.code in (0, None)
        return capsys.readouterr().out

    first = printed(ROOT / "configs" / "segmentation" / "bevanet_sw.yaml")
    cfg = yaml.safe_load(first)
    init = cfg["model"]["init_args"]
    assert "_base_" not in cfg and "_base_" not in first
    assert init["model_name"] == "bevanet_sw" and init["weight_decay"] == 0.001  # the variant's
    assert init["opt"] == "sgd" and init["loss_kwargs"] == {"class_weights": "cityscapes"}
    assert cfg["data"]["init_args"]["batch_size"] == 10
    assert cfg["trainer"]["check_val_every_n_epoch"] == 10  # the base's
    saved = tmp_path / "printed.yaml"
    saved.write_text(first)
    assert printed(saved) == first


# ------------------------------------------------------------------------------------------------
# the commands in the config headers validate


def _header_commands(config: Path) -> list[list[str]]:
    lines = []
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = "\n".join(lines).replace("\\\n", " ")
    return [shlex.split(ln)[2:] for ln in text.splitlines() if ln.startswith("python train.py")]


@pytest.fixture(scope="module")
def parser():
    """A parser only (the model of its own arguments is tiny)."""
    args = ["--model=ClassificationTask", "--model.model_name=test_convnext"]
    cli = ZooCLI(args=[*args, "--model.num_classes=10", "--data=DigitsDataModule"], run=False)
    return cli.parser


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_header_quick_runs_validate(config: Path, parser) -> None:
    commands = _header_commands(config)
    quick = [c for c in commands if not any(a.startswith("--data.root") for a in c)]
    assert quick, f"{config}: no command that runs without data"
    for command in commands:
        assert command[:3] == ["fit", "--config", str(config.relative_to(ROOT))], command
    for command in quick:
        args = [f"--config={config}", *command[3:]]
        cfg = parser.parse_args(args)
        every, epochs = cfg.trainer.check_val_every_n_epoch, cfg.trainer.max_epochs
        assert every is not None and every <= epochs, (command, every, epochs)
        assert cfg.trainer.limit_val_batches != 0


# ------------------------------------------------------------------------------------------------
# one short fit per task, from its config


FITS = {
    "classification/inceptionnext_atto.yaml": ["--data.batch_size=8"],
    "segmentation/mk_unet_t.yaml": ["--data.batch_size=4", "--data.embedded_size=32"],
    "segmentation/bevanet_s.yaml": [
        "--data.batch_size=4",
        "--trainer.check_val_every_n_epoch=1",
        TINY_BEVANET,
    ],
}
# DeepRFTv2 at width 4, one block per level where the official depths allow it, on 16x16
# embedded crops (its smallest size: 3 downsamplings); save_memory as the configs set it
TINY_DEEPRFTV2 = {"width": 4, "enc_max_layers": [1, 2, 2], "dec_max_layers": [2, 2, 1],
                  "enc_mid_layers": [1, 1, 1], "dec_mid_layers": [1, 1, 1]}  # fmt: skip
TINY_RESTORATION = [
    f"--model.model_kwargs={json.dumps(TINY_DEEPRFTV2)}",
    "--data.batch_size=2",
    "--data.embedded_crop_size=16",
    "--data.embedded_val_size=16",
    "--data.embedded_num_train=4",
    "--data.embedded_num_val=1",
    "--trainer.check_val_every_n_epoch=1",
]
FITS |= {_id(c): TINY_RESTORATION for c in CONFIGS if _id(c).startswith("restoration/")}
# what the checkpoint's monitor may read: fractions, except PSNR in dB
MONITOR_RANGE = {"val/psnr": (0.0, 100.0)}


@pytest.mark.parametrize("name", FITS)
def test_config_fits_two_steps_and_validates(name: str, tmp_path: Path) -> None:
    config = ROOT / "configs" / name
    cli = ZooCLI(
        args=[
            "fit",
            f"--config={config}",
            *QUIET,
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--trainer.limit_val_batches=1",
            *FITS[name],
        ]
    )
    assert cli.trainer.global_step == 2
    monitor = cli.config.fit.checkpoint.monitor
    low, high = MONITOR_RANGE.get(monitor, (0.0, 1.0))
    assert low <= float(cli.trainer.callback_metrics[monitor]) <= high
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert next((tmp_path / "lightning_logs").rglob("metrics.csv")).stat().st_size > 0
    if "bevanet" in name:  # the config's named class weights reached the loss
        weights = cli.model.criterion.class_weights
        assert torch.equal(weights, torch.tensor(CITYSCAPES_CLASS_WEIGHTS).float())


# ------------------------------------------------------------------------------------------------
# --data.root and the number of classes


def _image_folder(root: Path, classes: tuple[str, ...]) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            for i in range(2):
                (root / split / c).mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")


def test_data_root_gives_the_model_the_classes_found(capsys, tmp_path: Path) -> None:
    data = tmp_path / "data"
    _image_folder(data, ("cat", "dog", "eel"))
    config = ROOT / "configs" / "classification" / "inceptionnext_atto.yaml"
    cli = _build(config, tmp_path, f"--data.root={data}", "--data.num_workers=0")
    assert cli.datamodule.class_names == ["cat", "dog", "eel"]
    assert cli.model.hparams.num_classes == 3
    assert cli.model.model.get_classifier().out_features == 3
    assert cli.model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    # a number the user sets is kept, and checked against the folders
    err = _error_line(
        capsys,
        f"--config={config}",
        f"--data.root={data}",
        "--data.num_workers=0",
        "--model.num_classes=5",
        f"--trainer.default_root_dir={tmp_path}",
    )
    assert "model.num_classes=5 but the data" in err and "has 3 classes (cat, dog, eel)" in err


def test_data_root_on_the_digits_demo_points_to_a_folder_config(capsys, tmp_path: Path) -> None:
    err = _error_line(
        capsys,
        f"--config={ROOT / 'configs' / 'classification' / 'demo.yaml'}",
        f"--data.root={tmp_path}",
        f"--trainer.default_root_dir={tmp_path}",
    )
    assert "embedded" in err and "configs/classification/inceptionnext_atto.yaml" in err


def test_classification_task_without_num_classes_says_where_it_comes_from() -> None:
    from zoo.tasks import ClassificationTask

    with pytest.raises(ConfigError, match="num_classes"):
        ClassificationTask(model_name="test_convnext")
