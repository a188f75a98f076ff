# Cascade Mask R-CNN, ConvNeXt-B from the ImageNet-22k weights, 3x multi-scale + crop (COCO).
# Published by the ConvNeXt authors: 54.0 box AP / 46.9 mask AP (not yet reproduced here).
# Everything else (4conv1fc GIoU heads, DETR-style augmentation, 36 epochs with steps at 27 and
# 33, 1000-iteration warmup, AMP, 2 images per GPU x 8 GPUs) comes from mmdet's stock config.
_base_ = 'mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'  # noqa

custom_imports = dict(imports=['convnext_dense'], allow_failed_imports=False)
checkpoint = 'https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_224.pth'
backbone_channels = [128, 256, 512, 1024]

model = dict(
    backbone=dict(
        _delete_=True,
        type='convnext_dense.ConvNeXt',
        arch='base',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.6,
        layer_scale_init_value=1.0,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=backbone_channels))

optim_wrapper = dict(
    constructor='convnext_dense.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(_delete_=True, decay_rate=0.8, decay_type='layer_wise', num_layers=12),
    optimizer=dict(lr=1e-4))
