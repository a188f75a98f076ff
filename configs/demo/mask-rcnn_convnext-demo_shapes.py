# Mask R-CNN on the embedded "shapes" dataset (`make demo`): the B-22k COCO config, changed only
# where a 2-core CPU, 128-192 px images and 16-96 px objects need it.
# NO DOWNLOADED WEIGHTS: the backbone starts from `checkpoint`, which `make demo` makes first on
# rendered shapes (convnext_dense/extras/demo/pretrain.py: a conv-BN-ReLU shape classifier, then
# the same small ConvNeXt learns its feature maps), the demo's stand-in for ImageNet-22k; it is
# saved in the official layout and loaded through init_cfg Pretrained exactly as the 22k weights
# are.
# From scratch: model.backbone.init_cfg=None.
_base_ = '../mask_rcnn/mask-rcnn_convnext-b-in22k_fpn_ms-crop-3x_coco.py'

data_root = 'data/demo_shapes/coco/'
classes = ('circle', 'triangle', 'square', 'star')
palette = [(230, 25, 75), (0, 130, 200), (60, 180, 75), (255, 190, 0)]
metainfo = dict(classes=classes, palette=palette)
checkpoint = 'work_dirs/demo/pretrain/convnext-demo_shapes-distilled.pth'
backbone_channels = [32, 64, 128, 256]
neck_channels = 64
max_iters = 500  # 8 images a step, one core, beside the UperNet run
val_interval = 250
warmup_iters = 100

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, depths=(1, 1, 3, 1), channels=tuple(backbone_channels)),
        drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=backbone_channels, out_channels=neck_channels, num_outs=4),
    # Objects are 16-96 px: anchors of 16-128 px on P2-P5 instead of 32-512 on P2-P6.
    rpn_head=dict(
        in_channels=neck_channels,
        feat_channels=neck_channels,
        anchor_generator=dict(scales=[4], strides=[4, 8, 16, 32])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=neck_channels),
        bbox_head=dict(in_channels=neck_channels, fc_out_channels=256,
                       num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=neck_channels),
        mask_head=dict(in_channels=neck_channels, conv_out_channels=neck_channels,
                       num_classes=len(classes))),
    # At most 8 objects per image: fewer proposals and RoIs than COCO's 2000 / 512 (the mask
    # head and mmcv's RoIAlign backward take half of a CPU step and scale with the RoIs; the
    # proposals' NMS took 8 % of a step with 1000 boxes per level).
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100)))

# CPU: the neck and heads in channels-last too (their convolutions train 1.7-2.8x as fast).
custom_hooks = [dict(type='convnext_dense.ChannelsLastHook')]

# Native scale, flip only: the shapes' sizes are the task.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# The backbone is small (num_layers 4) and its pretraining is short: milder decay than 0.8 / 12.
# fused: torch's one-kernel AdamW step (on a CPU, for the UperNet demo's parameters, 1.8 against
# 8.4 ms).
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, fused=True),
    paramwise_cfg=dict(decay_rate=0.9, num_layers=4),
    clip_grad=dict(max_norm=10.0))
# Warmup times a cosine to 0 (the two overlap, as mmdet's warmup and step schedules do). No
# `end`: the runner ends the cosine at train_cfg.max_iters, so the schedule follows a command-line
# override, even one shorter than the warmup (the 3x schedule's fixed milestones would not).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=0)
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=val_interval)
default_hooks = dict(
    # Validation metrics logged at their iteration (mmdet's default logs them at the epoch: 0).
    logger=dict(interval=20, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=val_interval, max_keep_ckpts=1, save_last=True))
log_processor = dict(by_epoch=False)
# A fixed seed: `make demo` gives the same figures run after run (mmengine draws one otherwise).
randomness = dict(seed=0)
