# UperNet + InceptionNeXt-T on ADE20K, 512x512 crops, 160k iterations, 8 GPUs x 2 images.
# sail-sg/inceptionnext released no segmentation code; the paper (Table 6) trains UperNet
# "following Swin": AdamW lr 6e-5, batch 16, 160k iterations, drop path 0.2 for T. Swin's
# mmseg recipe supplies the rest: betas (0.9, 0.999), weight decay 0.01 (none on norms),
# linear warmup over 1500 iterations from 1e-6, then poly (power 1) to 0. Per the authors
# (issues #10, #11) every stage output gets its own (Sync)BN: the backbone's norm0..norm3.
# The paper's mIoU are multi-scale test numbers (issue #10).
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['zoo.integrations.mm'], allow_failed_imports=False)

crop_size = (512, 512)
dims = [96, 192, 384, 768]
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='InceptionNeXtBackbone',
        depths=[3, 3, 9, 3],
        dims=dims,
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/inceptionnext_tiny.pth')),
    decode_head=dict(in_channels=dims, num_classes=150),
    auxiliary_head=dict(in_channels=dims[2], num_classes=150))

train_dataloader = dict(batch_size=2)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-05, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
sync_bn = 'torch'
