"""zoo.integrations.mm: registration, outputs, checkpoints, modes, lr decay, safe loading."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from mm_data import REPO, randomize

from zoo.errors import CheckpointError, ConfigError

pytestmark = pytest.mark.mm

# UniRepLKNet-A sizes (the smallest official depths): quick on a CPU
A = dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320))
ATTO = dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), band_kernel_size=9, branch_ratio=0.25)


def _max_diff(a, b) -> float:
    assert len(a) == len(b)
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def _channel_layer_norm(x: torch.Tensor) -> torch.Tensor:
    # an untrained channels-first LayerNorm (weight 1, bias 0, eps 1e-6)
    return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], eps=1e-6).permute(0, 3, 1, 2)


def test_import_zoo_does_not_import_mm():
    code = (
        "import sys, zoo, timm; timm.create_model('unireplknet_a');"
        "mm = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('mmcv', 'mmseg', 'mmdet', 'mmengine'));"
        "assert not mm, mm"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=300)


def test_registered_in_mmseg_and_mmdet_with_official_arguments(zoo_mm):
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG

    for registry in (SEG, DET):
        for cls in (zoo_mm.UniRepLKNetBackbone, zoo_mm.InceptionNeXtBackbone):
            assert registry.get(cls.__name__) is cls
    official = dict(
        type="UniRepLKNetBackbone",
        depths=[2, 2, 6, 2],
        dims=[40, 80, 160, 320],
        drop_path_rate=0.1,
        layer_scale_init_value=1e-6,
        kernel_sizes=None,
        deploy=False,
        with_cp=True,
        init_cfg=dict(type="Pretrained", checkpoint=None),
        attempt_use_lk_impl=False,
    )
    backbone = SEG.build(official)
    outs = backbone(torch.randn(1, 3, 64, 64))
    assert isinstance(outs, tuple)
    assert [tuple(o.shape) for o in outs] == [
        (1, 40, 16, 16),
        (1, 80, 8, 8),
        (1, 160, 4, 4),
        (1, 320, 2, 2),
    ]
    assert {f"norm{i}" for i in range(4)} <= {n for n, _ in backbone.named_children()}
    with pytest.raises(TypeError, match="use_checkpoint"):
        DET.build(dict(official, use_checkpoint=True))


def test_inceptionnext_outputs_strides(zoo_mm):
    backbone = zoo_mm.InceptionNeXtBackbone(**ATTO, out_indices=(0, 1, 2, 3)).eval()
    outs = backbone(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [
        (2, 40, 16, 24),
        (2, 80, 8, 12),
        (2, 160, 4, 6),
        (2, 320, 2, 3),
    ]
    assert all(isinstance(getattr(backbone, f"norm{i}"), nn.BatchNorm2d) for i in range(4))


@pytest.mark.parametrize("bad", [(0, 4), (-1, 2), (), (1, 1), 7])
def test_out_indices_outside_range_is_a_clear_error(zoo_mm, bad):
    for cls, args in ((zoo_mm.UniRepLKNetBackbone, A), (zoo_mm.InceptionNeXtBackbone, ATTO)):
        with pytest.raises(
            ConfigError, match=r"out_indices=.*expected distinct stage indices in 0\.\.3"
        ):
            cls(**args, out_indices=bad)


def test_out_indices_subset_and_frozen_stages_and_norm_eval(zoo_mm):
    backbone = zoo_mm.UniRepLKNetBackbone(**A, out_indices=(1, 3), frozen_stages=2, norm_eval=True)
    outs = backbone(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [80, 320]
    backbone.train()
    frozen = [backbone.stem, backbone.stages[0], backbone.stages[1], backbone.norm0, backbone.norm1]
    for module in frozen:
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    assert all(p.requires_grad for p in backbone.stages[2].parameters())
    bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # norm_eval
    assert backbone.stages[3].training
    with pytest.raises(ConfigError, match="frozen_stages=5"):
        zoo_mm.UniRepLKNetBackbone(**A, frozen_stages=5)


def test_imagenet_checkpoint_through_init_cfg(zoo_mm, tmp_path):
    """A classifier checkpoint (head and final norm dropped); norm0..3 keep their initial
    values, so each output is the classifier's stage output through a plain LayerNorm."""
    clf = randomize(timm.create_model("unireplknet_a")).eval()
    path = tmp_path / "unireplknet_a_in1k.pth"
    torch.save({"model": clf.state_dict()}, path)
    backbone = zoo_mm.UniRepLKNetBackbone(
        **A, init_cfg=dict(type="Pretrained", checkpoint=str(path))
    )
    backbone.init_weights()
    backbone.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = [
            _channel_layer_norm(f) for f in clf.forward_intermediates(x, intermediates_only=True)
        ]
        assert _max_diff(backbone(x), want) < 1e-4

    inx = randomize(timm.create_model("inceptionnext_atto")).eval()
    path = tmp_path / "inceptionnext_atto.pth"
    torch.save(inx.state_dict(), path)
    backbone = zoo_mm.InceptionNeXtBackbone(
        **ATTO, init_cfg=dict(type="Pretrained", checkpoint=str(path))
    )
    backbone.init_weights()
    backbone.eval()
    with torch.no_grad():
        # an untrained BatchNorm in eval: x / sqrt(1 + eps)
        want = [
            f / (1 + 1e-5) ** 0.5 for f in inx.forward_intermediates(x, intermediates_only=True)
        ]
        assert _max_diff(backbone(x), want) < 1e-4


def test_seg_checkpoint_prefix_and_wrong_checkpoints(zoo_mm, tmp_path):
    source = randomize(zoo_mm.UniRepLKNetBackbone(**A)).eval()
    seg = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    seg["decode_head.conv_seg.weight"] = torch.zeros(150, 512, 1, 1)
    path = tmp_path / "upernet_unireplknet_a.pth"
    torch.save({"state_dict": seg, "meta": {}}, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = source(x)
    for prefix in ("backbone.", "backbone", None):
        init_cfg = dict(type="Pretrained", checkpoint=str(path), prefix=prefix)
        backbone = zoo_mm.UniRepLKNetBackbone(**A, init_cfg=init_cfg)
        backbone.init_weights()
        with torch.no_grad():
            assert _max_diff(backbone.eval()(x), want) == 0

    bad_prefix = zoo_mm.UniRepLKNetBackbone(
        **A, init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="encoder.")
    )
    with pytest.raises(CheckpointError, match=r"prefix='encoder\.'.*backbone\., decode_head\."):
        bad_prefix.init_weights()

    other = tmp_path / "inceptionnext_atto.pth"
    torch.save(timm.create_model("inceptionnext_atto").state_dict(), other)
    wrong = zoo_mm.UniRepLKNetBackbone(**A, init_cfg=dict(type="Pretrained", checkpoint=str(other)))
    with pytest.raises(
        CheckpointError, match=r"does not fit UniRepLKNetBackbone.*another backbone"
    ):
        wrong.init_weights()
    bigger = tmp_path / "unireplknet_f.pth"
    torch.save(timm.create_model("unireplknet_f").state_dict(), bigger)
    wrong = zoo_mm.UniRepLKNetBackbone(
        **A, init_cfg=dict(type="Pretrained", checkpoint=str(bigger))
    )
    with pytest.raises(
        CheckpointError, match=r"another shape .*stem\.0\.weight \(24, 3, 3, 3\) vs \(20, 3, 3, 3\)"
    ):
        wrong.init_weights()
    missing = zoo_mm.UniRepLKNetBackbone(
        **A, init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "nope.pth"))
    )
    with pytest.raises(CheckpointError, match=r"checkpoint file not found: .*nope\.pth"):
        missing.init_weights()


@pytest.mark.parametrize("family", ["unireplknet", "inceptionnext"])
def test_deploy_and_in_place_reparameterisation(zoo_mm, tmp_path, family):
    cls, args = (
        (zoo_mm.UniRepLKNetBackbone, A)
        if family == "unireplknet"
        else (zoo_mm.InceptionNeXtBackbone, ATTO)
    )
    trained = randomize(cls(**args)).eval()
    path = tmp_path / "trained.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in trained.state_dict().items()}}, path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = trained(x)
        deploy = cls(**args, deploy=True, init_cfg=dict(type="Pretrained", checkpoint=str(path)))
        deploy.init_weights()
        assert _max_diff(deploy.eval()(x), want) < 1e-4
        n_train = sum(p.numel() for p in trained.parameters())
        trained.reparameterize()
        assert sum(p.numel() for p in trained.parameters()) < n_train
        assert _max_diff(trained(x), want) < 1e-4
        assert trained.state_dict().keys() == deploy.state_dict().keys()
    torch.save(deploy.state_dict(), tmp_path / "deploy.pth")
    training_form = cls(
        **args, init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "deploy.pth"))
    )
    with pytest.raises(CheckpointError, match="deploy .*set deploy=True"):
        training_form.init_weights()


def test_layer_decay_constructor(zoo_mm):
    from mmengine.optim import build_optim_wrapper

    class Segmentor(nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone
            self.decode_head = nn.Conv2d(320, 4, 1)

    kernel_sizes = ((3,) * 2, (3,) * 2, (3,) * 9, (3,) * 2)
    model = Segmentor(
        zoo_mm.UniRepLKNetBackbone(depths=(2, 2, 9, 2), dims=A["dims"], kernel_sizes=kernel_sizes)
    )
    cfg = dict(
        type="OptimWrapper",
        optimizer=dict(type="AdamW", lr=1e-4, weight_decay=0.05),
        constructor="UniRepLKNetLearningRateDecayOptimizerConstructor",
        paramwise_cfg=dict(decay_rate=0.9, decay_type="layer_wise", num_layers=12),
    )
    groups = build_optim_wrapper(model, cfg).optimizer.param_groups
    by_name = {n: g for g in groups for n in g["param_names"]}
    # layer ids of the official map: stem 0, stage-1 downsample 2, stage 0 blocks 1, stage 2
    # block b 3 + b // 3, stage-3 downsample and blocks 12 (num_layers), the rest 13
    expected = {
        "backbone.stem.0.weight": (0, 0.05),
        "backbone.stem.0.bias": (0, 0.0),
        "backbone.stages.0.blocks.1.pwconv1.weight": (1, 0.05),
        "backbone.stages.1.downsample.0.weight": (2, 0.05),
        "backbone.stages.2.blocks.7.pwconv1.weight": (5, 0.05),
        "backbone.stages.3.downsample.0.weight": (12, 0.05),
        "backbone.stages.3.blocks.1.gamma": (12, 0.0),
        "backbone.norm2.weight": (13, 0.0),
        "decode_head.weight": (13, 0.05),
    }
    for name, (layer, wd) in expected.items():
        assert by_name[name]["lr"] == pytest.approx(1e-4 * 0.9 ** (12 + 1 - layer)), name
        assert by_name[name]["weight_decay"] == wd, name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))

    resnet = nn.Module()
    resnet.backbone = timm.create_model("resnet10t")
    with pytest.raises(ConfigError, match="found no backbone.stages.<i>.blocks.<j> parameters"):
        build_optim_wrapper(resnet, cfg)
    with pytest.raises(ConfigError, match="decay_type must be"):
        build_optim_wrapper(
            model, dict(cfg, paramwise_cfg=dict(decay_rate=0.9, num_layers=12, decay_type="x"))
        )


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/zoo_mm_exploit_ran",))


def test_runner_checkpoints_load_weights_only(zoo_mm, tmp_path):
    """mmengine's Runner checkpoints (numpy values, HistoryBuffer) load through the weights-only
    local loader; a pickle that would run code is refused."""
    import numpy as np
    from mmengine.logging import HistoryBuffer, MessageHub
    from mmengine.runner.checkpoint import _load_checkpoint

    hub = MessageHub.get_instance("zoo_mm_test")
    hub.update_scalar("train/loss", 1.5)
    hub.update_scalar("train/loss", np.float64(0.5))
    checkpoint = {
        "meta": {"seed": np.int64(3), "iter": 2, "dataset_meta": {"classes": ("a", "b")}},
        "state_dict": {"w": torch.ones(2)},
        "message_hub": hub.state_dict(),
        "extra": np.arange(3, dtype=np.float32),
    }
    path = tmp_path / "iter_2.pth"
    torch.save(checkpoint, path)
    with pytest.raises(pickle.UnpicklingError):  # what stock mmengine hits on torch >= 2.6
        torch.load(path, weights_only=True)
    loaded = _load_checkpoint(str(path), map_location="cpu")
    history = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(history, HistoryBuffer) and history.mean() == pytest.approx(1.0)
    assert loaded["meta"]["seed"] == 3 and loaded["extra"].tolist() == [0, 1, 2]

    bad = tmp_path / "exploit.pth"
    torch.save({"meta": {}, "x": _Exploit()}, bad)
    if os.path.exists("/tmp/zoo_mm_exploit_ran"):
        os.remove("/tmp/zoo_mm_exploit_ran")
    with pytest.raises(CheckpointError, match=re.escape(str(bad)) + r".*system"):
        _load_checkpoint(str(bad), map_location="cpu")
    assert not os.path.exists("/tmp/zoo_mm_exploit_ran")
