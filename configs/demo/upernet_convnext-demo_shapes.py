# UperNet on the embedded "shapes" dataset (`make demo`): the B-22k ADE20K config, changed only
# where a 2-core CPU and 128-192 px images need it.
# NO DOWNLOADED WEIGHTS: the backbone starts from `checkpoint`, which `make demo` makes first on
# rendered shapes (convnext_dense/extras/demo/pretrain.py: a conv-BN-ReLU shape classifier, then
# the same small ConvNeXt learns its feature maps), the demo's stand-in for ImageNet-22k; it is
# saved in the official layout and loaded through init_cfg Pretrained exactly as the 22k weights
# are.
# From scratch: model.backbone.init_cfg=None.
# Labels: 0 is a real class here (every pixel is annotated, background included), unlike
# ADE20K's 0 = "other", so reduce_zero_label=False and mIoU averages over 5 classes with the
# background.
_base_ = '../upernet/upernet_convnext-b-in22k_8xb2-160k_ade20k-640x640.py'

data_root = 'data/demo_shapes/ade'
classes = ('background', 'circle', 'triangle', 'square', 'star')
palette = [(0, 0, 0), (230, 25, 75), (0, 130, 200), (60, 180, 75), (255, 190, 0)]
metainfo = dict(classes=classes, palette=palette)
checkpoint = 'work_dirs/demo/pretrain/convnext-demo_shapes-distilled.pth'
backbone_channels = [32, 64, 128, 256]
crop_size = (128, 128)  # the smallest images' side: every training pixel is labelled
max_iters = 2000  # runs beside the Mask R-CNN demo, one core each
val_interval = 1000
warmup_iters = 100

model = dict(
    # Training crops are 128 x 128 (640 x 640 in the real config); tests see each image at its own
    # size, unpadded: padding the test input (as this config once did) is never seen in training
    # and turned background near the padded edges into shapes (background IoU 90 instead of 96).
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, depths=(1, 1, 3, 1), channels=tuple(backbone_channels)),
        drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=backbone_channels, channels=64, num_classes=len(classes)),
    auxiliary_head=dict(in_channels=backbone_channels[2], channels=32,
                        num_classes=len(classes)),
    # Slide inference like the real config (640 / 426): windows of the training crop, 2/3 stride.
    test_cfg=dict(crop_size=crop_size, stride=(85, 85)))

# CPU: the neck and heads in channels-last too (their convolutions train 1.7-2.8x as fast).
custom_hooks = [dict(type='convnext_dense.ChannelsLastHook')]

# Native scale, flip only: the shapes' sizes are the task.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs')
]
# `--tta`: each image at its own size x 0.75-1.5, with flip. The real configs' test-time scales,
# ADE20K's (2560, 640) x 0.5-1.75, would blow these 128-192 px images up 2-9 times.
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.75, 1.0, 1.25, 1.5)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations', reduce_zero_label=False)],
        [dict(type='PackSegInputs')]])]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
                 reduce_zero_label=False, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
                 reduce_zero_label=False, pipeline=test_pipeline))
test_dataloader = val_dataloader

# decay_rate 1.0: the layer-decay constructor (no weight decay on norms and biases), every layer
# at the full lr. fused: torch's one-kernel AdamW step (8.4 -> 1.8 ms a step here on a CPU).
optim_wrapper = dict(
    optimizer=dict(lr=2e-3, fused=True),
    paramwise_cfg=dict(decay_rate=1.0),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    # Overlaps the warmup and has no `end`: the runner ends it at train_cfg.max_iters, also when
    # that is overridden, even below the warmup's length (a resumed run keeps the end it was
    # saved with: mmengine restores the scheduler's state).
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0)
]
train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=val_interval, max_keep_ckpts=1, save_last=True))
# A fixed seed: `make demo` gives the same figures run after run (mmengine draws one otherwise).
randomness = dict(seed=0)
