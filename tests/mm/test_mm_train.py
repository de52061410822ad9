"""configs/mm + tools/mm_train.py / mm_test.py: real (tiny) training runs on CPU.

The configs under test are the shipped ones; each run inherits one and only shrinks what a CPU
test needs (image scales, the generated data folder, iterations, no ImageNet checkpoint).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mm_data import REPO, make_ade20k, make_coco, run_tool

# real training runs: a few minutes each on an idle 2-core CPU, far more on a loaded one
pytestmark = [pytest.mark.mm, pytest.mark.timeout(3600)]

SEG = REPO / "configs/mm/mmseg"
DET = REPO / "configs/mm/mmdet"


def _ok(proc) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def _seg_test_config(tmp: Path, data: Path, base: Path) -> Path:
    """The shipped UperNet config at 64x64 crops (scale 128x64) on the tiny folder."""
    text = f"""
_base_ = [{str(base)!r}]
data_root = {str(data)!r}
crop_size = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(checkpoint=None)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=2))
"""
    path = tmp / f"tiny_{base.name}"
    path.write_text(text)
    return path


def test_upernet_unireplknet_trains_validates_resumes_and_tests(zoo_mm, tmp_path):
    data = make_ade20k(tmp_path / "ADEChallengeData2016")
    config = _seg_test_config(tmp_path, data, SEG / "upernet_unireplknet_t_ade20k_512.py")
    work = tmp_path / "work"
    out = _ok(run_tool("mm_train.py", str(config), "--work-dir", str(work)))
    assert "UniRepLKNetLearningRateDecayOptimizerConstructor" in out
    assert re.search(r"Iter\(val\) \[2/2\].*mIoU", out), out[-3000:]
    assert (work / "iter_1.pth").is_file() and (work / "iter_2.pth").is_file()

    # resume: mmengine reads its own checkpoint (numpy meta, HistoryBuffers) weights-only
    out = _ok(
        run_tool(
            "mm_train.py",
            str(config),
            "--work-dir",
            str(work),
            "--resume",
            "--cfg-options",
            "train_cfg.max_iters=3",
            "train_cfg.val_interval=3",
        )
    )
    assert re.search(r"resumed epoch: \d+, iter: 2", out), out[-3000:]
    assert re.search(r"Iter\(train\) \[3/3\]", out) and (work / "iter_3.pth").is_file()

    out = _ok(
        run_tool("mm_test.py", str(config), str(work / "iter_3.pth"), "--work-dir", str(work))
    )
    assert re.search(r"Iter\(test\) \[2/2\].*mIoU", out), out[-3000:]


def test_upernet_inceptionnext_trains(zoo_mm, tmp_path):
    data = make_ade20k(tmp_path / "ADEChallengeData2016", n_val=1)
    config = _seg_test_config(tmp_path, data, SEG / "upernet_inceptionnext_t_ade20k_512.py")
    out = _ok(run_tool("mm_train.py", str(config), "--work-dir", str(tmp_path / "work")))
    assert re.search(r"Iter\(val\) \[1/1\].*mIoU", out), out[-3000:]
    assert (tmp_path / "work" / "iter_2.pth").is_file()


def test_mask_rcnn_unireplknet_one_epoch(zoo_mm, tmp_path):
    data = make_coco(tmp_path / "coco")
    config = tmp_path / "tiny_mask_rcnn.py"
    config.write_text(
        f"""
_base_ = [{str(DET / "mask_rcnn_unireplknet_s_coco_3x.py")!r}]
data_root = {str(data) + "/"!r}
# no score threshold: a detector trained for one step scores nothing above 0.05, and COCO
# evaluation of an empty result list reports no metrics
model = dict(
    backbone=dict(init_cfg=dict(checkpoint=None)), test_cfg=dict(rcnn=dict(score_thr=0.0)))
# the recipe's multi-scale resize / crop, at 1/10 of the scales
scales = [(96, 133), (112, 133), (128, 133)]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomChoiceResize', scales=scales, keep_ratio=True)],
        [dict(type='RandomChoiceResize', scales=[(80, 133), (96, 133)], keep_ratio=True),
         dict(type='RandomCrop', crop_type='absolute_range', crop_size=(64, 96),
              allow_negative_crop=True),
         dict(type='RandomChoiceResize', scales=scales, keep_ratio=True)]]),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(133, 96), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
"""
    )
    work = tmp_path / "work"
    out = _ok(run_tool("mm_train.py", str(config), "--work-dir", str(work)))
    assert re.search(r"Epoch\(val\) \[1\]\[2/2\].*coco/bbox_mAP", out), out[-3000:]
    assert (work / "epoch_1.pth").is_file()
    out = _ok(
        run_tool("mm_test.py", str(config), str(work / "epoch_1.pth"), "--work-dir", str(work))
    )
    assert "coco/segm_mAP" in out


@pytest.mark.parametrize(
    "name",
    [
        "mmseg/upernet_unireplknet_t_ade20k_512.py",
        "mmseg/upernet_unireplknet_s_ade20k_512.py",
        "mmseg/upernet_inceptionnext_t_ade20k_512.py",
        "mmdet/mask_rcnn_unireplknet_s_coco_3x.py",
        "mmdet/cascade_mask_rcnn_unireplknet_s_coco_3x.py",
    ],
)
def test_configs_build_with_the_official_recipe(zoo_mm, name):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(str(REPO / "configs/mm" / name))
    init_default_scope(cfg.default_scope)
    from mmengine.registry import MODELS

    backbone = cfg.model.backbone
    # facts of the official configs (AILab-CVC/UniRepLKNet) and the InceptionNeXt paper
    official = {
        "mmseg/upernet_unireplknet_t_ade20k_512.py": (0.2, 1e-4, 1.0, 9, 160000),
        "mmseg/upernet_unireplknet_s_ade20k_512.py": (0.3, 1e-4, 0.9, 12, 160000),
        "mmseg/upernet_inceptionnext_t_ade20k_512.py": (0.2, 6e-5, None, None, 160000),
        "mmdet/mask_rcnn_unireplknet_s_coco_3x.py": (0.5, 1e-4, 0.8, 12, 36),
        "mmdet/cascade_mask_rcnn_unireplknet_s_coco_3x.py": (0.5, 1e-4, 0.8, 12, 36),
    }[name]
    drop_path, lr, decay_rate, num_layers, length = official
    assert backbone.drop_path_rate == drop_path
    assert cfg.optim_wrapper.optimizer.lr == lr
    if decay_rate is not None:
        assert cfg.optim_wrapper.paramwise_cfg.decay_rate == decay_rate
        assert cfg.optim_wrapper.paramwise_cfg.num_layers == num_layers
    assert cfg.train_cfg.get("max_iters", cfg.train_cfg.get("max_epochs")) == length
    backbone.init_cfg.checkpoint = None
    model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == backbone.type


def test_missing_dataset_folder_and_checkpoint_are_named(zoo_mm, tmp_path):
    config = str(SEG / "upernet_unireplknet_t_ade20k_512.py")
    missing = tmp_path / "no_ade"
    proc = run_tool(
        "mm_train.py",
        config,
        "--work-dir",
        str(tmp_path / "w"),
        "--cfg-options",
        f"train_dataloader.dataset.data_root={missing}",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"the ADE20KDataset data_root '{missing}' does not exist" in proc.stderr
    assert "images/{training,validation}/*.jpg" in proc.stderr

    data = make_ade20k(tmp_path / "ADEChallengeData2016", n_train=1, n_val=1)
    proc = run_tool(
        "mm_train.py",
        config,
        "--work-dir",
        str(tmp_path / "w"),
        "--cfg-options",
        f"train_dataloader.dataset.data_root={data}",
        f"val_dataloader.dataset.data_root={data}",
    )
    assert proc.returncode == 2
    assert (
        "model.backbone.init_cfg.checkpoint 'checkpoints/unireplknet_t_in1k_224_acc83.21.pth'"
        in (proc.stderr)
    )

    proc = run_tool("mm_test.py", str(DET / "mask_rcnn_unireplknet_s_coco_3x.py"), "nope.pth")
    assert proc.returncode == 2 and "checkpoint 'nope.pth' does not exist" in proc.stderr
    proc = run_tool(
        "mm_test.py",
        str(DET / "mask_rcnn_unireplknet_s_coco_3x.py"),
        str(REPO / "pyproject.toml"),
        "--cfg-options",
        f"test_dataloader.dataset.data_root={tmp_path}/coco/",
    )
    assert proc.returncode == 2
    assert (
        "CocoDataset" in proc.stderr and "annotations/instances_{train,val}2017.json" in proc.stderr
    )
