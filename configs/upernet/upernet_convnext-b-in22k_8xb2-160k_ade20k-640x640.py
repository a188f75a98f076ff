# UperNet, ConvNeXt-B from the ImageNet-22k weights, 160k iterations, ADE20K 640x640.
# Published by the ConvNeXt authors: 52.6 mIoU single-scale, 53.1 multi-scale + flip
# (not yet reproduced here). Checked against their config (upernet_convnext_base_640_160k_ade20k
# _ss/_ms.py): drop path 0.4, AdamW 1e-4, stage-wise decay 0.9 over 12 layers, 1500-iteration
# warmup then poly, mixed precision, 2 images per GPU x 8 GPUs, slide test 640 / 426 after resizing
# to 2560x640, as mmseg's stock config. Their multi-scale column (`--aug-test` on the `_ms` config)
# rescales to (2560, 640) x 0.5-1.75 with flip, whole-image inference: `tta_pipeline` below, and
# `--cfg-options model.test_cfg.mode=whole`.
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
tta_pipeline = _base_.ade20k_640_tta_pipeline
