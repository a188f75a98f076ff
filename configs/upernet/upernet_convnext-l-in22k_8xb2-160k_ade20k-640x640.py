# ConvNeXt-L variant of the B-22k UperNet recipe (published: 53.2 / 53.7 mIoU).
_base_ = './upernet_convnext-b-in22k_8xb2-160k_ade20k-640x640.py'

backbone_channels = [192, 384, 768, 1536]
model = dict(
    backbone=dict(
        arch='large',
        init_cfg=dict(checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_large_22k_224.pth')),
    decode_head=dict(in_channels=backbone_channels),
    auxiliary_head=dict(in_channels=backbone_channels[2]))
