# UperNet + UniRepLKNet-S (ImageNet-1K) on ADE20K, 512x512 crops, 160k iterations, 8 GPUs x 2.
# The official recipe (segmentation/configs/ade20k/upernet_unireplknet_s_512_160k_ade20k.py):
# as the T config, with drop_path 0.3, gradient checkpointing, and layer-wise lr decay 0.9
# over 12 layers.
_base_ = './upernet_unireplknet_t_ade20k_512.py'

dims = [96, 192, 384, 768]
model = dict(
    backbone=dict(
        depths=[3, 3, 27, 3],
        dims=dims,
        drop_path_rate=0.3,
        with_cp=True,
        init_cfg=dict(checkpoint='checkpoints/unireplknet_s_in1k_224_acc83.91.pth')),
    decode_head=dict(in_channels=dims),
    auxiliary_head=dict(in_channels=dims[2]))
optim_wrapper = dict(paramwise_cfg=dict(decay_rate=0.9, num_layers=12))
