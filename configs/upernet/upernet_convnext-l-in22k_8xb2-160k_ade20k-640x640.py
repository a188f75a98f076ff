# ConvNeXt-L variant of the B-22k UperNet recipe (published: 53.2 / 53.7 mIoU).
# The authors' L config differs from B only in precision: it trains in fp32 (`use_fp16=False`),
# so this config does too (`tools/train.py --amp` for AMP).
_base_ = './upernet_convnext-b-in22k_8xb2-160k_ade20k-640x640.py'

backbone_channels = [192, 384, 768, 1536]
model = dict(
    backbone=dict(
        arch='large',
        init_cfg=dict(checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_large_22k_224.pth')),
    decode_head=dict(in_channels=backbone_channels),
    auxiliary_head=dict(in_channels=backbone_channels[2]))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', constructor='convnext_dense.LayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=12))
