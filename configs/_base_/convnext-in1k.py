# Shared by the ImageNet-1k configs: the backbone of the ConvNeXt authors' 1k fine-tuning recipes
# and the official ImageNet-1k 224 weights (not the EMA ones: as mmpretrain's "noema" downstream
# copies the stock mmdet / mmseg configs load). Each config adds arch, drop path and checkpoint.
# Used as `backbone=dict(_delete_=True, **_base_.convnext_in1k, arch=..., ...)`.
checkpoint_tiny = 'https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224.pth'
checkpoint_small = 'https://dl.fbaipublicfiles.com/convnext/convnext_small_1k_224.pth'
checkpoint_base = 'https://dl.fbaipublicfiles.com/convnext/convnext_base_1k_224.pth'

convnext_in1k = dict(
    type='convnext_dense.ConvNeXt',
    out_indices=(0, 1, 2, 3),
    layer_scale_init_value=1.0)

# The ConvNeXt authors' detection schedule (their configs override only `step=[27, 33]` and
# `max_epochs=36` of Swin Detection's `schedule_1x.py`, commit 6a979e2): linear warmup over 500
# iterations from 0.001 x lr, not mmdet 3's 1000. Used as `param_scheduler = ...` by the 1k
# detectors.
detection_param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33], gamma=0.1)]

# `--tta` as the authors' `--aug-test` of their `_ms` configs (mmseg 0.x MultiScaleFlipAug with
# img_scale (2048, 512) and img_ratios 0.5-1.75, flip): each ratio scales the test *scale*, so every
# image is rescaled to fit (2048 r, 512 r), not its own size times r. Used by the 512 UperNets.
ade20k_512_tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(int(2048 * r), int(512 * r)), keep_ratio=True)
         for r in [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')]])]
