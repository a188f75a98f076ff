# ConvNeXt-L variant of the B-22k Cascade Mask R-CNN recipe (published: 54.8 box / 47.6 mask AP).
# The authors' L config differs from B in drop path (0.7), layer-wise decay (0.7) and precision:
# it trains in fp32 (`use_fp16=False`), so this config does too (`tools/train.py --amp` for AMP).
_base_ = './cascade-mask-rcnn_convnext-b-in22k_fpn_4conv1fc-giou_ms-crop-3x_coco.py'

backbone_channels = [192, 384, 768, 1536]
model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.7,
        init_cfg=dict(checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_large_22k_224.pth')),
    neck=dict(in_channels=backbone_channels))
optim_wrapper = dict(type='OptimWrapper', paramwise_cfg=dict(decay_rate=0.7))
