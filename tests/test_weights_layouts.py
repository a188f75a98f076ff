"""Every checkpoint layout reproduces Hugging Face's ConvNeXt stage outputs after loading."""
import io
import logging
import types

import pytest
import torch
from safetensors.torch import save_file

from convnext_dense import ConvNeXt
from convnext_dense.weights import convert_with_report, load_pretrained, load_state_file
from weights_reference import (ARCH, build_hf_classifier, channel_layer_norm, dense_norms,
                               detector_from_hf, hf_stage_outputs, mmpretrain_cls_from_hf,
                               mmpretrain_dense_from_hf, official_from_hf, save_hf_dirs,
                               timm_from_hf)

TOLERANCE = 1e-5
MAX_ABS_DIFF = {}  # layout -> measured max |ours - HF|, printed at the end of the module


@pytest.fixture(scope='module')
def ref(tmp_path_factory):
    model = build_hf_classifier()
    root = tmp_path_factory.mktemp('layouts')
    hf = {k: v.detach().clone() for k, v in model.state_dict().items()}
    norms = dense_norms()
    files = {k: str(v) for k, v in save_hf_dirs(model, root).items()}
    files['official'] = str(root / 'convnext_official.pth')
    torch.save({'model': official_from_hf(hf), 'epoch': 90}, files['official'])
    files['timm'] = str(root / 'timm_convnext.safetensors')
    save_file(timm_from_hf(hf), files['timm'])
    files['mmpretrain_cls'] = str(root / 'mmpretrain_cls.pth')
    torch.save({'state_dict': mmpretrain_cls_from_hf(hf), 'meta': {'epoch': 300}},
               files['mmpretrain_cls'])
    files['mmpretrain_dense'] = str(root / 'mmpretrain_dense.pth')
    torch.save({'state_dict': mmpretrain_dense_from_hf(hf, norms)}, files['mmpretrain_dense'])
    files['detector'] = str(root / 'detector_epoch_1.pth')
    torch.save(detector_from_hf(hf, norms), files['detector'])
    files['hf_backbone'] = str(root / 'hf_backbone')
    hf_backbone = _save_hf_backbone(files['hf_safetensors'], files['hf_backbone'], norms)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        hf_backbone_out = list(hf_backbone(x).feature_maps)
    return types.SimpleNamespace(model=model, hf=hf, norms=norms, files=files, x=x,
                                 stages=hf_stage_outputs(model, x), hf_backbone_out=hf_backbone_out)


def _save_hf_backbone(cls_dir, out_dir, norms):
    from transformers import ConvNextBackbone
    backbone = ConvNextBackbone.from_pretrained(
        cls_dir, out_features=['stage1', 'stage2', 'stage3', 'stage4']).eval()
    with torch.no_grad():
        for i in range(4):
            layer = backbone.hidden_states_norms[f'stage{i + 1}']
            layer.weight.copy_(norms[f'norm{i}.weight'])
            layer.bias.copy_(norms[f'norm{i}.bias'])
    backbone.save_pretrained(out_dir)
    return backbone


def _expected(ref, dense, out_indices=(0, 1, 2, 3)):
    if dense == 'hf_backbone':
        return [ref.hf_backbone_out[i] for i in out_indices]
    return [channel_layer_norm(ref.stages[i], ref.norms[f'norm{i}.weight'] if dense else None,
                               ref.norms[f'norm{i}.bias'] if dense else None)
            for i in out_indices]


def _max_diff(outputs, expected):
    return max(float((a - b).abs().max()) for a, b in zip(outputs, expected))


_FULL = 'full detector/segmenter checkpoint'
LAYOUTS = [
    # (files key, dense output norms?, layout name the loader must report)
    ('hf_safetensors', False, 'Hugging Face ConvNextForImageClassification'),
    ('hf_bin', False, 'Hugging Face ConvNextForImageClassification'),
    ('hf_bare', False, 'Hugging Face ConvNextModel'),
    ('hf_backbone', 'hf_backbone', 'Hugging Face ConvNextBackbone'),
    ('official', False, 'official ConvNeXt'),
    ('timm', False, 'timm'),
    ('mmpretrain_cls', False, 'mmpretrain classification'),
    ('mmpretrain_dense', True, f'{_FULL} (backbone.* in mmpretrain dense'),
    ('detector', True, f'{_FULL} (backbone.* in official ConvNeXt'),
]


@pytest.mark.parametrize('name, dense, layout', LAYOUTS, ids=[row[0] for row in LAYOUTS])
def test_layout_reproduces_hf_stage_outputs(ref, name, dense, layout):
    backbone = ConvNeXt(arch=ARCH).eval()
    conversion = load_pretrained(backbone, ref.files[name])
    assert conversion.layout.startswith(layout)
    with torch.no_grad():
        outputs = backbone(ref.x)
    diff = _max_diff(outputs, _expected(ref, dense))
    MAX_ABS_DIFF[name] = diff
    assert diff <= TOLERANCE
    if not dense:  # classification layouts: output norms start fresh
        for i, channels in enumerate(ARCH['channels']):
            assert torch.equal(getattr(backbone, f'norm{i}').weight, torch.ones(channels))
            assert torch.equal(getattr(backbone, f'norm{i}').bias, torch.zeros(channels))


def test_report_max_differences(ref):
    # Runs after the parametrised cases (pytest keeps file order): print the measured figures.
    missing = {row[0] for row in LAYOUTS} - set(MAX_ABS_DIFF)
    assert not missing, f'layouts not measured: {missing}'
    # The comparison is sensitive: a backbone that did not load the weights is far off.
    with torch.no_grad():
        unloaded = ConvNeXt(arch=ARCH).eval()(ref.x)
    assert _max_diff(unloaded, _expected(ref, False)) > 0.1
    print('\nmax |convnext_dense - Hugging Face| per layout (fp32):')
    for name, diff in MAX_ABS_DIFF.items():
        print(f'  {name:18s} {diff:.3e}')


@pytest.mark.parametrize('name, dropped', [
    ('hf_safetensors', {'classifier.weight': 'classification head',
                        'convnext.layernorm.weight': 'classification final LayerNorm'}),
    ('official', {'head.weight': 'classification head', 'norm.bias': 'classification final'}),
    ('timm', {'head.fc.weight': 'classification head', 'head.norm.weight': 'classification final'}),
    ('mmpretrain_cls', {'head.fc.bias': 'classification head',
                        'backbone.norm3.weight': "mmpretrain's norm3"}),
    ('detector', {'neck.lateral_convs.0.conv.weight': 'not part of the backbone (neck.*)',
                  'roi_head.bbox_head.fc_cls.weight': 'not part of the backbone (roi_head.*)'}),
])
def test_non_backbone_weights_are_dropped_and_reported(ref, name, dropped):
    conversion = convert_with_report(load_state_file(_weights_file(ref.files[name])))
    for key, reason in dropped.items():
        assert reason in conversion.dropped[key]
    assert not conversion.unmapped
    assert not set(conversion.mapped.values()) & set(conversion.dropped)


def test_mmpretrain_dense_norm3_is_an_output_norm_not_dropped(ref):
    conversion = convert_with_report(load_state_file(ref.files['mmpretrain_dense']))
    assert 'backbone.norm3.weight' not in conversion.dropped
    assert torch.equal(conversion.state_dict['norm3.weight'], ref.norms['norm3.weight'])


@pytest.mark.parametrize('name', [row[0] for row in LAYOUTS])
def test_conversion_is_idempotent_and_pure(ref, name):
    checkpoint = load_state_file(_weights_file(ref.files[name]))
    snapshot = {k: v for k, v in checkpoint.items()}
    once = convert_with_report(checkpoint)
    twice = convert_with_report(once.state_dict)
    assert list(twice.state_dict) == list(once.state_dict)
    assert all(twice.state_dict[k] is v for k, v in once.state_dict.items())
    assert twice.dropped == {} and twice.unmapped == ()
    assert twice.layout == 'convnext_dense backbone'
    assert checkpoint.keys() == snapshot.keys()
    assert all(checkpoint[k] is v for k, v in snapshot.items())


def test_backbone_state_dict_converts_to_itself():
    backbone = ConvNeXt(arch=ARCH, out_indices=(1, 3))
    state = backbone.state_dict()
    conversion = convert_with_report(state)
    assert conversion.state_dict.keys() == state.keys()
    assert all(conversion.state_dict[k] is state[k] for k in state)


def test_dense_checkpoint_into_fewer_outputs_drops_unused_norms(ref):
    backbone = ConvNeXt(arch=ARCH, out_indices=(1, 3)).eval()
    load_pretrained(backbone, ref.files['detector'], prefix='backbone.')
    with torch.no_grad():
        outputs = backbone(ref.x)
    assert _max_diff(outputs, _expected(ref, True, (1, 3))) <= TOLERANCE


def test_classification_checkpoint_resets_output_norms_already_trained(ref):
    backbone = ConvNeXt(arch=ARCH)
    with torch.no_grad():
        backbone.norm2.weight.fill_(3.0)
        backbone.norm2.bias.fill_(-1.0)
    load_pretrained(backbone, ref.files['official'])
    assert torch.equal(backbone.norm2.weight, torch.ones(64))
    assert torch.equal(backbone.norm2.bias, torch.zeros(64))


def test_load_logs_mapped_and_dropped(ref):
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        load_pretrained(ConvNeXt(arch=ARCH), ref.files['hf_safetensors'])
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert 'Hugging Face ConvNextForImageClassification' in text
    assert 'tensors mapped' in text
    head_line = next(line for line in text.splitlines()
                     if 'dropped 2 (classification head)' in line)
    assert 'classifier.weight' in head_line and 'classifier.bias' in head_line
    assert 'convnext.layernorm.weight' in text
    assert 'norm0, norm1, norm2, norm3 start fresh (weight 1, bias 0)' in text


def test_init_cfg_pretrained_through_mmdet_registry(ref):
    from mmdet.registry import MODELS
    for checkpoint, prefix, dense in ((ref.files['hf_safetensors'], None, False),
                                      (ref.files['detector'], 'backbone.', True)):
        backbone = MODELS.build(dict(
            type='convnext_dense.ConvNeXt', arch=ARCH,
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix=prefix)))
        backbone.init_weights()
        backbone.eval()
        with torch.no_grad():
            outputs = backbone(ref.x)
        assert _max_diff(outputs, _expected(ref, dense)) <= TOLERANCE


def _weights_file(path):
    from convnext_dense.weights import resolve_source
    return resolve_source(path)
