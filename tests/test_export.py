"""tools/export.py and ops/dwconv/onnx.py: ONNX and torch.export programs of every family.

References are independent of the code under test: onnxruntime and `torch.export.load` run
the files and are compared with PyTorch eager; the ONNX Conv of `zoo::dwconv2d` with
F.conv2d; the count of depthwise Convs with the official kernel table of UniRepLKNet
(the official unireplknet.py) and with forward hooks on the eager model; graph breaks with
torch._dynamo.explain. The fast tests run the smallest model of each family on small inputs;
the native-size exports of every variant are `slow`.
"""

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
import torch._dynamo
import torch.nn as nn
import torch.nn.functional as F

import ops
import zoo
from ops.dwconv.onnx import register_torchscript_symbolic, translation_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import export as export_tool  # noqa: E402
from export import ExportError, export  # noqa: E402
from test_models_common import FAMILY_SMALLEST, SMALLEST, randomize_  # noqa: E402
from zoo_registry import SLOW_TO_TRACE  # noqa: E402

from zoo.layers.nafnet import EVSS2D  # noqa: E402

TOLERANCE = 1e-4


SIZE = (3, 64, 64)  # a small input every family takes (multiples of 32; BEVANet: >= 64)


def smallest(family: str, deploy: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = randomize_(timm.create_model(SMALLEST[family])).eval()
    if deploy:
        zoo.reparameterize(model)
    return model


def grouped_conv_calls(model: nn.Module, x: torch.Tensor) -> int:
    """Calls of grouped nn.Conv2d modules (DepthwiseConv2d included) during model(x)."""
    calls = []
    hooks = [
        m.register_forward_hook(lambda *_: calls.append(1))
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and m.groups > 1
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return len(calls)


def depthwise_kernels(path: Path) -> Counter:
    """(kh, kw, dilation) of every Conv with group > 1 in an ONNX file."""
    graph = onnx.load(str(path)).graph
    weights = {w.name: tuple(w.dims) for w in graph.initializer}
    out = Counter()
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and attrs.get("group", 1) > 1:
            kernel = weights[node.input[1]][2:]  # (C, 1, kh, kw)
            out[(kernel, tuple(attrs.get("dilations", (1, 1))))] += 1
    return out


def run_ort(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


# --------------------------------------------------------------------------------------------
# The op's ONNX translation


class Dw(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = ops.DepthwiseConv2d(6, (5, 3), padding=(4, 1), dilation=(2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_dwconv_exports_as_one_grouped_conv_equal_to_f_conv2d(exporter, tmp_path) -> None:
    torch.manual_seed(0)
    model = Dw().eval()
    x = torch.randn(2, 6, 11, 9)
    path = tmp_path / "dw.onnx"
    if exporter == "dynamo":
        torch.onnx.export(
            model, (x,), dynamo=True, custom_translation_table=translation_table(), verbose=False
        ).save(str(path))
    else:
        register_torchscript_symbolic(17)
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17)
    nodes = onnx.load(str(path)).graph.node
    (conv,) = [n for n in nodes if n.op_type == "Conv"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    assert attrs["group"] == 6 and list(attrs["pads"]) == [4, 1, 4, 1]
    assert list(attrs["dilations"]) == [2, 1]
    assert all(n.domain in ("", "ai.onnx") for n in nodes)
    w = model.conv
    expected = F.conv2d(x, w.weight, w.bias, padding=(4, 1), dilation=(2, 1), groups=6)
    np.testing.assert_allclose(run_ort(path, x), expected.detach().numpy(), atol=1e-5)


def test_onnx_helpers_import_no_onnxscript_when_ops_loads() -> None:
    code = "import ops, sys; assert 'onnxscript' not in sys.modules and 'onnx' not in sys.modules"
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# Every family: ONNX, torch.export, torch.compile


# Families whose smallest model takes minutes to trace (zoo_registry.SLOW_TO_TRACE): their
# export and compile checks run with the slow tests.


def _traced(family: str):
    marks = [pytest.mark.slow] if family in SLOW_TO_TRACE else []
    return pytest.param(family, id=SMALLEST[family], marks=marks)


@pytest.mark.parametrize("family", [_traced(f) for f in zoo.models.FAMILIES])
def test_onnx_and_pt2_of_the_smallest_model_match_eager(family, tmp_path) -> None:
    model = smallest(family, deploy=True)  # the deploy form where the family has one
    program = export_tool.export_program(model, export_tool.example_input(SIZE, 1))
    if any(isinstance(m, EVSS2D) for m in model.modules()):  # DeepRFTv2's selective scans
        with pytest.raises(ExportError, match=r"unsupported in ONNX: zoo::selective_scan \("):
            export(model, tmp_path / "m.onnx", SIZE, program=program)
        info = export(model, tmp_path / "m.pt2", SIZE, fmt="pt2", program=program)
        assert info["checks"][0]["rel_diff"] <= TOLERANCE
        assert info["custom_ops"]["zoo::selective_scan"] > 0
        return
    info = export(model, tmp_path / "m.onnx", SIZE, program=program)
    assert info["checks"][0]["rel_diff"] <= TOLERANCE
    assert info["opset"] >= 17 and info["domains"] == ["ai.onnx"]
    # every grouped conv the eager forward runs is one grouped ONNX Conv: no custom op left
    x = torch.randn(1, *SIZE)
    assert info["grouped_conv"] == grouped_conv_calls(model, x)
    with torch.no_grad():
        ref = model(x)
    out = run_ort(tmp_path / "m.onnx", x)  # an independent run of the file, on another input
    np.testing.assert_allclose(out, ref.numpy(), atol=TOLERANCE * ref.abs().max().item())

    info = export(model, tmp_path / "m.pt2", SIZE, fmt="pt2", program=program)
    assert info["checks"][0]["rel_diff"] <= TOLERANCE
    assert info["custom_ops"]["zoo::dwconv2d"] > 0  # the op stays one node in the program
    loaded = torch.export.load(str(tmp_path / "m.pt2")).module()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref, rtol=1e-5, atol=1e-5)


def _forms(families):
    """The exported form (deploy where there is one) fast, the training form of those slow."""
    for family in families:
        deployable = export_tool.has_deploy_form(timm.create_model(SMALLEST[family], device="meta"))
        slow = [pytest.mark.slow] if deployable or family in SLOW_TO_TRACE else []
        yield pytest.param(family, False, id=f"{SMALLEST[family]}-training", marks=slow)
        if deployable:
            yield pytest.param(family, True, id=f"{SMALLEST[family]}-deploy")


@pytest.mark.parametrize(("family", "deploy"), list(_forms(zoo.models.FAMILIES)))
def test_compile_fullgraph_has_zero_graph_breaks_and_matches_eager(family, deploy) -> None:
    model = smallest(family, deploy)
    x = torch.randn(1, *SIZE)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILY_SMALLEST)
def test_compile_fullgraph_inductor_runs_the_exported_form(family) -> None:
    model = smallest(family, deploy=True)
    x = torch.randn(1, *SIZE)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)  # inductor: C++ kernels on the CPU
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# UniRepLKNet's deploy form: one Conv per large-kernel block

# Official per-block kernels of UniRepLKNet-A (the official unireplknet.py, A/F/P sizes)
A_KERNELS = (3,) * 2 + (13,) * 2 + (13,) * 6 + (13,) * 2
# Dilated branches of a 13x13 block (the official DilatedReparamBlock table): kernel, dilation
K13_BRANCHES = ((5, 1), (7, 2), (3, 3), (3, 4), (3, 5))


@pytest.mark.parametrize(
    "deploy", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["deploy", "training"]
)
def test_unireplknet_onnx_has_one_depthwise_conv_per_block_in_deploy_form(deploy, tmp_path):
    model = smallest("unireplknet", deploy)
    assert SMALLEST["unireplknet"] == "unireplknet_a"
    export(model, tmp_path / "a.onnx", (3, 64, 64))
    found = depthwise_kernels(tmp_path / "a.onnx")
    large = sum(k == 13 for k in A_KERNELS)
    expected = Counter({((13, 13), (1, 1)): large, ((3, 3), (1, 1)): len(A_KERNELS) - large})
    if not deploy:  # every branch is its own conv before reparameterisation
        for k, r in K13_BRANCHES:
            expected[((k, k), (r, r))] += large
    assert found == expected


# --------------------------------------------------------------------------------------------
# Options and errors


def _dynamic_models():
    yield pytest.param("dw", id="depthwise-conv")
    for f in zoo.models.FAMILIES:  # the whole models: no batch guard in any forward
        meta = timm.create_model(SMALLEST[f], device="meta")
        if any(isinstance(m, EVSS2D) for m in meta.modules()):
            continue  # no ONNX file: the selective scan has no translation (tested above)
        yield pytest.param(f, id=SMALLEST[f], marks=pytest.mark.slow)


@pytest.mark.parametrize("family", list(_dynamic_models()))
def test_dynamic_batch_onnx_runs_other_batch_sizes(family, tmp_path) -> None:
    model, size = (Dw().eval(), (6, 16, 16)) if family == "dw" else (smallest(family), SIZE)
    info = export(model, tmp_path / "d.onnx", size, dynamic_batch=True)
    assert [c["batch"] for c in info["checks"]] == [2, 3]
    dims = onnx.load(str(tmp_path / "d.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == list(size)
    x = torch.randn(5, *size)
    with torch.no_grad():
        np.testing.assert_allclose(run_ort(tmp_path / "d.onnx", x), model(x).numpy(), atol=1e-5)


def test_fft_lowers_to_standard_onnx_and_matches_eager(tmp_path) -> None:
    class SpectralMix(nn.Module):  # DeepRFT's Fourier-space product, in small
        def __init__(self) -> None:
            super().__init__()
            self.kernel = nn.Parameter(torch.randn(4, 8, 5, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            spectrum = torch.fft.rfft2(x, norm="backward") * torch.view_as_complex(self.kernel)
            return x + torch.fft.irfft2(spectrum, s=x.shape[-2:], norm="backward")

    info = export(SpectralMix().eval(), tmp_path / "f.onnx", (4, 8, 8))
    assert info["ops"]["DFT"] >= 2 and info["domains"] == ["ai.onnx"]
    assert info["checks"][0]["rel_diff"] <= TOLERANCE


@torch.library.custom_op("zoo_test::mystery", mutates_args=())
def _mystery(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_mystery.register_fake
def _(x):
    return torch.empty_like(x)


class Mystery(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.zoo_test.mystery(x) + 1


def test_custom_op_without_translation_is_reported_by_name(tmp_path) -> None:
    with pytest.raises(ExportError, match=r"zoo_test::mystery \(1 call\).*--format pt2"):
        export(Mystery(), tmp_path / "x.onnx", (3, 4, 4))
    assert not (tmp_path / "x.onnx").exists()
    info = export(Mystery(), tmp_path / "x.pt2", (3, 4, 4), fmt="pt2")  # what the message says
    assert info["custom_ops"] == {"zoo_test::mystery": 1}


@pytest.mark.skipif(not hasattr(ops, "selective_scan"), reason="no ops.selective_scan here")
def test_selective_scan_is_reported_unsupported_in_onnx_and_exports_to_pt2(tmp_path) -> None:
    class Scan(nn.Module):
        def forward(self, u: torch.Tensor) -> torch.Tensor:
            A = -torch.ones(u.shape[1], 4)
            B = C = torch.ones(u.shape[0], 4, u.shape[2])
            return ops.selective_scan(u, u, A, B, C)

    with pytest.raises(ExportError, match=r"unsupported in ONNX: zoo::selective_scan \(1 call\)"):
        export(Scan(), tmp_path / "s.onnx", (6, 16))
    info = export(Scan(), tmp_path / "s.pt2", (6, 16), fmt="pt2")
    assert info["checks"][0]["rel_diff"] <= TOLERANCE


def test_cli_exports_a_deploy_checkpoint_into_the_deploy_model(tmp_path, capsys) -> None:
    source = smallest("unireplknet", deploy=True)
    ckpt = tmp_path / "a_deploy.pth"
    torch.save(source.state_dict(), ckpt)  # the zoo's deploy-form layout
    out = tmp_path / "a.onnx"
    argv = ["unireplknet_a", "--checkpoint", str(ckpt), "--input-size", "3", "64", "64"]
    assert export_tool.main([*argv, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "onnxruntime (CPU) vs eager, batch 1" in printed
        and f"{len(A_KERNELS)} of them grouped" in printed
    )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(run_ort(out, x), source(x).numpy(), atol=1e-5)


def test_cli_says_when_a_family_has_no_deploy_form(tmp_path, capsys) -> None:
    out = tmp_path / "t.pt2"
    argv = ["mk_unet_t", "--deploy", "--format", "pt2", "--input-size", "3", "64", "64"]
    assert export_tool.main([*argv, "-o", str(out)]) == 0
    assert "mk_unet_t has no deploy form" in capsys.readouterr().out and out.is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["unireplknet_q"], "unknown model 'unireplknet_q'; did you mean"),
        (["mk_unet_t", "--opset", "13"], "--opset must be >= 17"),
    ],
)
def test_cli_rejects_bad_arguments(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        export_tool.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Native sizes (slow): every classification variant, MK-UNet-B, BEVANet-S at 512 x 1024


def _native():
    for family in ("unireplknet", "inceptionnext"):
        for name in timm.list_models(module=family):
            yield pytest.param(name, None, id=name, marks=pytest.mark.slow)
    yield pytest.param("mk_unet_b", None, id="mk_unet_b", marks=pytest.mark.slow)
    yield pytest.param("bevanet_s", (3, 512, 1024), id="bevanet_s-512x1024", marks=pytest.mark.slow)


@pytest.mark.parametrize(("name", "size"), list(_native()))
def test_native_size_onnx_export_matches_eager(name, size, tmp_path) -> None:
    torch.manual_seed(0)
    model = randomize_(timm.create_model(name)).eval()
    if export_tool.has_deploy_form(model):
        zoo.reparameterize(model)
    size = size or model.pretrained_cfg["input_size"]
    info = export(model, tmp_path / f"{name}.onnx", size)
    assert info["checks"][0]["rel_diff"] <= TOLERANCE
