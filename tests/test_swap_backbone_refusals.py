"""Models swap_backbone cannot map are refused with the field that stops them."""
import pytest
from mmengine.config import Config

from tiny import TINY_ARCH
from convnext_dense.runtime.config import stock_config_path
from convnext_dense.swap import SwapRefused, plan_swap

FASTER_RCNN = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'


def _stock(name):
    return Config.fromfile(stock_config_path(name), import_custom_modules=False)


def _refusal(cfg):
    with pytest.raises(SwapRefused) as info:
        plan_swap(cfg, arch=TINY_ARCH, pretrained=None)
    return info.value


@pytest.mark.parametrize('name, field', [
    # RFP feeds its features back into a DetectoRS ResNet it builds itself.
    ('mmdet::detectors/detectors_htc-r50_1x_coco.py', 'model.neck.rfp_backbone'),
    # C4 / DC5 read the backbone in the RoI head, with a ResNet stage as shared head.
    ('mmdet::faster_rcnn/faster-rcnn_r50-caffe_c4-1x_coco.py',
     'model.roi_head.bbox_roi_extractor.out_channels'),
    ('mmdet::faster_rcnn/faster-rcnn_r50-caffe-dc5_1x_coco.py',
     'model.roi_head.bbox_roi_extractor.out_channels'),
    # K-Net's kernel generator (an UPerHead inside the decode head) reads the Swin pyramid.
    ('mmseg::knet/knet-s3_swin-t_upernet_8xb2-adamw-80k_ade20k-512x512.py',
     'model.decode_head.kernel_generate_head.in_channels'),
    # Fast-SCNN's and BiSeNetV1's out_indices (0, 1, 2) are not stages: their maps have strides
    # 8, 32, 8 and 8, 8, 16.
    ('mmseg::fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py', 'model.backbone.out_indices'),
    ('mmseg::bisenetv1/bisenetv1_r18-d32_4xb4-160k_cityscapes-1024x1024.py',
     'model.backbone.out_indices'),
    # More maps in training than in evaluation, for the heads' training losses.
    ('mmseg::pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py', 'model.backbone'),
    ('mmseg::ddrnet/ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py', 'model.backbone'),
])
def test_backbone_specific_models_are_refused(name, field):
    error = _refusal(name)
    assert error.field == field
    assert str(error).startswith(field)


def test_wrapped_detector_is_refused_naming_where_its_backbone_is():
    error = _refusal('mmdet::qdtrack/qdtrack_faster-rcnn_r50_fpn_8xb2-4e_mot17halftrain_'
                     'test-mot17halfval.py')
    assert error.field == 'model.backbone'
    assert 'model.detector.backbone' in str(error)


def test_dilated_detection_backbone_is_refused():
    cfg = _stock(FASTER_RCNN)
    cfg.model.backbone.update(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2))
    error = _refusal(Config(cfg.to_dict()))
    assert error.field == 'model.backbone'
    assert 'stride 16' in str(error) and 'stride 32' in str(error)


def test_neck_channels_that_do_not_match_the_backbone_are_refused():
    cfg = _stock(FASTER_RCNN)
    cfg.model.neck.in_channels = [256, 512, 1024, 1024]
    error = _refusal(Config(cfg.to_dict()))
    assert error.field == 'model.neck.in_channels'
    assert '[256, 512, 1024, 2048]' in str(error)


def test_single_input_head_that_does_not_read_the_last_output_is_refused():
    cfg = _stock('mmdet::rpn/rpn_r50-caffe-c4_1x_coco.py')
    cfg.model.backbone.update(num_stages=4, out_indices=(2, 3), strides=(1, 2, 2, 2),
                              dilations=(1, 1, 1, 1))
    error = _refusal(Config(cfg.to_dict()))
    assert error.field == 'model.rpn_head.in_channels'


def test_backbone_that_cannot_be_built_is_refused():
    cfg = _stock(FASTER_RCNN)
    cfg.model.backbone = dict(type='NoSuchBackbone')
    error = _refusal(Config(cfg.to_dict()))
    assert error.field == 'model.backbone.type'
    assert 'NoSuchBackbone' in str(error)


def test_other_scopes_are_refused():
    cfg = _stock(FASTER_RCNN)
    cfg.default_scope = 'mmpretrain'
    assert _refusal(Config(cfg.to_dict())).field == 'default_scope'


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(arch='huge'), ValueError, "arch 'huge'"),
    (dict(arch=TINY_ARCH, recipe='yes'), TypeError, 'recipe'),
    (dict(arch=TINY_ARCH, pretrained=3), TypeError, 'pretrained'),
    (dict(arch='tiny', pretrained='1k'), ValueError, "pretrained='1k' is neither"),
    (dict(arch='tiny', pretrained=''), ValueError, "pretrained='' is neither"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        plan_swap(FASTER_RCNN, **kwargs)


def test_bad_source_type():
    with pytest.raises(TypeError, match='cfg must be'):
        plan_swap(42, arch=TINY_ARCH, pretrained=None)
