# Cascade Mask R-CNN + FPN + UniRepLKNet-S (ImageNet-1K) on COCO, 3x schedule with multi-scale
# training: the official config (AILab-CVC/UniRepLKNet detection/configs/coco/
# casc_mask_rcnn_unireplknet_s_in1k_fpn_3x_coco.py; its README reports box AP 53.0 / mask AP
# 45.9) on mmdet 3.x. The three cascade box heads are 4 shared convs + 1 fc with SyncBN and a
# GIoU loss (weight 10) on decoded boxes.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    './_base_/unireplknet_s_coco_3x.py',
]


def _bbox_head(target_stds):
    return dict(
        type='ConvFCBBoxHead',
        num_shared_convs=4,
        num_shared_fcs=1,
        in_channels=256,
        conv_out_channels=256,
        fc_out_channels=1024,
        roi_feat_size=7,
        num_classes=80,
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=target_stds),
        reg_class_agnostic=False,
        reg_decoded_bbox=True,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=10.0))


model = dict(
    backbone={{_base_.unireplknet_s}},
    neck=dict(in_channels={{_base_.dims}}),
    roi_head=dict(bbox_head=[
        _bbox_head([0.1, 0.1, 0.2, 0.2]),
        _bbox_head([0.05, 0.05, 0.1, 0.1]),
        _bbox_head([0.033, 0.033, 0.067, 0.067]),
    ]))
