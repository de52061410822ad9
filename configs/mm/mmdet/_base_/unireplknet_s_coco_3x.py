# The official UniRepLKNet-S COCO recipe (AILab-CVC/UniRepLKNet detection/configs/coco/
# casc_mask_rcnn_unireplknet_s_in1k_fpn_3x_coco.py, written for mmdet 2.28) on mmdet 3.x,
# shared by the Mask R-CNN and Cascade Mask R-CNN configs (which add the detector): the
# backbone (drop_path 0.5, gradient checkpointing, ImageNet-1K weights), DETR-style multi-scale
# resize/crop augmentation, 8 GPUs x 2 images, AdamW lr 1e-4 / weight decay 0.05 with
# layer-wise lr decay 0.8 over 12 layers, 36 epochs with the lr divided by 10 after epochs 27
# and 33, linear warmup over 500 iterations from 0.001.
_base_ = [
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['zoo.integrations.mm'], allow_failed_imports=False)

dims = [96, 192, 384, 768]
unireplknet_s = dict(
    _delete_=True,  # replaces the detector base's ResNet-50
    type='UniRepLKNetBackbone',
    depths=[3, 3, 27, 3],
    dims=dims,
    drop_path_rate=0.5,
    kernel_sizes=None,  # the default kernel sizes for these depths
    with_cp=True,
    attempt_use_lk_impl=False,
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/unireplknet_s_in1k_224_acc83.91.pth'))

train_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333), (640, 1333),
                (672, 1333), (704, 1333), (736, 1333), (768, 1333), (800, 1333)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=train_scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=train_scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='UniRepLKNetLearningRateDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.8, decay_type='layer_wise', num_layers=12))
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=5, save_last=True,
                    save_best='auto'))
# the official backbone uses SyncBN; on several GPUs mmengine converts every BN to SyncBN
sync_bn = 'torch'
