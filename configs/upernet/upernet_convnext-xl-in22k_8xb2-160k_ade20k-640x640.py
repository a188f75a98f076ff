# ConvNeXt-XL variant of the L-22k UperNet recipe (published: 53.6 / 54.0 mIoU).
# The authors' XL config is their L one (fp32, drop path 0.4) with AdamW lr 8e-5.
_base_ = './upernet_convnext-l-in22k_8xb2-160k_ade20k-640x640.py'

backbone_channels = [256, 512, 1024, 2048]
model = dict(
    backbone=dict(
        arch='xlarge',
        init_cfg=dict(checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_xlarge_22k_224.pth')),
    decode_head=dict(in_channels=backbone_channels),
    auxiliary_head=dict(in_channels=backbone_channels[2]))
optim_wrapper = dict(optimizer=dict(lr=8e-5))
