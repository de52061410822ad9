"""One contract over every registered zoo model (timm's habit: one registry-parametrised file).

Names come from the registry: `timm.list_models(module=family)` for `zoo.models.FAMILIES`.
Checks that need no numbers (structure, errors raised before any compute) run for every name
on the meta device; numerical checks run on the smallest model of each family, with random
weights and BatchNorm statistics (fresh models hide mistakes: identity BN, 1e-6 layer scales).
References are independent of the code under test: timm's own utilities, forward hooks on the
normal model, the source files' syntax trees, a subprocess of train.py.
"""

import ast
import copy
import functools
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import timm.layers
import timm.models
import timm.utils
import torch
import torch.nn as nn
from zoo_registry import MODELS, SMALLEST, n_params

import zoo
from zoo.errors import CheckpointError
from zoo.layers.input_check import check_in_chans

ROOT = Path(__file__).resolve().parents[1]
FAMILY_FILES = {f: ROOT / "zoo" / "models" / f"{f}.py" for f in zoo.models.FAMILIES}
ALL = [(f, name) for f, names in MODELS.items() for name in names]
SIZE = 64  # a multiple of every family's stride (32) and of BEVANet's 8
ALL_NAMES = [pytest.param(name, id=name) for _, name in ALL]
FAMILY_SMALLEST = [pytest.param(f, id=SMALLEST[f]) for f in zoo.models.FAMILIES]


def meta_model(name: str, **kwargs) -> nn.Module:
    return timm.create_model(name, device="meta", **kwargs).eval()


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Unit-gain random weights, norm affines near 1, random biases/layer scales/BN statistics."""
    gen = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
        elif t.dim() > 1:
            t.copy_(torch.randn(t.shape, generator=gen) / t[0].numel() ** 0.5)
        elif name.endswith("weight"):
            t.copy_(1 + 0.2 * torch.randn(t.shape, generator=gen))
        else:  # biases, running means, layer scales
            t.copy_(0.2 * torch.randn(t.shape, generator=gen))
    return model


@functools.cache
def smallest_model(family: str) -> nn.Module:
    """The family's smallest model, random weights, eval mode; callers deep-copy it."""
    torch.manual_seed(0)
    return randomize_(timm.create_model(SMALLEST[family])).eval()


def image(channels: int = 3, batch: int = 2, size: int = SIZE) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(1))


def test_families_cover_every_model_the_zoo_registers() -> None:
    assert all(MODELS.values()), MODELS
    registered = {
        name: timm.models.model_entrypoint(name).__module__
        for name in timm.list_models()
        if timm.models.model_entrypoint(name).__module__.startswith("zoo.")
    }
    assert sorted(registered) == sorted(name for _, name in ALL)
    assert {module.rsplit(".", 1)[-1] for module in registered.values()} == set(MODELS)


# --------------------------------------------------------------------------------------------
# One style across the family files (STYLE.md), read from their syntax trees


def _tree(family: str) -> ast.Module:
    return ast.parse(FAMILY_FILES[family].read_text())


@pytest.mark.parametrize("family", zoo.models.FAMILIES)
def test_family_imports_timm_public_paths_and_zoo_relatively(family: str) -> None:
    public = set(dir(timm.models)) | set(dir(timm.layers))
    for node in ast.walk(_tree(family)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [a.name for a in node.names]
            assert node.module != "__future__", "plain annotations (TorchScript reads them)"
            assert not node.module.startswith("zoo"), f"absolute zoo import: {node.module}"
            if node.module.startswith("timm.models._"):
                assert not set(names) & public, f"{node.module}: {names} are public in timm"
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("zoo") for a in node.names)


@pytest.mark.parametrize("family", zoo.models.FAMILIES)
def test_family_constructors_type_device_and_dtype(family: str) -> None:
    wanted = {"device": "torch.device | str | None", "dtype": "torch.dtype | None"}
    seen = 0
    for node in ast.walk(_tree(family)):
        if isinstance(node, ast.FunctionDef):
            for arg in node.args.args + node.args.kwonlyargs:
                if arg.arg in wanted:
                    seen += 1
                    got = ast.unparse(arg.annotation) if arg.annotation else None
                    assert got == wanted[arg.arg], f"{node.name}({arg.arg}: {got})"
    assert seen >= 2


@pytest.mark.parametrize("family", zoo.models.FAMILIES)
def test_family_entrypoints_are_one_line_and_variants_are_data(family: str) -> None:
    entrypoints = [
        node
        for node in _tree(family).body
        if isinstance(node, ast.FunctionDef)
        and any(ast.unparse(d) == "register_model" for d in node.decorator_list)
    ]
    assert sorted(e.name for e in entrypoints) == sorted(MODELS[family])
    for fn in entrypoints:
        assert len(fn.body) == 1 and isinstance(fn.body[0], ast.Return), fn.name
        literals = [
            n
            for n in ast.walk(fn)
            if isinstance(n, ast.Dict)
            or (isinstance(n, ast.Call) and ast.unparse(n.func) == "dict")
        ]
        assert not literals, f"{fn.name}: variant arguments belong in the module's table"


def test_class_names_are_unique_and_do_not_shadow_timm_layers() -> None:
    owner: dict[str, str] = {}
    for family in zoo.models.FAMILIES:
        for node in _tree(family).body:
            if isinstance(node, ast.ClassDef):
                assert node.name not in owner, f"{node.name} in {owner.get(node.name)} and {family}"
                assert not hasattr(timm.layers, node.name), f"{family}.{node.name} shadows timm's"
                owner[node.name] = family


# --------------------------------------------------------------------------------------------
# Deploy form: timm's walker (parents before children, root skipped) == zoo's (children first)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_timm_reparameterize_model_gives_the_zoo_deploy_structure(name: str) -> None:
    model = meta_model(name)
    ours = zoo.reparameterize(copy.deepcopy(model))
    theirs = timm.utils.reparameterize_model(model)
    assert {k: v.shape for k, v in theirs.state_dict().items()} == {
        k: v.shape for k, v in ours.state_dict().items()
    }


@pytest.mark.parametrize("family", FAMILY_SMALLEST)
def test_timm_reparameterize_model_matches_zoo_outputs(family: str) -> None:
    model = smallest_model(family)
    x = image()
    ours = zoo.reparameterize(copy.deepcopy(model))
    theirs = timm.utils.reparameterize_model(model)  # converts a copy
    assert list(theirs.state_dict()) == list(ours.state_dict())
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Wrong channel count: named where it enters, for every model


@pytest.mark.parametrize("in_chans, channels", [(3, 2), (1, 3)])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_wrong_channel_count_names_in_chans_and_the_received_channels(
    name: str, in_chans: int, channels: int
) -> None:
    model = meta_model(name, in_chans=in_chans)
    expected = f"{name} expects {in_chans} input channels (in_chans={in_chans}"
    with pytest.raises(ValueError, match=re.escape(expected) + rf".*\), got {channels}$"):
        model(torch.empty(2, channels, SIZE, SIZE, device="meta"))


class _Checked(nn.Module):
    in_chans = 3

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            check_in_chans(self, x)
        return self.conv(x)


def test_channel_check_survives_torchscript_fx_and_fullgraph_compile() -> None:
    model = _Checked().eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(x), expected)
        torch.testing.assert_close(torch.jit.script(traced)(x), expected)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x), expected)
    with pytest.raises(ValueError, match=r"_Checked expects 3 input channels"):
        model(torch.randn(1, 2, 8, 8))


# --------------------------------------------------------------------------------------------
# Feature API: the taps are the outputs of the modules feature_info names


def _hooked_taps(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    taps, handles = [], []
    for info in model.feature_info:
        module = model.get_submodule(info["module"])
        handles.append(module.register_forward_hook(lambda m, args, out: taps.append(out)))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return taps


@pytest.mark.parametrize("family", FAMILY_SMALLEST)
def test_feature_info_taps_have_the_declared_channels_and_strides(family: str) -> None:
    model = smallest_model(family)
    taps = _hooked_taps(model, image())
    assert len(taps) == len(model.feature_info) >= 3
    for tap, info in zip(taps, model.feature_info, strict=True):
        side = SIZE // info["reduction"]
        assert tap.shape == (2, info["num_chs"], side, side), info


@pytest.mark.parametrize("feature_cls", [None, "getter"])
@pytest.mark.parametrize("family", FAMILY_SMALLEST)
def test_features_only_loads_the_full_model_and_returns_its_taps(
    family: str, feature_cls: str | None, tmp_path: Path
) -> None:
    model = smallest_model(family)
    x = image()
    taps = _hooked_taps(model, x)
    path = tmp_path / "full.pth"
    torch.save(model.state_dict(), path)
    out_indices = (1, len(taps) - 1)
    kwargs = {} if feature_cls is None else dict(feature_cls=feature_cls)
    features = timm.create_model(
        SMALLEST[family],
        features_only=True,
        out_indices=out_indices,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path)),
        **kwargs,
    ).eval()
    assert features.feature_info.channels() == [taps[i].shape[1] for i in out_indices]
    reductions = [model.feature_info[i]["reduction"] for i in out_indices]
    assert features.feature_info.reduction() == reductions
    with torch.no_grad():
        got = features(x)
    assert len(got) == len(out_indices)
    for i, feature in zip(out_indices, got, strict=True):
        torch.testing.assert_close(feature, taps[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILY_SMALLEST)
def test_forward_intermediates_stop_early_and_pruning_keep_the_taps(family: str) -> None:
    model = smallest_model(family)
    x = image()
    taps = _hooked_taps(model, x)
    last = len(taps) - 1
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        for got, tap in zip(intermediates, taps, strict=True):
            torch.testing.assert_close(got, tap)
        kept = copy.deepcopy(model)
        kept.prune_intermediate_layers([last], prune_head=False)
        torch.testing.assert_close(kept(x), model(x))
        for i in range(last + 1):
            early = model.forward_intermediates(x, [i], stop_early=True, intermediates_only=True)
            torch.testing.assert_close(early[0], taps[i])
            pruned = copy.deepcopy(model)
            indices = pruned.prune_intermediate_layers([i])
            assert indices == [i]
            got = pruned.forward_intermediates(x, indices, intermediates_only=True)
            torch.testing.assert_close(got[0], taps[i])
            if i < last:  # the features end at the tap once everything after it is gone
                torch.testing.assert_close(pruned.forward_features(x), taps[i])
    # what the pruned model keeps, it uses: every parameter gets a gradient
    pruned.train()
    taps = pruned.forward_intermediates(x, [last], intermediates_only=True)
    (sum(t.sum() for t in taps) + pruned.forward_features(x).sum()).backward()
    assert [n for n, p in pruned.named_parameters() if p.grad is None] == []


# --------------------------------------------------------------------------------------------
# Checkpoint files that are not checkpoints, or not this model's


class _Unsafe:
    """Unpickling it creates a folder: proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _write_bad_file(kind: str, path: Path) -> Path:
    if kind == "random_bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "text":
        path.write_text("these are not the weights you are looking for\n" * 20)
    elif kind == "pickled_object":
        torch.save({"model": _Unsafe(path.with_suffix(".ran"))}, path)
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"weight": [0.5] * 8}))
    elif kind == "no_tensors":
        torch.save({"epoch": 3, "best_acc": 0.5}, path)
    elif kind == "truncated":
        torch.save({"w": torch.zeros(64)}, path)
        path.write_bytes(path.read_bytes()[:300])
    return path


def _displayed(err: BaseException | None):
    """The exceptions a traceback of `err` shows (its cause/context chain)."""
    while err is not None:
        yield err
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)


BAD_KINDS = ["random_bytes", "text", "pickled_object", "plain_pickle", "no_tensors", "truncated"]


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_file_that_is_not_a_checkpoint_raises_checkpoint_error(
    name: str, kind: str, tmp_path: Path
) -> None:
    path = _write_bad_file(kind, tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match=re.escape(f"not a valid checkpoint: {path} (")) as e:
        meta_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert str(e.value).endswith(")") and "\n" not in str(e.value)
    assert not any("weights_only" in str(err) for err in _displayed(e.value))
    assert not path.with_suffix(".ran").exists(), "the loader ran code from the file"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_missing_checkpoint_file_names_the_path(name: str, tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint file not found: {path}")):
        meta_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


@pytest.fixture(scope="module")
def foreign_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Per family, the state_dict file of the smallest model of ANOTHER family."""
    folder = tmp_path_factory.mktemp("foreign")
    out = {}
    for family in zoo.models.FAMILIES:
        other = min((SMALLEST[f] for f in zoo.models.FAMILIES if f != family), key=n_params)
        path = folder / f"{other}.pth"
        if not path.exists():
            torch.save(timm.create_model(other).state_dict(), path)
        out[family] = path
    return out


@pytest.mark.parametrize("family, name", [pytest.param(*fn, id=fn[1]) for fn in ALL])
def test_checkpoint_of_another_family_lists_the_first_keys_with_counts(
    family: str, name: str, foreign_checkpoints: dict[str, Path]
) -> None:
    path = foreign_checkpoints[family]
    with pytest.raises(CheckpointError) as e:
        meta_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    message = str(e.value)
    found = re.match(
        rf"checkpoint does not fit {name}: (\d+) missing keys \((.+?)\), (\d+) unexpected keys "
        r"\((.+?)\)",
        message,
    )
    assert found, message
    assert int(found[1]) > 5 and int(found[3]) > 5
    assert f"and {int(found[1]) - 5} more" in found[2]
    assert f"and {int(found[3]) - 5} more" in found[4]
    assert found[2].split(", ")[0] in meta_model(name).state_dict()
    assert found[4].split(", ")[0] in torch.load(path, weights_only=True)
    assert len(message) < 1000 and "\n" not in message


@pytest.mark.parametrize("family", FAMILY_SMALLEST)
def test_safetensors_checkpoint_loads_and_a_broken_one_is_named(
    family: str, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    model = smallest_model(family)
    good, bad = tmp_path / "weights.safetensors", tmp_path / "broken.safetensors"
    save_file(model.state_dict(), good)
    bad.write_bytes(good.read_bytes()[:200])
    overlay = dict(file=str(good))
    loaded = timm.create_model(SMALLEST[family], pretrained=True, pretrained_cfg_overlay=overlay)
    x = image()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match=re.escape(f"not a valid checkpoint: {bad} (")):
        meta_model(SMALLEST[family], pretrained=True, pretrained_cfg_overlay=dict(file=str(bad)))


def test_unpickling_never_runs_code_from_the_file(tmp_path: Path) -> None:
    path = _write_bad_file("pickled_object", tmp_path / "evil.pth")
    for family in zoo.models.FAMILIES:
        with pytest.raises(CheckpointError, match=r"pickles the Python object \S*mkdir"):
            meta_model(
                SMALLEST[family], pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
            )
    assert not path.with_suffix(".ran").exists()


# --------------------------------------------------------------------------------------------
# train.py: a bad pretrained_file is one `error:` line, exit code 2


@pytest.mark.parametrize("kind", ["missing", "random_bytes"])
def test_train_py_reports_a_bad_pretrained_file_in_one_line(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    if kind != "missing":
        _write_bad_file(kind, path)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("ZOO_TRACEBACK", None)
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "fit",
            "--config",
            str(ROOT / "configs" / "classification" / "demo.yaml"),
            f"--model.pretrained_file={path}",
            "--trainer.max_steps=1",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    expected = "checkpoint file not found" if kind == "missing" else "not a valid checkpoint"
    assert len(errors) == 1 and expected in errors[0] and str(path) in errors[0], res.stderr
    assert "Traceback" not in res.stderr and "weights_only" not in res.stderr


@pytest.mark.parametrize("kind", ["missing", "random_bytes"])
def test_create_model_by_name_checks_the_file_for_any_timm_model(kind: str, tmp_path: Path) -> None:
    from zoo.tasks.common import create_model_by_name

    path = tmp_path / "weights.pth"
    if kind != "missing":
        _write_bad_file(kind, path)
    # resnet18 is timm's own: timm would fail with an empty FileNotFoundError / pickle advice
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        create_model_by_name("resnet18", pretrained_file=str(path), device="meta")
