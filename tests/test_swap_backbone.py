"""swap_backbone on stock mmdet / mmseg configs: stages kept, channels rewritten, delta files."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from tiny import TINY_ARCH
from convnext_dense import swap_backbone
from convnext_dense.runtime.config import stock_config_path
from convnext_dense.swap import plan_swap
from convnext_dense.swap.errors import SwapRefused
from convnext_dense.runtime.config import task_registry

FASTER_RCNN = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
RETINANET = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
DINO = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
UPERNET = 'mmseg::upernet/upernet_r50_4xb2-40k_cityscapes-512x1024.py'
PSPNET = 'mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py'
DEEPLABV3PLUS = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-40k_cityscapes-512x1024.py'
SEM_FPN = 'mmseg::sem_fpn/fpn_r50_4xb2-80k_cityscapes-512x1024.py'
CHANNELS = TINY_ARCH['channels']


def _stock(name):
    return Config.fromfile(stock_config_path(name), import_custom_modules=False)


def _unscoped(value):
    """Without the ``_scope_`` keys mmengine adds to dicts inherited from ``mmdet::`` files."""
    if isinstance(value, dict):
        return {k: _unscoped(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, (list, tuple)):
        return type(value)(_unscoped(v) for v in value)
    return value


def _build(cfg):
    scope = cfg.default_scope
    with DefaultScope.overwrite_default_scope(scope):
        return task_registry(scope).build(cfg.model)


# The stages each model reads, as the issue states them: Faster R-CNN's FPN all four, RetinaNet's
# FPN from level 1, DINO's ChannelMapper three levels, UperNet all four, PSPNet the last (and its
# auxiliary head stage 2), DeepLabV3+ the last plus the low-level stage 0 (auxiliary: stage 2).
@pytest.mark.parametrize('name, stages', [
    (FASTER_RCNN, (0, 1, 2, 3)), (RETINANET, (1, 2, 3)), (DINO, (1, 2, 3)),
    (UPERNET, (0, 1, 2, 3)), (PSPNET, (2, 3)), (DEEPLABV3PLUS, (0, 2, 3)), (SEM_FPN, (0, 1, 2, 3)),
])
def test_keeps_the_stages_the_model_reads(name, stages):
    stock_backbone = _stock(name).model.backbone
    cfg = swap_backbone(name, arch=TINY_ARCH, pretrained=None)
    assert cfg.model.backbone.type == 'convnext_dense.ConvNeXt'
    assert cfg.model.backbone.out_indices == stages
    assert set(stages) <= set(stock_backbone.get('out_indices', (0, 1, 2, 3)))
    assert {'convnext_dense', 'convnext_dense.model_checkpoints'} <= set(cfg.custom_imports.imports)
    assert cfg.custom_imports.allow_failed_imports is False


def _feature_channels(model):
    with torch.no_grad():
        return [f.shape[1] for f in model.backbone(torch.rand(1, 3, 64, 64))]


@pytest.mark.parametrize('name', [FASTER_RCNN, RETINANET])
def test_fpn_expects_what_convnext_outputs(name):
    model = _build(swap_backbone(name, arch=TINY_ARCH, pretrained=None))
    assert [conv.conv.in_channels for conv in model.neck.lateral_convs] == \
        _feature_channels(model)


def test_out_indices_that_count_layers_are_read_as_strides():
    # EfficientNet's out_indices (3, 4, 5) number its own blocks; its outputs have strides
    # 8, 16, 32: ConvNeXt stages 1, 2, 3.
    name = 'mmdet::efficientnet/retinanet_effb3_fpn_8xb4-crop896-1x_coco.py'
    assert tuple(_stock(name).model.backbone.out_indices) == (3, 4, 5)
    cfg = swap_backbone(name, arch=TINY_ARCH, pretrained=None)
    assert cfg.model.backbone.out_indices == (1, 2, 3)
    model = _build(cfg)
    assert [conv.conv.in_channels for conv in model.neck.lateral_convs] == \
        _feature_channels(model) == list(CHANNELS[1:])
    # Segmenter reads the last of ViT-B's 12 blocks, at stride 16: ConvNeXt stage 2.
    cfg = swap_backbone('mmseg::segmenter/segmenter_vit-b_mask_8xb1-160k_ade20k-512x512.py',
                        arch=TINY_ARCH, pretrained=None)
    assert cfg.model.backbone.out_indices == (2,)
    assert cfg.model.decode_head.in_channels == CHANNELS[2]


def test_channel_mapper_expects_what_convnext_outputs():
    model = _build(swap_backbone(DINO, arch=TINY_ARCH, pretrained=None))
    assert [conv.conv.in_channels for conv in model.neck.convs] == _feature_channels(model)


@pytest.mark.parametrize('name', [UPERNET, PSPNET, DEEPLABV3PLUS])
def test_heads_expect_what_convnext_outputs(name):
    model = _build(swap_backbone(name, arch=TINY_ARCH, pretrained=None))
    channels = _feature_channels(model)
    for head in (model.decode_head, model.auxiliary_head):
        index = head.in_index
        expected = [channels[i] for i in index] if isinstance(index, (list, tuple)) \
            else channels[index]
        assert head.in_channels == expected
    if name == DEEPLABV3PLUS:  # its c1 branch reads output 0 directly
        assert model.decode_head.c1_bottleneck.conv.in_channels == channels[0] == CHANNELS[0]


def test_retinanet_fpn_keeps_its_levels():
    stock = _stock(RETINANET).model.neck
    cfg = swap_backbone(RETINANET, arch=TINY_ARCH, pretrained=None)
    # FPN read C3..C5 of four inputs; now it gets exactly those three, from level 0.
    assert stock.start_level == 1 and len(stock.in_channels) == 4
    assert cfg.model.neck.in_channels == list(CHANNELS[1:])
    assert cfg.model.neck.start_level == 0
    assert cfg.model.neck.num_outs == stock.num_outs
    assert cfg.model.neck.add_extra_convs == stock.add_extra_convs


def test_delta_file_inherits_from_the_stock_config(tmp_path):
    plan = plan_swap(FASTER_RCNN, arch=TINY_ARCH, pretrained=None)
    out = tmp_path / 'faster-rcnn_convnext.py'
    plan.dump(str(out))
    text = out.read_text()
    assert f"_base_ = '{FASTER_RCNN}'" in text
    assert '_delete_=True' in text
    # A delta, not a dump: nothing about data, schedules or the heads.
    for absent in ('train_dataloader', 'rpn_head', 'roi_head', 'param_scheduler', 'SGD'):
        assert absent not in text
    assert len(text.splitlines()) < 30
    reloaded = Config.fromfile(str(out))
    merged = plan.apply()
    for key in ('model', 'optim_wrapper', 'custom_imports', 'train_dataloader'):
        assert _unscoped(reloaded[key].to_dict()) == _unscoped(merged[key].to_dict())
    # The stock backbone's own arguments are gone, not merged into ConvNeXt's.
    assert 'depth' not in reloaded.model.backbone and 'norm_eval' not in reloaded.model.backbone


def test_a_single_custom_import_is_kept_whole(tmp_path):
    # mask2former's configs import 'mmdet.models' as a string, not a list.
    name = 'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'
    out = tmp_path / 'mask2former_convnext.py'
    plan_swap(name, arch=TINY_ARCH, pretrained=None).dump(str(out))
    imports = Config.fromfile(str(out)).custom_imports.imports
    assert imports == ['mmdet.models', 'convnext_dense', 'convnext_dense.model_checkpoints']


OCRNET = 'mmseg::ocrnet/ocrnet_r101-d8_4xb2-40k_cityscapes-512x1024.py'


def test_cascade_heads_that_need_one_stride_are_refused_by_name():
    # OCRHead gathers context from the FCN head's output (stage 2) position by position over its
    # own input (stage 3): one stride in the dilated ResNet, 16 and 32 in ConvNeXt.
    with pytest.raises(SwapRefused, match=r"model.decode_head\[1\]: fails on ConvNeXt features: "
                                          r".*strides \[8\] in the old backbone and have "
                                          r"\[16, 32\] in ConvNeXt"):
        plan_swap(OCRNET, arch=TINY_ARCH, pretrained=None)
    cfg = Config.fromfile(stock_config_path(OCRNET))
    cfg.model.decode_head[0].update(in_index=3, in_channels=2048)  # both heads on one stage
    swapped = plan_swap(cfg, arch=TINY_ARCH, pretrained=None).apply()
    assert [h.in_index for h in swapped.model.decode_head] == [0, 0]
    assert swapped.model.backbone.out_indices == (3,)


def test_delta_file_of_a_config_path_names_it_relatively(tmp_path):
    (tmp_path / 'configs').mkdir()
    source = tmp_path / 'configs' / 'my_retinanet.py'
    source.write_text(f"_base_ = '{RETINANET}'\nmodel = dict(bbox_head=dict(num_classes=3))\n")
    out = tmp_path / 'swapped' / 'my_retinanet_convnext.py'
    plan = plan_swap(str(source), arch=TINY_ARCH, pretrained=None)
    plan.dump(str(out))
    assert "_base_ = '../configs/my_retinanet.py'" in out.read_text()
    reloaded = Config.fromfile(str(out))
    assert reloaded.model.bbox_head.num_classes == 3
    assert _unscoped(reloaded.model.to_dict()) == _unscoped(plan.apply().model.to_dict())


def test_installed_config_path_is_written_as_its_package_name(tmp_path):
    plan = plan_swap(stock_config_path(RETINANET), arch=TINY_ARCH, pretrained=None)
    assert f"_base_ = '{RETINANET}'" in plan.to_text(str(tmp_path / 'x.py'))


def test_in_memory_config_without_file_applies_but_cannot_be_written():
    cfg = _stock(RETINANET)
    plan = plan_swap(Config(cfg.to_dict()), arch=TINY_ARCH, pretrained=None)
    assert plan.apply().model.backbone.out_indices == (1, 2, 3)
    with pytest.raises(ValueError, match='_base_'):
        plan.to_text()


def test_list_valued_heads_are_written_whole(tmp_path):
    # OCRNet-style cascades keep decode_head as a list: a delta must repeat the whole list.
    cfg = _stock(PSPNET)
    cfg.model.decode_head = [dict(cfg.model.auxiliary_head), dict(cfg.model.decode_head)]
    cfg.model.type = 'CascadeEncoderDecoder'
    cfg.model.num_stages = 2
    plan = plan_swap(Config(cfg.to_dict()), arch=TINY_ARCH, pretrained=None)
    heads = plan.delta['model']['decode_head']
    assert [h['in_channels'] for h in heads] == [CHANNELS[2], CHANNELS[3]]
    assert [h['in_index'] for h in heads] == [0, 1]
    assert [h['type'] for h in heads] == ['FCNHead', 'PSPHead']


def test_backbone_maps_a_neck_passes_through_are_rewritten_for_their_heads():
    # FastFCN's JPU returns backbone stages 1 and 2 beside its own output; the auxiliary head
    # reads stage 2 through it, so its in_channels follow the backbone, not the neck.
    name = 'mmseg::fastfcn/fastfcn_r50-d32_jpu_psp_4xb4-80k_ade20k-512x512.py'
    cfg = swap_backbone(name, arch=TINY_ARCH, pretrained=None)
    assert cfg.model.auxiliary_head.in_channels == CHANNELS[2]
    model = _build(cfg).eval()
    with torch.no_grad():
        outputs = model.neck(model.backbone(torch.rand(1, 3, 64, 64)))
    for head in (model.decode_head, model.auxiliary_head):
        assert outputs[head.in_index].shape[1] == head.in_channels


def test_single_input_neck_reads_the_last_stage(capfd):
    # CenterNet's ResNet-18 returns four stages; CTResNetNeck (int in_channels=512) reads x[-1].
    name = 'mmdet::centernet/centernet_r18-dcnv2_8xb16-crop512-140e_coco.py'
    assert _stock(name).model.neck.in_channels == 512
    cfg = swap_backbone(name, arch=TINY_ARCH, pretrained=None)
    assert cfg.model.backbone.out_indices == (3,)
    assert cfg.model.neck.in_channels == CHANNELS[3]
    # Its modulated deformable conv has no meta kernel: the neck probe fell back to CPU
    # instead of warning that it could not look (mmengine logs to the original stdout).
    assert 'could not run model.neck' not in ''.join(capfd.readouterr())


def test_neck_that_indexes_inputs_by_position_keeps_every_stage():
    # NASFCOS_FPN starts at level 1 but reads inputs[1..3] by absolute position: with three
    # inputs it fails, which running the rewritten neck shows; so all four stages stay.
    name = 'mmdet::nas_fcos/nas-fcos_r50-caffe_fpn_nashead-gn-head_4xb4-1x_coco.py'
    plan = plan_swap(name, arch=TINY_ARCH, pretrained=None)
    cfg = plan.apply()
    assert cfg.model.backbone.out_indices == (0, 1, 2, 3)
    assert cfg.model.neck.in_channels == list(CHANNELS)
    assert cfg.model.neck.start_level == 1
    assert plan.delta['find_unused_parameters'] is True  # norm0's output is never read
    model = _build(cfg).eval()
    with torch.no_grad():
        assert len(model.neck(model.backbone(torch.rand(1, 3, 128, 128)))) == 5
