# Cascade Mask R-CNN, ConvNeXt-B from the ImageNet-1k weights, 3x multi-scale + crop (COCO).
# Published by the ConvNeXt authors: 52.7 box AP / 45.6 mask AP. mmdet has no B-1k config: this is
# the S config (AdamW 2e-4, 36 epochs, 500-iteration warmup, test at 1333x800 without flip) with
# the B backbone and the authors' B-1k values, checked against their config
# (cascade_mask_rcnn_convnext_base_..._3x_coco_in1k.py): drop path 0.7, layer-wise decay 0.8
# over 12 layers.
_base_ = './cascade-mask-rcnn_convnext-s-in1k_fpn_4conv1fc-giou_ms-crop-3x_coco.py'

backbone_channels = [128, 256, 512, 1024]
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.7,
                  init_cfg=dict(checkpoint=_base_.checkpoint_base)),
    neck=dict(in_channels=backbone_channels))
optim_wrapper = dict(paramwise_cfg=dict(decay_rate=0.8))
