"""tools/convert.py: official checkpoint -> zoo checkpoint (-> deploy form), for every family.

The official layouts are rebuilt independently of the families' checkpoint filters: by the
helpers the family test files write from the official code's key names, and for InceptionNeXt
by timm's own `inception_next_*` port (the official layout). The converted file is loaded into
a plain `timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=...))` and
must reproduce the original model's outputs.
"""

import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from safetensors import safe_open
from test_bevanet import _official_layout as bevanet_official
from test_mkunet import _to_official_keys as mkunet_official_keys
from test_models_common import randomize_
from test_unireplknet import to_official_layout as unireplknet_official

import zoo
from zoo.errors import CheckpointError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import convert as convert_tool  # noqa: E402
from convert import convert  # noqa: E402

SIZE = 64


def _timm_inception_next(name: str) -> nn.Module:
    return randomize_(timm.create_model(name.replace("inceptionnext", "inception_next")))


# family -> (variant, the original model, its state_dict in the official layout, as saved)
def _original(family: str) -> tuple[str, nn.Module, dict]:
    torch.manual_seed(0)
    if family == "inceptionnext":  # timm's port: another implementation, the official keys
        source = _timm_inception_next("inceptionnext_atto").eval()
        return "inceptionnext_atto", source, {"model": source.state_dict()}
    name = {
        "unireplknet": "unireplknet_a",
        "mkunet": "mk_unet_t",
        "bevanet": "bevanet_s",
        "deeprftv2": "deeprftv2_s",
    }[family]
    source = randomize_(timm.create_model(name)).eval()
    if family == "unireplknet":
        return name, source, {"model": unireplknet_official(source), "epoch": 299}
    if family == "mkunet":
        return name, source, mkunet_official_keys(source.state_dict())
    if family == "bevanet":  # what the official FullModel training wrapper saves in best.pt
        saved = {"model." + k: v for k, v in bevanet_official(source).items()}
        return name, source, {**saved, "sem_loss.criterion.weight": torch.ones(19)}
    if family == "deeprftv2":  # basicsr's net_g_*.pth: {"params": {"global_model.*": ...}}
        return (
            name,
            source,
            {"params": {f"global_model.{k}": v for k, v in source.state_dict().items()}},
        )
    raise AssertionError(f"no official layout for the {family} family: add one here")


def test_every_family_has_an_official_layout_here() -> None:
    for family in zoo.models.FAMILIES:
        _original(family)


def image(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


def reload(name: str, path: Path, **kwargs) -> nn.Module:
    overlay = dict(file=str(path))
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()


@pytest.mark.parametrize("family", zoo.models.FAMILIES)
def test_official_checkpoint_converts_and_reproduces_the_original(family, tmp_path) -> None:
    name, source, saved = _original(family)
    official = tmp_path / "official.pth"
    torch.save(saved, official)
    result = convert(name, official, tmp_path / "zoo.safetensors")
    model = reload(name, tmp_path / "zoo.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(model(image()), source(image()), rtol=1e-5, atol=1e-5)
    assert result["reload_diff"] <= 1e-6
    # the file holds exactly the model's tensors, and says what it is
    with safe_open(tmp_path / "zoo.safetensors", "pt") as f:
        assert set(f.keys()) == set(model.state_dict())
        assert f.metadata()["model"] == name and f.metadata()["form"] == "training"


def test_mapping_report_counts_the_renamed_and_reshaped_keys(tmp_path) -> None:
    name, source, saved = _original("unireplknet")
    torch.save(saved, tmp_path / "official.pth")
    report = convert(name, tmp_path / "official.pth", tmp_path / "z.pth")["mapping"]
    official = saved["model"]
    ours = source.state_dict()
    # to_official_layout maps key i of ours to key i of the official layout
    renamed = sum(o != k for o, k in zip(official, ours, strict=True))
    assert len(report["renamed"]) == renamed and renamed > 0
    assert len(report["unchanged"]) == len(ours) - renamed
    grn = [k for k in ours if ".grn." in k]
    assert len(report["reshaped"]) == len(grn)  # official GRN (1, 1, 1, D) -> (D,)
    assert report["dropped"] == [] and report["filled"] == []


def test_bevanet_report_names_what_it_dropped(tmp_path) -> None:
    name, _, saved = _original("bevanet")
    torch.save(saved, tmp_path / "best.pt")
    report = convert(name, tmp_path / "best.pt", tmp_path / "z.safetensors")["mapping"]
    assert report["dropped"] == ["sem_loss.criterion.weight"]
    assert len(report["renamed"]) == len(saved) - 1  # every `model.` prefix removed


@pytest.mark.parametrize("family", ["unireplknet", "inceptionnext"])
def test_deploy_conversion_loads_into_the_deploy_model(family, tmp_path, capsys) -> None:
    name, source, saved = _original(family)
    torch.save(saved, tmp_path / "official.pth")
    result = convert(name, tmp_path / "official.pth", tmp_path / "d.pth", deploy=True)
    deploy = reload(name, tmp_path / "d.pth", deploy=True)
    with torch.no_grad():
        torch.testing.assert_close(deploy(image()), source(image()), rtol=1e-4, atol=1e-4)
    # weights-only .pth: a plain dict of tensors with exactly the deploy model's keys
    written = torch.load(tmp_path / "d.pth", weights_only=True)
    assert set(written) == set(timm.create_model(name, deploy=True).state_dict())
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in source.modules())
    assert result["folded"]["BatchNorm2d"] == batchnorms  # every BN is folded
    assert "deploy form:" in capsys.readouterr().out


def test_checkpoint_of_another_family_is_refused_with_its_key_summary(tmp_path) -> None:
    _, _, saved = _original("mkunet")
    torch.save(saved, tmp_path / "mk.pth")
    with pytest.raises(CheckpointError) as err:
        convert("unireplknet_a", tmp_path / "mk.pth", tmp_path / "out.safetensors")
    message = str(err.value)
    assert "checkpoint does not fit unireplknet_a" in message and "missing keys" in message
    assert f"{len(saved)} tensors" in message and "top-level keys: encoder1" in message
    assert "it fits mk_unet_t: tools/convert.py mk_unet_t" in message
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_prints_the_refusal_as_one_error(tmp_path, capsys) -> None:
    _, _, saved = _original("bevanet")
    torch.save(saved, tmp_path / "best.pt")
    assert convert_tool.main(["inceptionnext_atto", str(tmp_path / "best.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refused: checkpoint does not fit inceptionnext_atto")
    assert "it fits bevanet_s" in err


def test_cli_writes_next_to_the_checkpoint_by_default(tmp_path, capsys) -> None:
    _, source, saved = _original("mkunet")
    torch.save(saved, tmp_path / "mk.pth")
    assert convert_tool.main(["mk_unet_t", str(tmp_path / "mk.pth"), "--deploy"]) == 0
    out = capsys.readouterr().out
    assert "mkunet has no deploy form" in out and "max |diff| 0" in out
    assert (tmp_path / "mk_zoo_training.safetensors").is_file()


def test_pickled_code_is_never_run(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights-only load refuses"):
        convert("mk_unet_t", tmp_path / "evil.pth")


def test_model_args_parse_python_literals() -> None:
    parsed = convert_tool.parse_model_args(["aux_heads=False", "num_classes=5", "x=abc"])
    assert parsed == {"aux_heads": False, "num_classes": 5, "x": "abc"}
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        convert_tool.parse_model_args(["aux_heads"])
