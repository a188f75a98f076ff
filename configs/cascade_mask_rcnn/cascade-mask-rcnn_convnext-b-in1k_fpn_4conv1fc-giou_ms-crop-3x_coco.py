# Cascade Mask R-CNN, ConvNeXt-B from the ImageNet-1k weights, 3x multi-scale + crop (COCO).
# Published by the ConvNeXt authors: 52.7 box AP / 45.6 mask AP. mmdet has no B-1k config: this is
# its S config with the B backbone. Drop path 0.7 is written from memory of the official B-1k
# recipe (AdamW 2e-4, layer-wise decay 0.7 over 12 layers, as S) and NOT VERIFIED against it;
# the test-time settings (1333x800, no flip) are the official ones.
_base_ = './cascade-mask-rcnn_convnext-s-in1k_fpn_4conv1fc-giou_ms-crop-3x_coco.py'

backbone_channels = [128, 256, 512, 1024]
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.7,
                  init_cfg=dict(checkpoint=_base_.checkpoint_base)),
    neck=dict(in_channels=backbone_channels))
