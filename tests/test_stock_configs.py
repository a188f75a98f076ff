"""mmdet's and mmseg's own ConvNeXt configs run with only the backbone type and imports changed."""
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from convnext_dense.runtime.config import stock_config_path
from convnext_dense.extras.swap_survey.smoke import detection_batch, segmentation_batch

STOCK_CONFIGS = {
    'mmdet': 'mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py',
    'mmseg': 'mmseg::convnext/convnext-base_upernet_8xb2-amp-160k_ade20k-640x640.py',
}


def _load_with_our_backbone(name: str) -> Config:
    cfg = Config.fromfile(stock_config_path(name), import_custom_modules=False)
    cfg.custom_imports = dict(imports=['convnext_dense'], allow_failed_imports=False)
    cfg.model.backbone.type = 'convnext_dense.ConvNeXt'
    return cfg


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_registry_builds_scoped_type(scope, tiny_arch):
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    backbone = registry.build(dict(type='convnext_dense.ConvNeXt', arch=tiny_arch))
    assert type(backbone).__module__ == 'convnext_dense.model.backbone'
    assert len(backbone(torch.rand(1, 3, 64, 64))) == 4


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_stock_config_trains_one_step(scope):
    cfg = _load_with_our_backbone(STOCK_CONFIGS[scope])
    cfg.model.backbone.init_cfg = None  # the stock weights cannot be downloaded here
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    model = registry.build(cfg.model)
    model.init_weights()
    assert type(model.backbone).__name__ == 'ConvNeXt'
    # Their own LearningRateDecayOptimizerConstructor must recognise our backbone.
    optim_cfg = cfg.optim_wrapper.copy()
    optim_cfg.type = 'OptimWrapper'  # AMP needs a GPU; the step itself is what is tested here
    optim_cfg.pop('loss_scale', None)
    optim_wrapper = build_optim_wrapper(model, optim_cfg)
    batch = detection_batch(80, (128, 160)) if scope == 'mmdet' else segmentation_batch(
        150, (128, 128))
    before = model.backbone.stages[0][0].pwconv1.weight.detach().clone()
    model.train()
    losses = model.train_step(batch, optim_wrapper)
    assert all(torch.isfinite(value).all() for value in losses.values())
    assert not torch.equal(before, model.backbone.stages[0][0].pwconv1.weight)
