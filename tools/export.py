"""Export a zoo model to ONNX or a `torch.export` program, and check it against PyTorch eager.

    python tools/export.py unireplknet_a --deploy                      # -> unireplknet_a.onnx
    python tools/export.py bevanet_s --input-size 3 512 1024 --dynamic-batch
    python tools/export.py mk_unet_b --checkpoint mk_unet_b.safetensors --format pt2

The model is built with `timm.create_model` (a `--checkpoint` in the official or the zoo layout,
training or deploy form, loads through the family's `checkpoint_filter_fn`), put in eval mode
and, with `--deploy`, converted by `zoo.reparameterize` (families without a deploy form are
exported as they are, and the tool says so). Both formats start from one `torch.export`
program, traced at batch 1 (batch 2 with `--dynamic-batch`, whose batch dimension is then
symbolic):

- onnx: `torch.onnx.export` (the torch.export-based exporter, opset >= 17). Every
  `zoo::dwconv2d` becomes a standard ONNX `Conv` with `group=C` (ops/dwconv/onnx.py), so any
  runtime runs it; FFTs lower to the standard `DFT` op. A custom op without an ONNX
  translation (e.g. a selective scan) is reported by name before conversion: export a pt2
  program instead, or add `ops/<op>/onnx.py` with a `translation_table()`.
- pt2: `torch.export.save`; load it with `torch.export.load` after `import ops` (which
  registers the custom ops the program calls).

Then the file is loaded back and run (onnxruntime's CPU provider / the loaded program) on a
random input, at two batch sizes with `--dynamic-batch`, and compared with eager PyTorch: the
max |difference| relative to the output's max |value| must stay within 1e-4 (`--tolerance`).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import pkgutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import timm  # noqa: E402
from convert import has_deploy_form, load_model, parse_model_args  # noqa: E402

import ops  # noqa: E402
import zoo  # noqa: E402
from zoo.errors import ConfigError  # noqa: E402

MIN_OPSET = 17
DEFAULT_OPSET = 18
TOLERANCE = 1e-4
# torch namespaces every ONNX exporter translates; anything else is a custom op
_TORCH_NAMESPACES = {"aten", "prims", "_operator", "builtins", "math"}


class ExportError(RuntimeError):
    """An export that cannot be done or does not match eager; the message says which and why."""


def onnx_translations() -> dict[Callable, Callable]:
    """The ONNX translations of every custom op in `ops`: each op package may have an
    `onnx.py` with a `translation_table()` (imported here, so `ops` never imports onnxscript)."""
    table: dict[Callable, Callable] = {}
    for package in pkgutil.iter_modules(ops.__path__):
        if not package.ispkg:
            continue
        try:
            module = importlib.import_module(f"ops.{package.name}.onnx")
        except ModuleNotFoundError as err:
            if err.name != f"ops.{package.name}.onnx":
                raise
            continue
        table.update(module.translation_table())
    return table


def example_input(input_size: tuple[int, ...], batch: int) -> torch.Tensor:
    """The fixed random input every export traces and checks with."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, *input_size, generator=gen)


def export_program(
    model: nn.Module, x: torch.Tensor, dynamic_batch: bool = False
) -> torch.export.ExportedProgram:
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    try:
        return torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes)
    except Exception as err:  # noqa: BLE001 (torch raises many types; say where it failed)
        raise ExportError(
            f"torch.export could not trace {type(model).__name__} at input "
            f"{tuple(x.shape)}: {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from err


def custom_ops(program: torch.export.ExportedProgram) -> Counter:
    """Calls per op of every non-torch op in the program (e.g. zoo::dwconv2d)."""
    calls: Counter = Counter()
    for node in program.graph.nodes:
        target = node.target
        if node.op == "call_function" and isinstance(target, torch._ops.OpOverload):
            if target.namespace not in _TORCH_NAMESPACES:
                calls[target] += 1
    return calls


def check_translatable(program: torch.export.ExportedProgram, table: dict) -> None:
    missing = {op: n for op, n in custom_ops(program).items() if op not in table}
    if missing:
        names = ", ".join(
            f"{op.name()} ({n} call{'s' if n > 1 else ''})" for op, n in missing.items()
        )
        raise ExportError(
            f"unsupported in ONNX: {names} has no ONNX translation; export with --format pt2 "
            "(torch.export keeps custom ops), or add a translation_table() in "
            "ops/<op>/onnx.py"
        )


def to_onnx(program: torch.export.ExportedProgram, x: torch.Tensor, path: Path, opset: int):
    """Write the ONNX file; returns the onnx_ir model the exporter built."""
    if opset < MIN_OPSET:
        raise ExportError(f"--opset must be >= {MIN_OPSET}, got {opset}")
    table = onnx_translations()
    check_translatable(program, table)
    try:
        onnx_program = torch.onnx.export(
            program,
            (x,),
            dynamo=True,
            opset_version=opset,
            custom_translation_table=table,
            input_names=["input"],
            verbose=False,
        )
    except torch.onnx.OnnxExporterError as err:
        # the exporter's own summary names the op it could not translate
        reasons = [line for line in str(err).splitlines() if "Error" in line and ":" in line]
        raise ExportError(f"ONNX conversion failed: {reasons[0] if reasons else err}") from err
    _name_batch_dim(onnx_program.model)
    onnx_program.save(str(path))
    return onnx_program.model


def _name_batch_dim(model) -> None:
    """Call the symbolic batch dimension of the inputs and outputs "batch"."""
    import onnx_ir as ir

    for value in (*model.graph.inputs, *model.graph.outputs):
        shape = value.shape
        if shape is not None and len(shape) and not isinstance(shape[0], int):
            value.shape = ir.Shape(["batch", *shape[1:]])


def onnx_summary(path: Path) -> dict:
    """Opset, node counts and the Conv nodes (depthwise: group == input channels) of a file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    nodes = list(model.graph.node)
    convs = [n for n in nodes if n.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    return dict(
        opset=next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        domains=sorted({n.domain or "ai.onnx" for n in nodes}),
        ops=Counter(n.op_type for n in nodes),
        conv=len(convs),
        grouped_conv=sum(g > 1 for g in groups),
    )


def run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(out)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max |out - ref|, that / max |ref|)."""
    if out.shape != ref.shape:
        raise ExportError(f"exported output has shape {tuple(out.shape)}, eager {tuple(ref.shape)}")
    diff = (out.float() - ref.float()).abs().max().item()
    return diff, diff / max(ref.abs().max().item(), 1e-12)


def export(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, ...],
    fmt: str = "onnx",
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    tolerance: float = TOLERANCE,
    program: torch.export.ExportedProgram | None = None,
) -> dict:
    """Export an eval-mode `model`; returns what was written and how well it matched eager.

    program: the model's `export_program` at this input size, when the caller already traced
    it (to write both formats from one trace).
    """
    if fmt not in ("onnx", "pt2"):
        raise ExportError(f"format must be 'onnx' or 'pt2', got {fmt!r}")
    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    trace_batch = 2 if dynamic_batch else 1
    x = example_input(input_size, trace_batch)
    start = time.perf_counter()
    if program is None:
        program = export_program(model, x, dynamic_batch)
    info: dict = dict(path=str(path), format=fmt, input_size=tuple(input_size))
    info["custom_ops"] = {op.name(): n for op, n in custom_ops(program).items()}
    if fmt == "onnx":
        to_onnx(program, x, path, opset)
        info.update(onnx_summary(path))
        run = lambda inp: run_onnx(path, inp)  # noqa: E731
    else:
        torch.export.save(program, str(path))
        loaded = torch.export.load(str(path)).module()
        run = lambda inp: loaded(inp)  # noqa: E731
    info["export_s"] = time.perf_counter() - start
    if not verify:
        return info
    batches = (trace_batch, 3) if dynamic_batch else (trace_batch,)
    checks = []
    for batch in batches:
        inp = example_input(input_size, batch)
        with torch.no_grad():
            ref = model(inp)
            out = run(inp)
        diff, rel = relative_error(out, ref)
        checks.append(dict(batch=batch, max_abs_diff=diff, rel_diff=rel))
        if not rel <= tolerance:
            raise ExportError(
                f"{path.name} differs from eager PyTorch at batch {batch}: max |diff| {diff:.3g} "
                f"= {rel:.3g} of the output's max |value| (tolerance {tolerance:g})"
            )
    info["checks"] = checks
    return info


def _describe(info: dict) -> str:
    lines = [f"wrote {info['path']} ({info['format']}, {info['export_s']:.1f} s)"]
    if info["custom_ops"]:
        calls = ", ".join(f"{n} x {name}" for name, n in info["custom_ops"].items())
        lines.append(f"  torch.export program: {calls}")
    if info["format"] == "onnx":
        top = ", ".join(f"{op} {n}" for op, n in info["ops"].most_common(6))
        lines.append(
            f"  ONNX opset {info['opset']}, domains {info['domains']}: {sum(info['ops'].values())} "
            f"nodes ({top}, ...); {info['conv']} Conv, {info['grouped_conv']} of them grouped "
            "(depthwise group=C)"
        )
    runner = "onnxruntime (CPU)" if info["format"] == "onnx" else "torch.export.load"
    for c in info.get("checks", []):
        lines.append(
            f"  {runner} vs eager, batch {c['batch']}: max |diff| {c['max_abs_diff']:.3g} "
            f"({c['rel_diff']:.3g} of the output's max |value|)"
        )
    return "\n".join(lines)


def _check_model_name(parser: argparse.ArgumentParser, name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        parser.error(f"unknown model {name!r}" + (f"; did you mean {close}?" if close else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="timm name, optionally with a pretrained tag")
    parser.add_argument("--checkpoint", help="weights file (official or zoo layout, any form)")
    parser.add_argument("--deploy", action="store_true", help="export the deploy form")
    parser.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"))
    parser.add_argument("--format", choices=("onnx", "pt2"), default="onnx")
    parser.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    parser.add_argument("-o", "--output", help="output file (default: MODEL[_deploy].FORMAT)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f">= {MIN_OPSET}")
    parser.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE",
        help="extra timm.create_model argument, e.g. aux_heads=False (repeatable)",
    )  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--no-verify", action="store_true", help="skip the check against eager")
    args = parser.parse_args(argv)
    _check_model_name(parser, args.model)
    if args.opset < MIN_OPSET:
        parser.error(f"--opset must be >= {MIN_OPSET}, got {args.opset}")
    try:
        kwargs = parse_model_args(args.model_arg)
        model = load_model(args.model, args.checkpoint, **kwargs).eval()
        form = "training form"
        if args.deploy:
            if has_deploy_form(model):
                zoo.reparameterize(model)
                form = "deploy form"
            else:
                print(f"{args.model} has no deploy form: exporting it as it is")
                form = "its only form"
        input_size = tuple(args.input_size or model.pretrained_cfg["input_size"])
        suffix = "_deploy" if form == "deploy form" else ""
        output = args.output or f"{args.model.replace('.', '_')}{suffix}.{args.format}"
        print(f"{args.model} ({form}), input {'x'.join(map(str, input_size))}")
        info = export(
            model,
            output,
            input_size,
            fmt=args.format,
            dynamic_batch=args.dynamic_batch,
            opset=args.opset,
            verify=not args.no_verify,
            tolerance=args.tolerance,
        )
    except (ExportError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(_describe(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
