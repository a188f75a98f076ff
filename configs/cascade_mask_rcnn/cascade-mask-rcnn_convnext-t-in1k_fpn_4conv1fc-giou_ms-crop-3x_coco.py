# Cascade Mask R-CNN, ConvNeXt-T from the ImageNet-1k weights, 3x multi-scale + crop (COCO).
# Published by the ConvNeXt authors: 50.4 box AP / 43.7 mask AP. Checked against their config: drop
# path 0.4, AdamW 2e-4, layer-wise decay 0.7 over 6 layers, 36 epochs, test at 1333x800 without
# flip, as mmdet's stock config; warmup 500 iterations (mmdet's is 1000).
_base_ = ['mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py',  # noqa
          '../_base_/convnext-in1k.py']

custom_imports = dict(imports=['convnext_dense', 'convnext_dense.model_checkpoints'],
                      allow_failed_imports=False)

model = dict(backbone=dict(
    _delete_=True, **_base_.convnext_in1k, arch='tiny', drop_path_rate=0.4,
    init_cfg=dict(type='Pretrained', checkpoint=_base_.checkpoint_tiny)))
optim_wrapper = dict(constructor='convnext_dense.LayerDecayOptimizerConstructor')
param_scheduler = _base_.detection_param_scheduler
