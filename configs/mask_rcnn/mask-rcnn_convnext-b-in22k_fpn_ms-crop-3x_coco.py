# Mask R-CNN, ConvNeXt-B from the ImageNet-22k weights, 3x multi-scale + crop (COCO).
# OUR RECIPE, UNVERIFIED: nobody has published a ConvNeXt-B Mask R-CNN. It takes the backbone and
# optimizer settings of the published Cascade B-22k recipe (drop path 0.6, layer-wise decay 0.8
# over 12 layers, AdamW 1e-4, the authors' 500-iteration warmup) onto mmdet's stock ConvNeXt-T
# Mask R-CNN 3x schedule.
_base_ = ['mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py',
          '../_base_/convnext-b-in22k.py']

custom_imports = dict(imports=['convnext_dense', 'convnext_dense.model_checkpoints'],
                      allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, **_base_.convnext_b_in22k, drop_path_rate=0.6),
    neck=dict(in_channels=_base_.backbone_channels))
optim_wrapper = _base_.detection_layer_decay
param_scheduler = _base_.detection_param_scheduler
