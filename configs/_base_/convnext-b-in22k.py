# Shared by the B-22k configs: the ConvNeXt-B backbone as the ImageNet-22k fine-tuning recipes
# build it, and the detection recipes' layer-wise lr decay. Each config's stock mmdet / mmseg base
# already defines `model` and `optim_wrapper`, and mmengine refuses a key two bases define, so
# these are named pieces the configs use: `backbone=dict(_delete_=True, **_base_.convnext_b_in22k,
# drop_path_rate=...)`. Drop path stays in each config: it is part of each published recipe.
checkpoint = 'https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_224.pth'
backbone_channels = [128, 256, 512, 1024]

convnext_b_in22k = dict(
    type='convnext_dense.ConvNeXt',
    arch='base',
    out_indices=(0, 1, 2, 3),
    layer_scale_init_value=1.0,
    init_cfg=dict(type='Pretrained', checkpoint=checkpoint))

# The published Cascade Mask R-CNN B-22k optimizer: AdamW 1e-4, decay 0.8 over 12 layers.
detection_layer_decay = dict(
    constructor='convnext_dense.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(_delete_=True, decay_rate=0.8, decay_type='layer_wise', num_layers=12),
    optimizer=dict(lr=1e-4))

# The ConvNeXt authors' detection schedule (their configs override only `step=[27, 33]` and
# `max_epochs=36` of Swin Detection's `schedule_1x.py`, commit 6a979e2): linear warmup over 500
# iterations from 0.001 x lr, not mmdet 3's 1000.
detection_param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33], gamma=0.1)]

# `--tta` as the authors' `--aug-test` of their `_ms` configs (mmseg 0.x MultiScaleFlipAug with
# img_scale (2560, 640) and img_ratios 0.5-1.75, flip): each ratio scales the test *scale*, so every
# image is rescaled to fit (2560 r, 640 r), not its own size times r. Used by the 640 UperNets.
ade20k_640_tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(int(2560 * r), int(640 * r)), keep_ratio=True)
         for r in [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')]])]
