# Mask R-CNN, ConvNeXt-T from the ImageNet-1k weights, 3x multi-scale + crop (COCO).
# Published by the ConvNeXt authors: 46.2 box AP / 41.7 mask AP. The rest (drop path 0.4, AdamW,
# layer-wise decay 0.95 over 6 layers, 36 epochs, test at 1333x800) is mmdet's stock config.
_base_ = ['mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py',
          '../_base_/convnext-in1k.py']

custom_imports = dict(imports=['convnext_dense', 'convnext_dense.model_checkpoints'],
                      allow_failed_imports=False)

model = dict(backbone=dict(
    _delete_=True, **_base_.convnext_in1k, arch='tiny', drop_path_rate=0.4,
    init_cfg=dict(type='Pretrained', checkpoint=_base_.checkpoint_tiny)))
optim_wrapper = dict(constructor='convnext_dense.LayerDecayOptimizerConstructor')
