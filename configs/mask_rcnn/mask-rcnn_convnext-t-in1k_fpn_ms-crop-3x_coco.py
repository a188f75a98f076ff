# Mask R-CNN, ConvNeXt-T from the ImageNet-1k weights, 3x multi-scale + crop (COCO).
# Published by the ConvNeXt authors: 46.2 box AP / 41.7 mask AP. Checked against their config
# (mask_rcnn_convnext_tiny_patch4_window7_mstrain_480-800_adamw_3x_coco_in1k.py): drop path 0.4,
# AdamW 1e-4, layer-wise decay 0.95 over 6 layers, 36 epochs with steps at 27 and 33, test at
# 1333x800 without flip, as mmdet's stock config; warmup 500 iterations (mmdet's is 1000).
_base_ = ['mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py',
          '../_base_/convnext-in1k.py']

custom_imports = dict(imports=['convnext_dense', 'convnext_dense.model_checkpoints'],
                      allow_failed_imports=False)

model = dict(backbone=dict(
    _delete_=True, **_base_.convnext_in1k, arch='tiny', drop_path_rate=0.4,
    init_cfg=dict(type='Pretrained', checkpoint=_base_.checkpoint_tiny)))
optim_wrapper = dict(constructor='convnext_dense.LayerDecayOptimizerConstructor')
param_scheduler = _base_.detection_param_scheduler
