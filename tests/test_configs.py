"""Every config under configs/ builds; the B configs train and infer on CPU; recipes are as published."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from convnext_dense.runtime import config, device
from convnext_dense.extras.swap_survey.smoke import detection_batch, segmentation_batch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Runnable configs; configs/_base_/ holds pieces they share, not configs of their own.
CONFIGS = sorted(path for path in glob.glob(osp.join(ROOT, 'configs', '*', '*.py'))
                 if osp.basename(osp.dirname(path)) != '_base_')
CASCADE_B = 'configs/cascade_mask_rcnn/cascade-mask-rcnn_convnext-b-in22k_fpn_4conv1fc-giou_ms-crop-3x_coco.py'
MASK_RCNN_B = 'configs/mask_rcnn/mask-rcnn_convnext-b-in22k_fpn_ms-crop-3x_coco.py'
UPERNET_B = 'configs/upernet/upernet_convnext-b-in22k_8xb2-160k_ade20k-640x640.py'
OFFICIAL_22K = 'https://dl.fbaipublicfiles.com/convnext/convnext_{}_22k_224.pth'
OFFICIAL_1K = 'https://dl.fbaipublicfiles.com/convnext/convnext_{}_1k_224.pth'


def _load(relative_path: str) -> Config:
    return Config.fromfile(osp.join(ROOT, relative_path))


def _build_model(cfg: Config):
    scope = config.task_scope(cfg)
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    return registry.build(cfg.model)


def test_required_configs_exist():
    names = {osp.relpath(path, ROOT) for path in CONFIGS}
    for size in ('b', 'l', 'xl'):
        assert f'configs/cascade_mask_rcnn/cascade-mask-rcnn_convnext-{size}-in22k_fpn_4conv1fc-giou_ms-crop-3x_coco.py' in names
        assert f'configs/upernet/upernet_convnext-{size}-in22k_8xb2-160k_ade20k-640x640.py' in names
    assert MASK_RCNN_B in names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.basename(p))
def test_config_builds_model_with_consistent_channels(path):
    cfg = Config.fromfile(path)
    backbone_cfg = cfg.model.backbone
    assert backbone_cfg.type == 'convnext_dense.ConvNeXt'
    if 'demo' not in path:
        arch = backbone_cfg.arch
        weights = OFFICIAL_1K if '-in1k_' in path else OFFICIAL_22K
        assert backbone_cfg.init_cfg == dict(type='Pretrained', checkpoint=weights.format(arch))
    model = _build_model(cfg)  # init_weights is not called: nothing is downloaded
    channels = list(model.backbone.out_channels)
    if config.task_scope(cfg) == 'mmdet':
        assert list(cfg.model.neck.in_channels) == channels
    else:
        assert list(cfg.model.decode_head.in_channels) == channels
        assert cfg.model.auxiliary_head.in_channels == channels[cfg.model.auxiliary_head.in_index]


def _train_and_infer(cfg: Config, batch):
    cfg.model.backbone.init_cfg = None
    device.adapt_to_device(cfg)
    model = _build_model(cfg)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    losses = model.train_step(batch, optim_wrapper)
    assert losses and all(torch.isfinite(v).all() for v in losses.values())
    model.eval()
    with torch.no_grad():
        return model.test_step(batch)


@pytest.mark.parametrize('path', [CASCADE_B, MASK_RCNN_B])
def test_detection_config_trains_and_infers(path):
    cfg = _load(path)
    predictions = _train_and_infer(cfg, detection_batch(80, (128, 160)))
    assert len(predictions) == 2
    for sample in predictions:
        instances = sample.pred_instances
        assert instances.bboxes.shape[1] == 4
        assert len(instances.masks) == len(instances.bboxes)


def test_segmentation_config_trains_and_infers():
    cfg = _load(UPERNET_B)
    cfg.model.data_preprocessor.size = (128, 128)  # the 640 crop would only slow the test
    predictions = _train_and_infer(cfg, segmentation_batch(150, (128, 128)))
    assert predictions[0].pred_sem_seg.data.shape == (1, 128, 128)
    assert int(predictions[0].pred_sem_seg.data.max()) < 150


def test_cascade_b_recipe_is_the_published_one():
    """Values from the ConvNeXt authors' Cascade Mask R-CNN B-22k 3x recipe."""
    cfg = _load(CASCADE_B)
    backbone = cfg.model.backbone
    assert (backbone.arch, backbone.drop_path_rate, backbone.layer_scale_init_value) == ('base', 0.6, 1.0)
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    assert list(cfg.model.neck.in_channels) == [128, 256, 512, 1024]
    assert cfg.model.neck.out_channels == 256
    for head in cfg.model.roi_head.bbox_head:
        assert (head.num_shared_convs, head.num_shared_fcs) == (4, 1)
        assert head.loss_bbox == dict(type='GIoULoss', loss_weight=10.0)
        assert head.reg_decoded_bbox
    optim = cfg.optim_wrapper
    assert optim.type == 'AmpOptimWrapper'
    assert optim.constructor == 'convnext_dense.LayerDecayOptimizerConstructor'
    assert optim.optimizer == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    assert optim.paramwise_cfg == dict(decay_rate=0.8, decay_type='layer_wise', num_layers=12)
    assert cfg.train_cfg.max_epochs == 36
    warmup, steps = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and not warmup.by_epoch
    assert steps.type == 'MultiStepLR' and list(steps.milestones) == [27, 33]
    assert cfg.train_dataloader.batch_size * 8 == 16
    assert cfg.auto_scale_lr.base_batch_size == 16
    pipeline = [step.type for step in cfg.train_dataloader.dataset.pipeline]
    assert pipeline[:3] == ['LoadImageFromFile', 'LoadAnnotations', 'RandomFlip']
    assert cfg.train_dataloader.dataset.pipeline[2].prob == 0.5
    choice = cfg.train_dataloader.dataset.pipeline[3]
    single_scale, crop_then_scale = choice.transforms
    assert [s[0] for s in single_scale[0].scales] == list(range(480, 801, 32))
    assert all(s[1] == 1333 for s in single_scale[0].scales)
    assert [s[0] for s in crop_then_scale[0].scales] == [400, 500, 600]
    assert crop_then_scale[1].crop_size == (384, 600)


def test_cascade_variants_follow_the_published_per_size_settings():
    expected = {'l': ('large', 0.7, 0.7, [192, 384, 768, 1536]),
                'xl': ('xlarge', 0.8, 0.7, [256, 512, 1024, 2048])}
    for size, (arch, drop_path, decay, channels) in expected.items():
        cfg = _load(CASCADE_B.replace('-b-', f'-{size}-'))
        assert cfg.model.backbone.arch == arch
        assert cfg.model.backbone.drop_path_rate == drop_path
        assert cfg.optim_wrapper.paramwise_cfg.decay_rate == decay
        assert cfg.optim_wrapper.paramwise_cfg.num_layers == 12
        assert list(cfg.model.neck.in_channels) == channels


def test_mask_rcnn_b_uses_the_cascade_backbone_and_optimizer_recipe():
    cascade, mask = _load(CASCADE_B), _load(MASK_RCNN_B)
    assert mask.model.type == 'MaskRCNN'
    assert mask.model.backbone == cascade.model.backbone
    assert mask.optim_wrapper == cascade.optim_wrapper
    assert mask.train_cfg.max_epochs == 36
    assert 'UNVERIFIED' in open(osp.join(ROOT, MASK_RCNN_B)).read()


def test_upernet_b_recipe_is_the_published_one():
    """Values from the ConvNeXt authors' UperNet B-22k 640x640 160k recipe."""
    cfg = _load(UPERNET_B)
    backbone = cfg.model.backbone
    assert (backbone.arch, backbone.drop_path_rate, backbone.layer_scale_init_value) == ('base', 0.4, 1.0)
    head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
    assert head.type == 'UPerHead' and list(head.in_channels) == [128, 256, 512, 1024]
    assert head.channels == 512 and tuple(head.pool_scales) == (1, 2, 3, 6)
    assert head.num_classes == 150
    assert aux.type == 'FCNHead' and aux.in_index == 2 and aux.loss_decode.loss_weight == 0.4
    optim = cfg.optim_wrapper
    assert optim.type == 'AmpOptimWrapper'
    assert optim.constructor == 'convnext_dense.LayerDecayOptimizerConstructor'
    assert optim.optimizer.type == 'AdamW' and optim.optimizer.lr == 1e-4
    assert optim.optimizer.weight_decay == 0.05
    assert optim.paramwise_cfg == dict(decay_rate=0.9, decay_type='stage_wise', num_layers=12)
    warmup, poly = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == 1500
    assert poly.type == 'PolyLR' and (poly.power, poly.eta_min, poly.begin) == (1.0, 0.0, 1500)
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size * 8 == 16
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(640, 640), stride=(426, 426))
    assert cfg.data_root == 'data/ade/ADEChallengeData2016'


def test_upernet_variants():
    large = _load(UPERNET_B.replace('-b-', '-l-'))
    xlarge = _load(UPERNET_B.replace('-b-', '-xl-'))
    assert large.model.backbone.arch == 'large' and large.optim_wrapper.optimizer.lr == 1e-4
    assert xlarge.model.backbone.arch == 'xlarge' and xlarge.optim_wrapper.optimizer.lr == 8e-5
    assert list(xlarge.model.decode_head.in_channels) == [256, 512, 1024, 2048]
    assert xlarge.model.auxiliary_head.in_channels == 1024


def test_coco_data_root_follows_mmdet():
    assert _load(CASCADE_B).data_root == 'data/coco/'
