# Cascade Mask R-CNN, ConvNeXt-B from the ImageNet-22k weights, 3x multi-scale + crop (COCO).
# Published by the ConvNeXt authors: 54.0 box AP / 46.9 mask AP (not yet reproduced here).
# Checked against their config: drop path 0.6, AdamW 1e-4, layer-wise decay 0.8 over 12 layers,
# mixed precision, warmup 500 iterations (mmdet's is 1000). Everything else (4conv1fc GIoU heads,
# DETR-style augmentation, 36 epochs with steps at 27 and 33, 2 images per GPU x 8 GPUs, test at
# 1333x800 without flip) comes from mmdet's stock config.
_base_ = ['mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py',  # noqa
          '../_base_/convnext-b-in22k.py']

custom_imports = dict(imports=['convnext_dense', 'convnext_dense.model_checkpoints'],
                      allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, **_base_.convnext_b_in22k, drop_path_rate=0.6),
    neck=dict(in_channels=_base_.backbone_channels))
optim_wrapper = _base_.detection_layer_decay
param_scheduler = _base_.detection_param_scheduler
