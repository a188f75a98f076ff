# Mask R-CNN, ConvNeXt-B from the ImageNet-22k weights, 3x multi-scale + crop (COCO).
# OUR RECIPE, UNVERIFIED: nobody has published a ConvNeXt-B Mask R-CNN. It takes the backbone and
# optimizer settings of the published Cascade B-22k recipe (drop path 0.6, layer-wise decay 0.8
# over 12 layers, AdamW 1e-4) onto mmdet's stock ConvNeXt-T Mask R-CNN 3x schedule.
_base_ = 'mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py'

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
