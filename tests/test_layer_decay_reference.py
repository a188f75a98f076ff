"""LayerDecayOptimizerConstructor equals mmdet's and mmseg's LearningRateDecayOptimizerConstructor.

Every parameter (matched by identity) must get the same lr and weight decay, on the published
ConvNeXt-B recipes: Cascade Mask R-CNN (layer_wise, 0.8, 12) and UperNet (stage_wise, 0.9, 12).
"""
import os

import mmdet
import mmseg
import pytest
import torch
from mmdet.engine.optimizers import \
    LearningRateDecayOptimizerConstructor as MMDetConstructor
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmseg.engine.optimizers import \
    LearningRateDecayOptimizerConstructor as MMSegConstructor
from torch import nn

from tiny import TINY_ARCH
from convnext_dense import ConvNeXt, LayerDecayOptimizerConstructor

DET_CONFIG = 'cascade-mask-rcnn_convnext-s-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'
SEG_CONFIG = 'convnext-base_upernet_8xb2-amp-160k_ade20k-640x640.py'
OPTIMIZER = dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
DET_PARAMWISE = dict(decay_rate=0.8, decay_type='layer_wise', num_layers=12)
SEG_PARAMWISE = dict(decay_rate=0.9, decay_type='stage_wise', num_layers=12)


def stock_config(package, name):
    path = os.path.join(os.path.dirname(package.__file__), '.mim', 'configs', 'convnext', name)
    return Config.fromfile(path, import_custom_modules=False)


def lr_and_decay(optimizer):
    """{id(param): (lr, weight_decay)}, checking that no parameter is in two groups."""
    table = {id(p): (group['lr'], group['weight_decay'])
             for group in optimizer.param_groups for p in group['params']}
    assert len(table) == sum(len(group['params']) for group in optimizer.param_groups)
    return table


def assert_same(model, ours, reference, distinct_lrs):
    ours, reference = lr_and_decay(ours), lr_and_decay(reference)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ours) == set(reference) == trainable
    names = {id(p): name for name, p in model.named_parameters()}
    mismatched = [names[key] for key in ours if ours[key] != reference[key]]
    assert not mismatched, mismatched[:10]
    assert len({lr for lr, _ in ours.values()}) == distinct_lrs


@pytest.fixture(scope='module')
def cascade_mask_rcnn_b():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = stock_config(mmdet, DET_CONFIG)
    cfg.model.backbone = dict(
        type='convnext_dense.ConvNeXt', arch='base', drop_path_rate=0.6,
        layer_scale_init_value=1.0, init_cfg=None)
    cfg.model.neck.in_channels = [128, 256, 512, 1024]
    with DefaultScope.overwrite_default_scope('mmdet'):
        return cfg, MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def upernet_b():
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = stock_config(mmseg, SEG_CONFIG)
    cfg.model.backbone.type = 'convnext_dense.ConvNeXt'
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmseg'):
        return cfg, MODELS.build(cfg.model)


def test_cascade_mask_rcnn_b_matches_mmdet(cascade_mask_rcnn_b):
    cfg, model = cascade_mask_rcnn_b
    assert type(model.backbone) is ConvNeXt and len(list(model.parameters())) > 400
    # The stock config with our constructor, on CPU (AmpOptimWrapper needs a GPU).
    optim_wrapper = cfg.optim_wrapper.copy()
    optim_wrapper.update(
        type='OptimWrapper', constructor='convnext_dense.LayerDecayOptimizerConstructor',
        optimizer=OPTIMIZER, paramwise_cfg=DET_PARAMWISE)
    with DefaultScope.overwrite_default_scope('mmdet'):
        ours = build_optim_wrapper(model, optim_wrapper).optimizer
    reference = MMDetConstructor(dict(optimizer=OPTIMIZER), DET_PARAMWISE)(model).optimizer
    assert_same(model, ours, reference, distinct_lrs=14)  # layer ids 0..13


def test_upernet_b_matches_mmseg(upernet_b):
    cfg, model = upernet_b
    assert type(model.backbone) is ConvNeXt and len(list(model.parameters())) > 300
    optim_wrapper = cfg.optim_wrapper.copy()
    optim_wrapper.pop('loss_scale')
    optim_wrapper.update(type='OptimWrapper',
                         constructor='convnext_dense.LayerDecayOptimizerConstructor')
    assert optim_wrapper.paramwise_cfg == SEG_PARAMWISE and optim_wrapper.optimizer == OPTIMIZER
    with DefaultScope.overwrite_default_scope('mmseg'):
        ours = build_optim_wrapper(model, optim_wrapper).optimizer
    reference = MMSegConstructor(dict(optimizer=OPTIMIZER), SEG_PARAMWISE)(model).optimizer
    assert_same(model, ours, reference, distinct_lrs=6)  # stems 0, stages 1..4, rest 13


class ToySegmentor(nn.Module):

    def __init__(self, frozen_stages):
        super().__init__()
        self.backbone = ConvNeXt(arch=dict(TINY_ARCH), frozen_stages=frozen_stages)
        self.decode_head = nn.Conv2d(128, 4, 1)
        self.scale = nn.Parameter(torch.ones(()))  # a 0-D parameter, as mmdet's Scale holds


@pytest.mark.parametrize('reference_cls', [MMDetConstructor, MMSegConstructor])
@pytest.mark.parametrize('decay_type', ['layer_wise', 'stage_wise'])
@pytest.mark.parametrize('frozen_stages', [0, 2, 4])
def test_tiny_matches_references_with_frozen_stages(reference_cls, decay_type, frozen_stages):
    model = ToySegmentor(frozen_stages)
    paramwise_cfg = dict(decay_rate=0.7, decay_type=decay_type, num_layers=4)
    ours = LayerDecayOptimizerConstructor(dict(optimizer=OPTIMIZER), paramwise_cfg)(model)
    reference = reference_cls(dict(optimizer=OPTIMIZER), paramwise_cfg)(model)
    # Trainable layer ids: frozen stages take their ids with them (stage_wise keeps id 0 for the
    # unfrozen downsample layers); output norms and the head always train at id 5.
    distinct = {('layer_wise', 0): 6, ('layer_wise', 2): 3, ('layer_wise', 4): 1,
                ('stage_wise', 0): 6, ('stage_wise', 2): 4, ('stage_wise', 4): 1}
    assert_same(model, ours.optimizer, reference.optimizer,
                distinct_lrs=distinct[decay_type, frozen_stages])
