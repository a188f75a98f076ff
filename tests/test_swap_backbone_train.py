"""Swapped stock detectors and segmenters, written as delta files and loaded back, build and train
one step."""
import pytest
import torch
from mmengine.config import Config

from convnext_dense.swap import plan_swap
from convnext_dense.extras.swap_survey.smoke import prepare_step, run_step
from tiny import TINY_ARCH

CONFIGS = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',          # two-stage
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',              # one-stage, FPN from level 1
    'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',  # query-based
    'mmseg::upernet/upernet_r50_4xb2-40k_cityscapes-512x1024.py',
    'mmseg::sem_fpn/fpn_r50_4xb2-80k_cityscapes-512x1024.py',
    'mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py',
    'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-40k_cityscapes-512x1024.py',
]


@pytest.mark.parametrize('name', CONFIGS)
def test_swapped_config_trains_one_step(name, tmp_path):
    out = tmp_path / 'swapped.py'
    plan_swap(name, arch=TINY_ARCH, pretrained=None).dump(str(out))
    cfg = Config.fromfile(str(out))
    if 'deformable_detr' in name:
        # Only CPU time: one encoder and decoder layer instead of six; the swap is unchanged.
        cfg.model.encoder.num_layers = cfg.model.decoder.num_layers = 1
    model, optim_wrapper, batch = prepare_step(cfg, size=(64, 64))
    assert type(model.backbone).__module__ == 'convnext_dense.model.backbone'
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    reached = set()
    for n, p in model.backbone.named_parameters():
        p.register_hook(lambda grad, n=n: reached.add(n))
    losses = run_step(model, optim_wrapper, batch, cfg.default_scope)
    assert losses['loss'] > 0
    # A gradient reaches every backbone parameter: ConvNeXt outputs only what the model reads,
    # so no output norm sits unused (DDP without find_unused_parameters would stop on one).
    assert reached == set(before)
    assert not torch.equal(model.backbone.norm3.weight, before['norm3.weight'])  # it stepped
