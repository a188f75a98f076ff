# UperNet, ConvNeXt-S from the ImageNet-1k weights, 160k iterations, ADE20K 512x512.
# Published by the ConvNeXt authors: 48.7 mIoU single-scale / 49.6 multi-scale + flip.
# Checked against their config (upernet_convnext_small_512_160k_ade20k_ss/_ms.py): drop path 0.3,
# AdamW 1e-4, stage-wise decay 0.9 over 12 layers, 1500-iteration warmup then poly, 2 images per
# GPU, mixed precision, slide test 512 / 341 after resizing to 2048x512, as mmseg's stock config.
# Their multi-scale column (`--aug-test` on the `_ms` config) rescales to (2048, 512) x 0.5-1.75 with
# flip, whole-image inference: `tta_pipeline` below, and `--cfg-options model.test_cfg.mode=whole`.
_base_ = ['mmseg::convnext/convnext-small_upernet_8xb2-amp-160k_ade20k-512x512.py',
          '../_base_/convnext-in1k.py']

custom_imports = dict(imports=['convnext_dense', 'convnext_dense.model_checkpoints'],
                      allow_failed_imports=False)

model = dict(backbone=dict(
    _delete_=True, **_base_.convnext_in1k, arch='small', drop_path_rate=0.3,
    init_cfg=dict(type='Pretrained', checkpoint=_base_.checkpoint_small)))
optim_wrapper = dict(constructor='convnext_dense.LayerDecayOptimizerConstructor')
auto_scale_lr = dict(enable=False, base_batch_size=16)
tta_pipeline = _base_.ade20k_512_tta_pipeline
