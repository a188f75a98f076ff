"""The fine-tuning recipe and weights a swapped config adopts."""
import pytest
from mmengine.config import Config

from tiny import TINY_ARCH
from convnext_dense import swap_backbone
from convnext_dense.runtime.config import stock_config_path
from convnext_dense.swap import plan_swap
from convnext_dense.extras.swap_survey.smoke import prepare_step

RETINANET = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
CAFFE_FASTER_RCNN = 'mmdet::faster_rcnn/faster-rcnn_r50-caffe_fpn_1x_coco.py'
DINO = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
PSPNET = 'mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py'


def _stock(name):
    return Config.fromfile(stock_config_path(name), import_custom_modules=False)


@pytest.mark.parametrize('name, decay_type, decay_rate', [
    (RETINANET, 'layer_wise', 0.8), (PSPNET, 'stage_wise', 0.9)])
def test_recipe_sets_adamw_and_layer_decay_for_the_task(name, decay_type, decay_rate):
    cfg = swap_backbone(name, arch=TINY_ARCH, pretrained=None)
    wrapper = cfg.optim_wrapper
    assert wrapper.optimizer.to_dict() == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                                               weight_decay=0.05)  # SGD momentum is gone
    assert wrapper.constructor == 'convnext_dense.LayerDecayOptimizerConstructor'
    assert wrapper.paramwise_cfg.to_dict() == dict(decay_rate=decay_rate, decay_type=decay_type)
    assert wrapper.type == _stock(name).optim_wrapper.type


def test_recipe_keeps_clipping_and_drops_old_paramwise_settings():
    stock = _stock(DINO).optim_wrapper
    assert 'custom_keys' in stock.paramwise_cfg and stock.clip_grad is not None
    wrapper = swap_backbone(DINO, arch=TINY_ARCH, pretrained=None).optim_wrapper
    assert wrapper.clip_grad.to_dict() == stock.clip_grad.to_dict()
    assert 'custom_keys' not in wrapper.paramwise_cfg


def test_recipe_scales_absolute_eta_min_to_the_new_lr():
    stock = _stock(PSPNET)
    cfg = swap_backbone(PSPNET, arch=TINY_ARCH, pretrained=None)
    old_lr = stock.optim_wrapper.optimizer.lr
    for old, new in zip(stock.param_scheduler, cfg.param_scheduler):
        assert new.eta_min == pytest.approx(old.eta_min * 1e-4 / old_lr)
        assert new.eta_min < 1e-4  # else PolyLR would hold the lr flat at 1e-4


def test_recipe_builds_decayed_param_groups():
    cfg = swap_backbone(PSPNET, arch=TINY_ARCH, pretrained=None)
    model, optim_wrapper, _ = prepare_step(cfg, size=(64, 64))
    lrs = {id(p): g['lr'] for g in optim_wrapper.optimizer.param_groups for p in g['params']}
    stem = lrs[id(model.backbone.downsample_layers[0][0].weight)]
    head = lrs[id(model.decode_head.conv_seg.weight)]
    assert head == pytest.approx(1e-4)
    assert stem < head


def test_no_recipe_keeps_the_optimizer_and_schedule():
    stock = _stock(PSPNET)
    cfg = swap_backbone(PSPNET, arch=TINY_ARCH, pretrained=None, recipe=False)
    assert cfg.optim_wrapper.to_dict() == stock.optim_wrapper.to_dict()
    assert cfg.param_scheduler == stock.param_scheduler
    assert 'optim_wrapper' not in plan_swap(PSPNET, arch=TINY_ARCH, pretrained=None,
                                            recipe=False).delta


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base', 'large', 'xlarge'])
def test_default_weights_are_the_official_22k_checkpoint(arch):
    backbone = plan_swap(RETINANET, arch=arch).delta['model']['backbone']
    assert backbone['arch'] == arch
    assert backbone['init_cfg'] == dict(
        type='Pretrained',
        checkpoint=f'https://dl.fbaipublicfiles.com/convnext/convnext_{arch}_22k_224.pth')


@pytest.mark.parametrize('pretrained', [None, 'none', 'None', 'NONE'])
def test_no_weights(pretrained):
    backbone = plan_swap(RETINANET, arch='tiny', pretrained=pretrained).delta['model']['backbone']
    assert 'init_cfg' not in backbone


def test_official_weights_keyword_in_any_case():
    backbone = plan_swap(RETINANET, arch='tiny', pretrained='22K').delta['model']['backbone']
    assert backbone['init_cfg']['checkpoint'].endswith('convnext_tiny_22k_224.pth')


def test_own_checkpoint_is_passed_through():
    backbone = plan_swap(RETINANET, arch='tiny', pretrained='work_dirs/my.pth'
                         ).delta['model']['backbone']
    assert backbone['init_cfg']['checkpoint'] == 'work_dirs/my.pth'


def test_weights_bring_their_normalization():
    stock = _stock(CAFFE_FASTER_RCNN).model.data_preprocessor
    assert stock.bgr_to_rgb is False and stock.std == [1.0, 1.0, 1.0]  # caffe-style inputs
    with_weights = swap_backbone(CAFFE_FASTER_RCNN, arch='tiny').model.data_preprocessor
    assert with_weights.mean == [123.675, 116.28, 103.53]
    assert with_weights.std == [58.395, 57.12, 57.375]
    assert with_weights.bgr_to_rgb is True
    assert with_weights.pad_size_divisor == stock.pad_size_divisor
    without = swap_backbone(CAFFE_FASTER_RCNN, arch='tiny', pretrained=None)
    assert without.model.data_preprocessor.to_dict() == stock.to_dict()


def test_mmseg_model_level_pretrained_is_cleared():
    assert _stock(PSPNET).model.pretrained is not None  # mmseg passes it to the backbone
    assert swap_backbone(PSPNET, arch=TINY_ARCH, pretrained=None).model.pretrained is None


def test_official_weights_need_a_named_arch():
    with pytest.raises(ValueError, match="pretrained='22k' needs a named arch"):
        plan_swap(RETINANET, arch=TINY_ARCH)
