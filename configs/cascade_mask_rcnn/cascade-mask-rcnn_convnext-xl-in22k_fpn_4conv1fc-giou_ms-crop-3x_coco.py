# ConvNeXt-XL variant of the L-22k Cascade Mask R-CNN recipe (published: 55.2 box / 47.7 mask AP).
# The authors' XL config is their L one (fp32, layer-wise decay 0.7, AdamW 1e-4) with drop path 0.8.
_base_ = './cascade-mask-rcnn_convnext-l-in22k_fpn_4conv1fc-giou_ms-crop-3x_coco.py'

backbone_channels = [256, 512, 1024, 2048]
model = dict(
    backbone=dict(
        arch='xlarge',
        drop_path_rate=0.8,
        init_cfg=dict(checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_xlarge_22k_224.pth')),
    neck=dict(in_channels=backbone_channels))
