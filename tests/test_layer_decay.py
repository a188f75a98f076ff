"""LayerDecayOptimizerConstructor on toy models: exact lrs, validation, custom_keys, logging.

With decay_rate 0.5 and base lr 2 ** (num_layers + 1), every parameter's lr is exactly
2 ** layer_id, so the expected lrs below are small integers written out by hand.
"""
import logging
import re
import uuid

import pytest
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from torch import nn

from convnext_dense import ConvNeXt, LayerDecayOptimizerConstructor

from tiny import TINY_ARCH

DECAYED = re.compile(r'(downsample_layers\.0\.0|downsample_layers\.[123]\.1|dwconv|pwconv[12]'
                     r'|neck|head)\.weight$')


class ToyDetector(nn.Module):
    """A tiny ConvNeXt with a neck and a head, like a detector."""

    def __init__(self, arch=TINY_ARCH, **backbone_kwargs):
        super().__init__()
        self.backbone = ConvNeXt(arch=dict(arch), **backbone_kwargs)
        self.neck = nn.Conv2d(arch['channels'][-1], 8, 1)
        self.head = nn.Linear(8, 2)


def build(model, base_lr, weight_decay=0.5, **paramwise_cfg):
    """Return {name: (lr, weight_decay)} of every parameter in the built optimizer."""
    paramwise_cfg.setdefault('decay_rate', 0.5)
    constructor = LayerDecayOptimizerConstructor(
        dict(optimizer=dict(type='AdamW', lr=base_lr, weight_decay=weight_decay)), paramwise_cfg)
    optimizer = constructor(model).optimizer
    by_id = {id(p): (group['lr'], group['weight_decay'])
             for group in optimizer.param_groups for p in group['params']}
    assert len(by_id) == sum(len(group['params']) for group in optimizer.param_groups)
    return {name: by_id[id(p)] for name, p in model.named_parameters() if id(p) in by_id}


def expected_lr(name, table):
    """First (prefix, lr) of ``table`` whose prefix starts ``name``."""
    return next(lr for prefix, lr in table if name.startswith(prefix))


LAYER_WISE_TINY = [  # depths (1, 1, 2, 1): num_layers 4, base lr 2 ** 5
    ('backbone.downsample_layers.0.', 1), ('backbone.stages.0.', 2),
    ('backbone.downsample_layers.1.', 4), ('backbone.stages.1.', 4),
    ('backbone.downsample_layers.2.', 8), ('backbone.stages.2.', 8),
    ('backbone.downsample_layers.3.', 16), ('backbone.stages.3.', 16),
    ('', 32)]
LAYER_WISE_DEEP = [  # depths (1, 1, 7, 1): num_layers 6, base lr 2 ** 7, stage 2 in threes
    ('backbone.downsample_layers.0.', 1), ('backbone.stages.0.', 2),
    ('backbone.downsample_layers.1.', 4), ('backbone.stages.1.', 4),
    ('backbone.downsample_layers.2.', 8),
    ('backbone.stages.2.0.', 8), ('backbone.stages.2.1.', 8), ('backbone.stages.2.2.', 8),
    ('backbone.stages.2.3.', 16), ('backbone.stages.2.4.', 16), ('backbone.stages.2.5.', 16),
    ('backbone.stages.2.6.', 32),
    ('backbone.downsample_layers.3.', 64), ('backbone.stages.3.', 64),
    ('', 128)]
STAGE_WISE_TINY = [  # num_layers 4, base lr 2 ** 5
    ('backbone.downsample_layers.', 1), ('backbone.stages.0.', 2), ('backbone.stages.1.', 4),
    ('backbone.stages.2.', 8), ('backbone.stages.3.', 16), ('', 32)]
DEEP_ARCH = dict(depths=(1, 1, 7, 1), channels=(8, 16, 24, 32))


@pytest.mark.parametrize('arch, decay_type, base_lr, table', [
    (TINY_ARCH, 'layer_wise', 2.**5, LAYER_WISE_TINY),
    (DEEP_ARCH, 'layer_wise', 2.**7, LAYER_WISE_DEEP),
    (TINY_ARCH, 'stage_wise', 2.**5, STAGE_WISE_TINY),
])
def test_exact_lrs_and_weight_decay(arch, decay_type, base_lr, table):
    model = ToyDetector(arch)
    got = build(model, base_lr, decay_type=decay_type)
    assert set(got) == {name for name, _ in model.named_parameters()}
    for name, (lr, weight_decay) in got.items():
        assert lr == expected_lr(name, table), name
        assert weight_decay == (0.5 if DECAYED.search(name) else 0.), name


def test_stage_wise_num_layers_only_moves_the_head_gap():
    got = build(ToyDetector(), 2.**10, decay_type='stage_wise', num_layers=9)
    assert got['backbone.stages.3.0.pwconv1.weight'][0] == 16
    assert got['backbone.downsample_layers.1.1.weight'][0] == 1
    assert got['head.weight'][0] == 2**10


@pytest.mark.parametrize('arch, num_layers', [('tiny', 6), ('small', 12), ('base', 12),
                                              (TINY_ARCH, 4), (DEEP_ARCH, 6)])
def test_derived_num_layers(arch, num_layers):
    backbone = ConvNeXt(arch=arch if isinstance(arch, str) else dict(arch))
    assert backbone.layer_decay_num_layers() == num_layers


def test_bare_backbone_derives_num_layers():
    backbone = ConvNeXt(arch='tiny')  # 9-block third stage: num_layers 6
    got = build(backbone, 2.**7)
    assert got['stages.3.0.pwconv1.weight'][0] == 64  # id num_layers
    assert got['stages.2.8.pwconv1.weight'][0] == 32  # 3 + 8 // 3 = 5
    assert got['norm3.weight'] == (128, 0.)  # output norms: num_layers + 1


def test_custom_keys_multiply_the_decayed_values():
    got = build(ToyDetector(), 2.**5, custom_keys={
        'head': dict(lr_mult=10.), 'neck': dict(decay_mult=0.),
        'backbone': dict(lr_mult=2.), 'backbone.stages.1': dict(lr_mult=3., decay_mult=4.)})
    assert got['head.weight'] == (320., 0.5)
    assert got['head.bias'] == (320., 0.)
    assert got['neck.weight'] == (32., 0.)
    # The longest matching key wins: stages.1 gets 3x, the rest of the backbone 2x.
    assert got['backbone.stages.1.0.pwconv1.weight'] == (12., 2.)
    assert got['backbone.stages.1.0.gamma'] == (12., 0.)  # 1-D: no weight decay
    assert got['backbone.downsample_layers.1.1.weight'] == (8., 0.5)
    assert got['backbone.stages.3.0.dwconv.weight'] == (32., 0.5)


@pytest.mark.parametrize('custom_keys, unmatched', [
    ({'backbone.nope': dict(lr_mult=0.1)}, "['backbone.nope']"),
    ({'head': dict(lr_mult=2.), 'neck.wieght': dict(lr_mult=0.)}, "['neck.wieght']"),
])
def test_custom_key_matching_no_parameter_is_refused(custom_keys, unmatched):
    with pytest.raises(ValueError) as info:
        build(ToyDetector(), 1., custom_keys=custom_keys)
    message = str(info.value)
    assert f'custom_keys {unmatched} match no parameter of ToyDetector' in message
    assert "'backbone.downsample_layers.0.0.weight', 'head.weight', 'neck.weight'" in message


def test_custom_key_matching_only_frozen_parameters_is_accepted():
    got = build(ToyDetector(frozen_stages=1), 1., custom_keys={'stages.0.': dict(lr_mult=0.)})
    assert not any(name.startswith('backbone.stages.0.') for name in got)


def test_frozen_parameters_are_left_out():
    model = ToyDetector(frozen_stages=2)
    got = build(model, 2.**5)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(re.match(r'backbone\.(downsample_layers|stages)\.[01]\.', n)
                          for n in frozen)
    assert set(got) == {name for name, _ in model.named_parameters()} - frozen


def test_groups_are_per_layer_and_decay():
    model = ToyDetector()
    constructor = LayerDecayOptimizerConstructor(
        dict(optimizer=dict(type='SGD', lr=1., weight_decay=0.1)), dict(decay_rate=0.5))
    groups = constructor(model).optimizer.param_groups
    keys = [(group['layer_id'], group['weight_decay'] > 0) for group in groups]
    assert len(keys) == len(set(keys)) == 6 * 2  # ids 0..5, each with weights and 1-D params
    assert sum(len(group['params']) for group in groups) == len(list(model.parameters()))


class _TinySegmenter(BaseModel):
    def __init__(self):
        super().__init__()
        self.backbone = ConvNeXt(arch=dict(depths=(1, 1, 1, 1), channels=(4, 8, 8, 8)))

    def forward(self, x, mode='loss'):
        return dict(loss=sum(f.pow(2).mean() for f in self.backbone(x)))


def test_a_compiled_train_step_runs_with_the_groups():
    """``compile=True`` in a config (mmengine compiles ``train_step``) failed at the first step:
    built from a config, the groups were ConfigDicts, which torch.compile cannot trace."""
    import torch
    from mmengine.config import ConfigDict
    from mmengine.optim import LinearLR
    losses = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = _TinySegmenter()
        wrapper = build_optim_wrapper(model, ConfigDict(
            type='OptimWrapper', constructor='convnext_dense.LayerDecayOptimizerConstructor',
            paramwise_cfg=dict(decay_rate=0.5),
            optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05)))
        assert all(type(group) is dict for group in wrapper.optimizer.param_groups)
        LinearLR(wrapper, start_factor=0.1, by_epoch=False, begin=0, end=5)
        # dynamo's tracing is what failed; the 'eager' backend keeps it without inductor's build
        step = torch.compile(model.train_step, backend='eager') if compiled else model.train_step
        x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        losses.append([float(step(dict(x=x), wrapper)['loss']) for _ in range(3)])
    assert losses[0][2] != losses[0][0]  # the steps changed the weights
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


class NoMapBackbone(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)


@pytest.mark.parametrize('model, match', [
    (nn.Sequential(nn.Linear(2, 2)), 'Sequential has no backbone and no layer map'),
    (type('Detector', (nn.Module,), {})(), 'Detector has no backbone'),
])
def test_model_without_backbone_is_refused(model, match):
    if not list(model.parameters()):
        model.head = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=match):
        build(model, 1.)


def test_backbone_without_layer_map_is_refused():
    model = ToyDetector()
    model.backbone = NoMapBackbone()
    with pytest.raises(TypeError, match=r'backbone NoMapBackbone has no layer map.*layer_decay_id'):
        build(model, 1.)


@pytest.mark.parametrize('paramwise_cfg, match', [
    (dict(decay_rate=0.), r'decay_rate 0\.0 is out of range \(0, 1\]'),
    (dict(decay_rate=1.5), r'decay_rate 1\.5 is out of range \(0, 1\]'),
    (dict(decay_rate=-0.1), r'decay_rate -0\.1 is out of range'),
    (dict(decay_rate='0.8'), r"decay_rate '0\.8' \(str\) must be a Python int or float"),
    (dict(decay_rate=True), r'decay_rate True \(bool\) must be a Python int or float'),
    (dict(decay_rate=float('nan')), r'decay_rate nan is out of range'),
    (dict(), r"needs 'decay_rate'"),
    (dict(decay_rate=0.8, decay_type='layerwise'),
     r"decay_type 'layerwise' is not one of \('layer_wise', 'stage_wise'\)"),
    (dict(decay_rate=0.8, bias_lr_mult=2.),
     r"key 'bias_lr_mult' is not supported.*allowed keys: \('decay_rate', 'decay_type', "
     r"'num_layers', 'custom_keys'\)"),
    (dict(decay_rate=0.8, num_layers=0), r'num_layers 0 \(int\) must be a positive Python int'),
    (dict(decay_rate=0.8, num_layers=12.0),
     r'num_layers 12\.0 \(float\) must be a positive Python int'),
    (dict(decay_rate=0.8, custom_keys={'head': dict(momentum=0.5)}),
     r"custom_keys\['head'\] field 'momentum' is not supported; allowed fields: "
     r"\('lr_mult', 'decay_mult'\)"),
    (dict(decay_rate=0.8, custom_keys={'head': dict(lr_mult=-1)}),
     r"custom_keys\['head'\] lr_mult -1 must be a finite number >= 0"),
    (dict(decay_rate=0.8, custom_keys={'neck': dict(lr_mult=float('nan'))}),
     r"custom_keys\['neck'\] lr_mult nan must be a finite number >= 0"),
    (dict(decay_rate=0.8, custom_keys={'neck': dict(decay_mult=float('inf'))}),
     r"custom_keys\['neck'\] decay_mult inf must be a finite number >= 0"),
])
def test_paramwise_cfg_is_validated_on_construction(paramwise_cfg, match):
    with pytest.raises(ValueError, match=match):
        LayerDecayOptimizerConstructor(
            dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)), paramwise_cfg)


@pytest.mark.parametrize('paramwise_cfg, error', [
    (None, ValueError), (dict(decay_rate=0.8, custom_keys=['head']), TypeError),
    (dict(decay_rate=0.8, custom_keys={'head': 2.}), TypeError)])
def test_paramwise_cfg_types(paramwise_cfg, error):
    with pytest.raises(error, match='decay_rate|custom_keys'):
        LayerDecayOptimizerConstructor(dict(optimizer=dict(type='AdamW', lr=1e-4)), paramwise_cfg)


@pytest.mark.parametrize('optimizer, match', [
    (dict(lr='1e-4'), r"optimizer lr '1e-4' must be a number >= 0 \(got str\)"),
    (dict(lr=-1.), r'optimizer lr -1\.0 must be a number >= 0'),
    (dict(lr=1e-4, weight_decay='0.05'), r"optimizer weight_decay '0\.05' must be a number"),
])
def test_optimizer_lr_and_weight_decay_must_be_numbers(optimizer, match):
    with pytest.raises(ValueError, match=match):
        LayerDecayOptimizerConstructor(dict(optimizer=dict(type='AdamW', **optimizer)),
                                       dict(decay_rate=0.8))


def test_optimizer_lr_and_weight_decay_requirements():
    with pytest.raises(ValueError, match='optimizer lr must be set'):
        LayerDecayOptimizerConstructor(dict(optimizer=dict(type='AdamW')), dict(decay_rate=0.8))
    with pytest.raises(ValueError, match=r"custom_keys\['head'\] sets decay_mult"):
        LayerDecayOptimizerConstructor(
            dict(optimizer=dict(type='AdamW', lr=1.)),
            dict(decay_rate=0.8, custom_keys={'head': dict(decay_mult=2)}))


def test_without_weight_decay_the_optimizer_default_applies_to_weights():
    constructor = LayerDecayOptimizerConstructor(dict(optimizer=dict(type='AdamW', lr=1.)),
                                                 dict(decay_rate=0.5))
    groups = constructor(ToyDetector()).optimizer.param_groups
    assert {group['weight_decay'] for group in groups} == {0., 0.01}  # AdamW's default


@pytest.mark.parametrize('decay_type, num_layers, match', [
    ('layer_wise', 5, r'num_layers 5 does not fit ConvNeXt: its layer_wise map has num_layers 4'),
    ('layer_wise', 3, r'num_layers 3 does not fit ConvNeXt'),
    ('stage_wise', 3, r'num_layers 3 is too small for ConvNeXt: stage_wise needs at least 4'),
])
def test_inconsistent_num_layers(decay_type, num_layers, match):
    with pytest.raises(ValueError, match=match):
        build(ToyDetector(), 1., decay_type=decay_type, num_layers=num_layers)


def test_consistent_num_layers_accepted():
    assert build(ToyDetector(), 2.**5, num_layers=4) == build(ToyDetector(), 2.**5)
    build(ToyDetector(), 1., decay_type='stage_wise', num_layers=4)


def test_layer_id_out_of_range_from_a_backbone_is_refused():

    class BadMap(NoMapBackbone):

        def layer_decay_num_layers(self):
            return 2

        def layer_decay_id(self, name, decay_type, num_layers):
            return 7

    model = ToyDetector()
    model.backbone = BadMap()
    with pytest.raises(ValueError, match=r'BadMap.layer_decay_id gave backbone.conv.weight layer '
                                         r'id 7, not an int in 0\.\.3'):
        build(model, 1.)


def test_any_backbone_with_a_layer_map_works():

    class TwoLayer(NoMapBackbone):

        def __init__(self):
            super().__init__()
            self.deep = nn.Linear(4, 4)

        def layer_decay_num_layers(self):
            return 2

        def layer_decay_id(self, name, decay_type, num_layers):
            return 1 if name.startswith('conv') else 2

    model = ToyDetector()
    model.backbone = TwoLayer()
    got = build(model, 8.)  # scale 0.5 ** (3 - id)
    assert got['backbone.conv.weight'] == (2., 0.5)
    assert got['backbone.deep.bias'] == (4., 0.)
    assert got['head.weight'] == (8., 0.5)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', None])
def test_registered_for_configs(scope):
    cfg = dict(type='OptimWrapper', constructor='convnext_dense.LayerDecayOptimizerConstructor',
               paramwise_cfg=dict(decay_rate=0.5, decay_type='layer_wise', num_layers=4),
               optimizer=dict(type='AdamW', lr=32., weight_decay=0.05))
    if scope is None:
        wrapper = build_optim_wrapper(ToyDetector(), cfg)
    else:
        with DefaultScope.overwrite_default_scope(scope):
            wrapper = build_optim_wrapper(ToyDetector(), cfg)
    assert sorted({group['lr'] for group in wrapper.optimizer.param_groups}) == [1, 2, 4, 8, 16, 32]


class _Records(logging.Handler):

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_one_info_table_and_per_parameter_debug():
    logger = MMLogger.get_instance(f'layer_decay_{uuid.uuid4().hex}', log_level='INFO')
    handler = _Records()
    logger.addHandler(handler)
    try:
        model = ToyDetector(frozen_stages=1)
        build(model, 2.**5)
    finally:
        logger.removeHandler(handler)
    ours = [r for r in handler.records if r.module == 'layer_decay']
    info = [r.getMessage() for r in ours if r.levelno == logging.INFO]
    debug = [r.getMessage() for r in ours if r.levelno == logging.DEBUG]
    assert len(info) + len(debug) == len(ours)
    params = list(model.named_parameters())
    trainable = [p for _, p in params if p.requires_grad]
    assert len(info) == 1
    assert len(debug) == len(params)
    assert any('backbone.stages.2.1.pwconv2.weight layer id 3, lr 8' in line for line in debug)
    header, columns, *rows = info[0].splitlines()
    assert 'layer_wise' in header and 'num_layers 4' in header
    assert f'{len(params) - len(trainable)} frozen left out' in header
    assert columns.split()[:5] == ['layer', 'lr', 'scale', 'weight', 'decay']
    table = [row.split() for row in rows]
    # Frozen stem and stage 0 leave ids 0 and 1 out; ids 2..5 with and without decay remain.
    assert [(int(r[0]), float(r[1]), float(r[2])) for r in table] == [
        (layer, 0.5**(5 - layer), wd) for layer in (2, 3, 4, 5) for wd in (0.5, 0.)]
    assert sum(int(r[3]) for r in table) == len(trainable)
    assert sum(int(r[4]) for r in table) == sum(p.numel() for p in trainable)
