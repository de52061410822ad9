"""Convert an official checkpoint into a zoo checkpoint (and, optionally, into the deploy form).

    python tools/convert.py unireplknet_a unireplknet_a_in1k_224_acc77.03.pth --deploy
    python tools/convert.py bevanet_s best.pt -o bevanet_s_cityscapes.safetensors
    python tools/convert.py unireplknet_s.in22k unireplknet_s_in22k_pretrain.pth -o s22k.pth

The checkpoint is read without running pickled code (`torch.load(weights_only=True)`, or
safetensors), unwrapped (`model` / `state_dict` / ...), renamed by the family's
`checkpoint_filter_fn` and loaded strictly into `timm.create_model(MODEL)` (a pretrained tag
such as `unireplknet_s.in22k` sets the class count; `--num-classes` overrides it). A checkpoint
of another family, or of another variant, is refused with a summary of its keys and the zoo
models it does fit. `--deploy` then converts the model with `zoo.reparameterize` (branches
merged, BatchNorms and layer scales folded) and checks that its outputs equal the training
form's. The result is written weights-only: `.safetensors` (default) or a plain state_dict
`.pth`, and read back into a fresh `timm.create_model(..., pretrained=True,
pretrained_cfg_overlay=dict(file=OUT))` (with `deploy=True` for a deploy-form file) whose
outputs must equal the converted model's.
"""

from __future__ import annotations

import argparse
import ast
import copy
import functools
import importlib
import os
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timm  # noqa: E402
from timm.models._registry import get_arch_pretrained_cfgs  # noqa: E402

import zoo  # noqa: E402
from zoo.checkpoint import load_checkpoint_file  # noqa: E402
from zoo.errors import CheckpointError, ConfigError, first_few  # noqa: E402

TOLERANCE = 1e-4


def zoo_models() -> list[str]:
    return [name for family in zoo.models.FAMILIES for name in timm.list_models(module=family)]


def family_of(model: nn.Module) -> str:
    return type(model).__module__.rsplit(".", 1)[-1]


def has_deploy_form(model: nn.Module) -> bool:
    return any(callable(getattr(m, "reparameterize", None)) for m in model.modules())


def parse_model_args(items: list[str]) -> dict[str, Any]:
    """["aux_heads=False", "num_classes=5"] -> {"aux_heads": False, "num_classes": 5}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"model argument {item!r} is not KEY=VALUE")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a plain string
    return out


def _filter_fn(model: nn.Module):
    return importlib.import_module(type(model).__module__).checkpoint_filter_fn


def load_model(name: str, checkpoint: str | os.PathLike | None = None, **kwargs) -> nn.Module:
    """`timm.create_model(name, **kwargs)`, loaded from `checkpoint` (official or zoo layout)
    when given. A deploy-form checkpoint loads into the family's deploy=True model."""
    if checkpoint is None:
        return timm.create_model(name, **kwargs)
    overlay = dict(file=os.fspath(checkpoint))
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except CheckpointError as err:
        if kwargs.get("deploy"):
            raise
        try:  # a deploy-form checkpoint, for the families that have that form
            return timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay=overlay, deploy=True, **kwargs
            )
        except (CheckpointError, TypeError):
            raise err from None


def key_summary(state_dict: dict[str, Tensor]) -> str:
    """`412 tensors (3.2 M values); top-level keys: encoder1 (60), AG1 (24), ...`."""
    prefixes = Counter(k.split(".", 1)[0] for k in state_dict)
    values = sum(v.numel() for v in state_dict.values())
    groups = first_few((f"{p} ({n})" for p, n in prefixes.items()), 8)
    return f"{len(state_dict)} tensors ({values / 1e6:.2f} M values); top-level keys: {groups}"


@functools.cache
def _meta_model(tag: str) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return timm.create_model(tag, device="meta")


def fitting_models(state_dict: dict[str, Tensor]) -> list[str]:
    """Every registered zoo model (with its pretrained tags) that `state_dict` loads into."""
    fits = []
    for name in zoo_models():
        for tag in get_arch_pretrained_cfgs(name) or [name]:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = _meta_model(tag)
                    _filter_fn(model)(dict(state_dict), model)
            except Exception:  # noqa: BLE001 (any filter failure means: does not fit)
                continue
            fits.append(tag)
            break
    return fits


def _wrong_checkpoint(err: CheckpointError, name: str, state_dict: dict[str, Tensor]) -> str:
    fits = [f for f in fitting_models(state_dict) if f.split(".")[0] != name.split(".")[0]]
    lines = [f"refused: {err}", f"  the checkpoint: {key_summary(state_dict)}"]
    if fits:
        lines.append(
            f"  it fits {', '.join(fits)}: tools/convert.py {fits[0]} CHECKPOINT"
            + (" (other variants of a family differ in width or depth)" if len(fits) > 1 else "")
        )
    else:
        lines.append("  it fits no registered zoo model (another architecture, or damaged)")
    return "\n".join(lines)


def map_keys(
    state_dict: dict[str, Tensor], model: nn.Module, name: str
) -> tuple[dict[str, Tensor], dict[str, list[str]]]:
    """The family's checkpoint_filter_fn, with what it did: renamed / unchanged / reshaped /
    dropped / filled keys (tensors are followed by their storage, so renames are exact)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mapped = _filter_fn(model)(dict(state_dict), model)
    except (CheckpointError, KeyError, IndexError) as err:  # a foreign layout may trip a filter
        if not isinstance(err, CheckpointError):
            err = CheckpointError(f"checkpoint does not fit {name}: {type(err).__name__} {err}")
        raise CheckpointError(_wrong_checkpoint(err, name, state_dict)) from None
    for w in caught:
        print(f"  note: {w.message}")
    source = {(v.data_ptr(), v.numel()): k for k, v in state_dict.items() if v.numel()}
    report: dict[str, list[str]] = {k: [] for k in ("renamed", "unchanged", "reshaped", "filled")}
    used = set()
    for key, value in mapped.items():
        origin = source.get((value.data_ptr(), value.numel())) if value.numel() else key
        if origin is None or origin not in state_dict:
            report["filled"].append(key)
            continue
        used.add(origin)
        report["unchanged" if origin == key else "renamed"].append(f"{origin} -> {key}")
        if tuple(state_dict[origin].shape) != tuple(value.shape):
            report["reshaped"].append(
                f"{key} {tuple(state_dict[origin].shape)} -> {tuple(value.shape)}"
            )
    report["dropped"] = [k for k in state_dict if k not in used]
    return mapped, report


def module_counts(model: nn.Module) -> Counter:
    return Counter(type(m).__name__ for m in model.modules())


@torch.no_grad()
def max_diff(a: nn.Module, b: nn.Module, x: Tensor) -> float:
    return (a(x) - b(x)).abs().max().item()


def check_input(model: nn.Module) -> Tensor:
    """A small input every family accepts: 64 x 64, or the cfg's min_input_size."""
    cfg = model.pretrained_cfg
    size = max(64, *(cfg.get("min_input_size") or (0, 0, 0))[1:])
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, cfg["input_size"][0], size, size, generator=gen)


def save_weights(state_dict: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path), metadata=metadata)
    elif path.suffix in (".pth", ".pt", ".bin"):
        torch.save(tensors, path)  # a plain dict of tensors: loads with weights_only=True
    else:
        raise ConfigError(f"output must end in .safetensors or .pth, got {path.name}")


def convert(
    name: str,
    checkpoint: str | os.PathLike,
    output: str | os.PathLike | None = None,
    deploy: bool = False,
    verify: bool = True,
    **kwargs,
) -> dict[str, Any]:
    """Official checkpoint -> zoo checkpoint file; returns (and prints) what was done."""
    checkpoint = Path(checkpoint)
    state_dict = load_checkpoint_file(checkpoint)
    print(f"read {checkpoint}: {key_summary(state_dict)}")
    model = timm.create_model(name, **kwargs).eval()
    mapped, report = map_keys(state_dict, model, name)
    try:
        model.load_state_dict(mapped, strict=True)
    except RuntimeError as err:  # e.g. a head for other classes: say how to build the model
        raise CheckpointError(
            f"checkpoint does not load into {name} ({str(err).splitlines()[-1].strip()}); "
            "pass --num-classes N or the pretrained tag it was trained with"
        ) from None
    print(
        f"mapped onto {name} ({family_of(model)}): {len(report['renamed'])} keys renamed, "
        f"{len(report['unchanged'])} unchanged, {len(report['reshaped'])} reshaped, "
        f"{len(report['dropped'])} dropped, {len(report['filled'])} filled from the model"
    )
    for what in ("renamed", "reshaped", "dropped", "filled"):
        if report[what]:
            print(f"  {what}: {first_few(report[what], 3)}")
    x = check_input(model)
    result: dict[str, Any] = dict(model=name, family=family_of(model), mapping=report)
    form = "training"
    if deploy and not has_deploy_form(model):
        print(f"--deploy: {family_of(model)} has no deploy form; writing the model as it is")
    elif deploy:
        training = copy.deepcopy(model)
        before_tensors, before_params = len(model.state_dict()), _params(model)
        before_modules = module_counts(model)
        zoo.reparameterize(model)
        removed = before_modules - module_counts(model)
        diff = max_diff(training, model, x)
        folded = ", ".join(f"{n} {kind}" for kind, n in removed.most_common())
        print(
            f"deploy form: {before_tensors} -> {len(model.state_dict())} tensors, "
            f"{before_params:,} -> {_params(model):,} parameters; folded or merged away: "
            f"{folded or 'nothing'}; max |deploy - training| {diff:.3g} on {_shape(x)}"
        )
        result.update(folded=dict(removed), deploy_vs_training=diff)
        if not diff <= TOLERANCE * max(1.0, _scale(training, x)):
            raise ConfigError(f"the deploy form differs from the training form by {diff:.3g}")
        form = "deploy"
    output = Path(output or checkpoint.with_name(f"{checkpoint.stem}_zoo_{form}.safetensors"))
    metadata = dict(model=name, form=form, source=checkpoint.name, tool="tools/convert.py")
    save_weights(model.state_dict(), output, metadata)
    print(f"wrote {output} ({form} form, {len(model.state_dict())} tensors)")
    result.update(output=str(output), form=form)
    if verify:
        extra = dict(kwargs, deploy=True) if form == "deploy" else kwargs
        reloaded = load_model(name, output, **extra).eval()
        diff = max_diff(model, reloaded, x)
        call = ", ".join([repr(name), *(f"{k}={v!r}" for k, v in extra.items()), "pretrained=True"])
        print(
            f"reloaded with timm.create_model({call}, pretrained_cfg_overlay=dict(file=...)): "
            f"max |diff| {diff:.3g} on {_shape(x)}"
        )
        if diff > TOLERANCE * max(1.0, _scale(model, x)):
            raise ConfigError(f"the written file reproduces the model only to {diff:.3g}")
        result["reload_diff"] = diff
    return result


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def _scale(model: nn.Module, x: Tensor) -> float:
    return model(x).abs().max().item()


def _shape(x: Tensor) -> str:
    return "x".join(map(str, x.shape))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="timm name, optionally with a pretrained tag")
    parser.add_argument("checkpoint", help="official checkpoint (.pth/.pt/.tar/.safetensors)")
    parser.add_argument("-o", "--output", help="OUT.safetensors or OUT.pth")
    parser.add_argument("--deploy", action="store_true", help="write the deploy form")
    parser.add_argument("--num-classes", type=int, help="classes of the checkpoint's head")
    parser.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE",
        help="extra timm.create_model argument, e.g. aux_heads=False (repeatable)",
    )  # fmt: skip
    parser.add_argument("--no-verify", action="store_true", help="skip reloading the output")
    args = parser.parse_args(argv)
    if not timm.is_model(args.model):
        parser.error(f"unknown model {args.model!r}; zoo models: {', '.join(zoo_models())}")
    try:
        kwargs = parse_model_args(args.model_arg)
        if args.num_classes is not None:
            kwargs["num_classes"] = args.num_classes
        convert(
            args.model,
            args.checkpoint,
            args.output,
            deploy=args.deploy,
            verify=not args.no_verify,
            **kwargs,
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
