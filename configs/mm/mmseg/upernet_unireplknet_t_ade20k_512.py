# UperNet + UniRepLKNet-T on ADE20K, 512x512 crops, 160k iterations, 8 GPUs x 2 images.
# The official recipe (AILab-CVC/UniRepLKNet segmentation/configs/ade20k/
# upernet_unireplknet_t_512_160k_ade20k.py, written for mmseg 0.27; its README reports 48.6 mIoU
# single-scale) on mmseg 1.x: AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, layer-wise
# lr decay (rate 1.0 over 9 layers for T), linear warmup over 1500 iterations from 1e-6, then
# poly (power 1) to 0; drop_path 0.2; validation/test resize to (2048, 512) keeping the ratio,
# then to a multiple of 32.
# Train: python tools/mm_train.py configs/mm/mmseg/upernet_unireplknet_t_ade20k_512.py
# (the ImageNet checkpoint below is read from checkpoints/; ADE20K from data/ade/).
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['zoo.integrations.mm'], allow_failed_imports=False)

crop_size = (512, 512)
dims = [80, 160, 320, 640]
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='UniRepLKNetBackbone',
        depths=[3, 3, 18, 3],
        dims=dims,
        drop_path_rate=0.2,
        kernel_sizes=None,  # the default kernel sizes for these depths
        with_cp=False,
        attempt_use_lk_impl=False,
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/unireplknet_t_in1k_224_acc83.21.pth')),
    decode_head=dict(in_channels=dims, num_classes=150),
    auxiliary_head=dict(in_channels=dims[2], num_classes=150),
    test_cfg=dict(mode='whole'))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='UniRepLKNetLearningRateDecayOptimizerConstructor',
    # official comment: decay_rate 0.9 or 1.0 makes almost no difference for T
    paramwise_cfg=dict(decay_rate=1.0, decay_type='layer_wise', num_layers=9))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=4000)
default_hooks = dict(
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=4000, max_keep_ckpts=20,
        save_best='mIoU'))
# the official backbone uses SyncBN; on several GPUs mmengine converts every BN to SyncBN
sync_bn = 'torch'
