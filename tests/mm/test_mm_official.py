"""Fidelity against the official mmseg UniRepLKNet backbone (AILab-CVC/UniRepLKNet).

Set ZOO_OFFICIAL_UNIREPLKNET_MM to the official
`segmentation/mmseg_custom/models/backbones/unireplknet.py` (or the detection copy), a file
outside this repo; without it the test is skipped. The official file runs unchanged with its
mmseg 0.27 / mmcv 1.x import-time names stubbed (official_stub.py).
"""

from __future__ import annotations

import os

import pytest
import torch
from mm_data import randomize

pytestmark = pytest.mark.mm

OFFICIAL = os.environ.get("ZOO_OFFICIAL_UNIREPLKNET_MM")


@pytest.mark.skipif(not OFFICIAL, reason="set ZOO_OFFICIAL_UNIREPLKNET_MM to the official file")
@pytest.mark.parametrize(
    "size",
    [
        dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),
        dict(depths=(3, 3, 18, 3), dims=(16, 32, 64, 128)),
    ],
    ids=["A", "T-depths"],
)
def test_official_mmseg_backbone_equals_ours(zoo_mm, tmp_path, size):
    from official_stub import import_official

    official = import_official(OFFICIAL).UniRepLKNetBackbone(
        **size, init_cfg=dict(type="Pretrained", checkpoint=None)
    )
    randomize(official)
    # an official segmentation checkpoint: backbone.* (official key layout) under state_dict
    path = tmp_path / "official_seg.pth"
    state = {f"backbone.{k}": v for k, v in official.state_dict().items()}
    torch.save({"state_dict": state, "meta": {}}, path)

    ours = zoo_mm.UniRepLKNetBackbone(
        **size, init_cfg=dict(type="Pretrained", checkpoint=str(path))
    )
    ours.init_weights()
    deploy = zoo_mm.UniRepLKNetBackbone(
        **size, deploy=True, init_cfg=dict(type="Pretrained", checkpoint=str(path))
    )
    deploy.init_weights()
    # the official keys loaded into a whole model (load_from / a test checkpoint) are renamed too
    whole = torch.nn.Module()
    whole.backbone = zoo_mm.UniRepLKNetBackbone(**size)
    whole.load_state_dict(state)

    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        official.eval()
        want = official(x)
        for model in (ours, deploy, whole.backbone):
            got = model.eval()(x)
            assert len(got) == 4
            for a, b in zip(got, want, strict=True):
                assert a.shape == b.shape
                assert float((a - b).abs().max()) < 1e-4
        ours.reparameterize()  # in place (the official seg/det copies crash here)
        assert max(float((a - b).abs().max()) for a, b in zip(ours(x), want, strict=True)) < 1e-4

        # an official ImageNet checkpoint (final norm + head, no norm0..3) under 'model'
        module = import_official(OFFICIAL)
        classifier = module.UniRepLKNet(**size, num_classes=10)
        randomize(classifier)
        torch.save({"model": classifier.state_dict()}, tmp_path / "official_in1k.pth")
        reference = module.UniRepLKNetBackbone(
            **size, init_cfg=dict(type="Pretrained", checkpoint=None)
        )
        reference.load_state_dict(classifier.state_dict(), strict=False)  # as its init_weights
        in1k = zoo_mm.UniRepLKNetBackbone(
            **size, init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "official_in1k.pth"))
        )
        in1k.init_weights()
        for a, b in zip(in1k.eval()(x), reference.eval()(x), strict=True):
            assert float((a - b).abs().max()) < 1e-4

        official.train()
        train_ours = zoo_mm.UniRepLKNetBackbone(
            **size, init_cfg=dict(type="Pretrained", checkpoint=str(path))
        )
        train_ours.init_weights()
        train_ours.train()
        for a, b in zip(train_ours(x), official(x), strict=True):  # batch statistics
            assert float((a - b).abs().max()) < 1e-4
