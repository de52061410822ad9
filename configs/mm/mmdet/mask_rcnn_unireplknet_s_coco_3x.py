# Mask R-CNN + FPN + UniRepLKNet-S (ImageNet-1K) on COCO, 3x schedule with multi-scale
# training: the official UniRepLKNet-S COCO recipe (_base_/unireplknet_s_coco_3x.py) on mmdet's
# Mask R-CNN (the official repo ships Cascade Mask R-CNN configs only).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/unireplknet_s_coco_3x.py',
]
model = dict(
    backbone={{_base_.unireplknet_s}},
    neck=dict(in_channels={{_base_.dims}}))
