# UperNet, ConvNeXt-B from the ImageNet-22k weights, 160k iterations, ADE20K 640x640.
# Published by the ConvNeXt authors: 52.6 mIoU single-scale, 53.1 multi-scale + flip
# (not yet reproduced here). The rest (drop path 0.4, AdamW 1e-4, stage-wise decay 0.9 over 12
# layers, 1500-iteration warmup then poly, slide test 640 / 426, AMP, 2 images per GPU x 8 GPUs)
# comes from mmseg's stock config.
_base_ = ['mmseg::convnext/convnext-base_upernet_8xb2-amp-160k_ade20k-640x640.py',
          '../_base_/convnext-b-in22k.py']

custom_imports = dict(imports=['convnext_dense', 'convnext_dense.model_checkpoints'],
                      allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, **_base_.convnext_b_in22k, drop_path_rate=0.4),
    decode_head=dict(in_channels=_base_.backbone_channels),
    auxiliary_head=dict(in_channels=_base_.backbone_channels[2]))

optim_wrapper = dict(constructor='convnext_dense.LayerDecayOptimizerConstructor')
auto_scale_lr = dict(enable=False, base_batch_size=16)
