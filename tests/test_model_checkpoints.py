"""Whole detector / segmenter checkpoints load strictly through every path users take."""
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.runner import BaseLoop

from convnext_dense.weights.model_loader import load_model_checkpoint
from model_checkpoints import (DET_CONFIG, SEG_CONFIG, build, demo_cfg, mmcv1_checkpoint,
                               mmpretrain_names, perturbed_state)


@pytest.fixture(scope='module')
def detector_source(tmp_path_factory):
    """A perturbed demo Mask R-CNN's state dict and the same saved in mmdet 3's zoo naming."""
    model = build(demo_cfg(DET_CONFIG))
    state = perturbed_state(model)
    path = tmp_path_factory.mktemp('det') / 'mask-rcnn_zoo.pth'
    torch.save({'state_dict': mmpretrain_names(state), 'meta': {'dataset_meta': {
        'classes': ('circle', 'triangle', 'square', 'star')}}}, path)
    return state, path


def _backbone_equal(model, state):
    loaded = model.backbone.state_dict()
    assert len(loaded) > 0
    for key, value in loaded.items():
        assert torch.equal(value, state['backbone.' + key]), key


def test_init_detector_loads_mmpretrain_named_backbone(detector_source):
    from mmdet.apis import init_detector
    state, path = detector_source
    model = init_detector(demo_cfg(DET_CONFIG), str(path), device='cpu')
    _backbone_equal(model, state)
    assert model.dataset_meta['classes'][0] == 'circle'


def test_missing_backbone_key_is_refused_with_modules_and_layout(detector_source, tmp_path):
    from mmdet.apis import init_detector
    state, _ = detector_source
    broken = mmpretrain_names(state)
    del broken['backbone.stages.2.1.depthwise_conv.weight']
    path = tmp_path / 'broken.pth'
    torch.save({'state_dict': broken}, path)
    with pytest.raises(ValueError) as err:
        init_detector(demo_cfg(DET_CONFIG), str(path), device='cpu')
    message = str(err.value)
    assert 'mmpretrain backbone names' in message
    assert 'missing keys (1)' in message and 'backbone.stages.2.1.dwconv: weight' in message


def test_checkpoint_without_backbone_is_refused(detector_source, tmp_path):
    from mmdet.apis import init_detector
    state, _ = detector_source
    path = tmp_path / 'heads_only.pth'
    torch.save({'state_dict': {k: v for k, v in state.items() if not k.startswith('backbone.')}},
               path)
    with pytest.raises(ValueError, match='the checkpoint has no backbone.. keys'):
        init_detector(demo_cfg(DET_CONFIG), str(path), device='cpu')


def test_evaluation_needs_every_tensor(detector_source):
    state, _ = detector_source
    model = build(demo_cfg(DET_CONFIG))
    partial = {k: v for k, v in state.items() if not k.startswith('roi_head.mask_head.conv_logits')}
    with pytest.raises(ValueError) as err:
        load_model_checkpoint(model, {'state_dict': partial}, 'evaluate')
    assert 'roi_head.mask_head.conv_logits: weight, bias' in str(err.value)
    assert 'every parameter and buffer' in str(err.value)


def test_finetune_keeps_other_class_count_heads_at_init(detector_source):
    state, path = detector_source
    model = build(demo_cfg(DET_CONFIG, num_classes=2))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    logger = MMLogger.get_instance('test_finetune_heads', log_level='INFO')
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    with pytest.raises(ValueError, match='every parameter'):
        load_model_checkpoint(model, path, 'evaluate')
    load_model_checkpoint(model, path, 'finetune')
    logger.removeHandler(handler)
    _backbone_equal(model, state)
    assert torch.equal(model.roi_head.bbox_head.fc_cls.weight, init['roi_head.bbox_head.fc_cls.weight'])
    assert torch.equal(model.neck.lateral_convs[0].conv.weight, state['neck.lateral_convs.0.conv.weight'])
    text = '\n'.join(r.getMessage() for r in records)
    assert 'mis-shaped keys' in text and 'roi_head.bbox_head.fc_cls: weight [5, 256]' in text


def test_finetune_refuses_a_partial_backbone(detector_source):
    state, _ = detector_source
    model = build(demo_cfg(DET_CONFIG))
    partial = {k: v for k, v in state.items() if k != 'backbone.norm1.bias'}
    with pytest.raises(ValueError, match=r'whole backbone(.|\n)*backbone.norm1: bias'):
        load_model_checkpoint(model, {'state_dict': partial}, 'finetune')


def test_finetune_ignores_output_norms_of_stages_the_model_does_not_return():
    source = perturbed_state(build(demo_cfg(SEG_CONFIG)))  # out_indices (0, 1, 2, 3)
    cfg = demo_cfg(SEG_CONFIG)
    cfg.model.backbone.out_indices = (1, 2, 3)
    cfg.model.decode_head.update(in_channels=[64, 128, 256], in_index=[0, 1, 2])
    cfg.model.auxiliary_head.in_index = 1
    model = build(cfg)
    with pytest.raises(ValueError, match=r'unexpected keys(.|\n)*backbone.norm0: weight, bias'):
        load_model_checkpoint(model, {'state_dict': source}, 'evaluate')
    load_model_checkpoint(model, {'state_dict': source}, 'finetune')
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, source['backbone.' + key]), key
    deeper = dict(source, **{'backbone.stages.3.1.gamma': source['backbone.stages.3.0.gamma']})
    with pytest.raises(ValueError, match=r'whole backbone(.|\n)*backbone.stages.3.1: gamma'):
        load_model_checkpoint(model, {'state_dict': deeper}, 'finetune')


def test_init_model_loads_official_mmcv1_checkpoint_weights_only(tmp_path):
    from mmseg.apis import init_model
    model = build(demo_cfg(SEG_CONFIG))
    state = perturbed_state(model, seed=3)
    classes = ('background', 'circle', 'triangle', 'square', 'star')
    path = tmp_path / 'upernet_official.pth'
    torch.save(mmcv1_checkpoint(state, classes), path)
    torch.load(path, weights_only=True)  # the file holds nothing a weights-only load refuses
    loaded = init_model(demo_cfg(SEG_CONFIG), str(path), device='cpu')
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert tuple(loaded.dataset_meta['classes']) == classes


# --- through the tools, on the demo data ---------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
SEG_CLASSES = ('background', 'circle', 'triangle', 'square', 'star')


@pytest.fixture(scope='module')
def seg_data(tmp_path_factory):
    from convnext_dense.extras.demo import generate_shapes_dataset
    root = tmp_path_factory.mktemp('shapes')
    generate_shapes_dataset(root, seed=5, num_train=4, num_val=2)
    return root / 'ade'


def _tool(script, config, *args, data_root, options=()):
    loaders = ('train_dataloader', 'val_dataloader', 'test_dataloader')
    command = [sys.executable, str(ROOT / 'tools' / script), config, *args, '--cfg-options',
               *[f'{loader}.dataset.data_root={data_root}' for loader in loaders],
               *[f'{loader}.num_workers=0' for loader in loaders], *options]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _metrics(output):
    """The test metrics mmseg logs last (aAcc, mIoU, mAcc)."""
    return dict(re.findall(r'\b(aAcc|mIoU|mAcc): ([\d.]+)', output)[-3:])


@pytest.mark.slow
def test_tools_test_gives_the_same_metrics_from_an_official_mmcv1_file(seg_data, tmp_path):
    model = build(demo_cfg(SEG_CONFIG))
    state = perturbed_state(model, seed=7)
    own = tmp_path / 'own.pth'
    torch.save({'state_dict': state, 'meta': {'dataset_meta': {'classes': SEG_CLASSES}}}, own)
    official = tmp_path / 'official.pth'
    torch.save(mmcv1_checkpoint(state, SEG_CLASSES), official)
    outputs = {}
    for name, path in (('own', own), ('official', official)):
        result = _tool('test.py', SEG_CONFIG, str(path), '--work-dir', str(tmp_path / name),
                       '--out', str(tmp_path / f'{name}_pred'), data_root=seg_data)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[name] = result.stdout + result.stderr
    assert 'official ConvNeXt repo, mmdet 2.x / mmseg 0.x era' in outputs['official']
    metrics = {name: _metrics(text) for name, text in outputs.items()}
    assert set(metrics['own']) == {'aAcc', 'mIoU', 'mAcc'}
    assert metrics['own'] == metrics['official']
    predictions = {name: sorted((tmp_path / f'{name}_pred').glob('*.png')) for name in outputs}
    assert len(predictions['own']) == 2
    for a, b in zip(predictions['own'], predictions['official']):
        assert a.read_bytes() == b.read_bytes()
    # The predictions depend on the weights: not one class everywhere.
    from PIL import Image
    import numpy as np
    assert len(np.unique(np.asarray(Image.open(predictions['own'][0])))) > 1


@pytest.mark.slow
def test_tools_test_refuses_a_checkpoint_missing_a_head_tensor(seg_data, tmp_path):
    model = build(demo_cfg(SEG_CONFIG))
    state = perturbed_state(model)
    del state['decode_head.conv_seg.bias']
    path = tmp_path / 'partial.pth'
    torch.save({'state_dict': state}, path)
    result = _tool('test.py', SEG_CONFIG, str(path), '--work-dir', str(tmp_path / 'w'),
                   data_root=seg_data)
    assert result.returncode == 1 and 'Traceback' not in result.stderr  # one error line
    assert 'decode_head.conv_seg: bias' in result.stderr
    assert f"error: checkpoint '{path}'" in result.stderr
    assert not _metrics(result.stdout + result.stderr)  # stopped before evaluating


@pytest.mark.slow
def test_tools_train_finetunes_from_another_class_count(seg_data, tmp_path):
    source = build(demo_cfg(SEG_CONFIG, num_classes=3))
    path = tmp_path / 'three_classes.pth'
    torch.save({'state_dict': mmpretrain_names(perturbed_state(source))}, path)
    result = _tool('train.py', SEG_CONFIG, '--work-dir', str(tmp_path / 'w'), data_root=seg_data,
                   options=[f'load_from={path}', 'train_cfg.max_iters=2',
                            'train_cfg.val_interval=100', 'train_dataloader.batch_size=2',
                            'default_hooks.checkpoint.interval=100'])
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'is not loaded' in log  # the config's init_cfg Pretrained file (absent here) is skipped
    assert 'mmdet 3.x / mmseg 1.x model zoo' in log
    assert 'decode_head.conv_seg: weight [3, 64, 1, 1] in the checkpoint, [5, 64, 1, 1]' in log
    assert 'auxiliary_head.conv_seg: weight [3, 32, 1, 1]' in log


def test_classification_backbone_starts_output_norms_fresh(detector_source):
    state, _ = detector_source
    backbone = build(demo_cfg(DET_CONFIG)).backbone
    weights = {k[len('backbone.'):]: v for k, v in state.items()
               if k.startswith('backbone.') and not k.startswith('backbone.norm')}
    backbone.load_state_dict(weights)
    assert torch.equal(backbone.norm2.weight, torch.ones_like(backbone.norm2.weight))
    assert torch.equal(backbone.norm2.bias, torch.zeros_like(backbone.norm2.bias))
    assert torch.equal(backbone.stages[2][0].dwconv.weight, state['backbone.stages.2.0.dwconv.weight'])
    del weights['stages.0.0.gamma']
    with pytest.raises(ValueError, match='stages.0.0: gamma'):
        backbone.load_state_dict(weights)


def test_missing_local_file_is_not_looked_up_on_the_hub():
    from convnext_dense.weights.sources import resolve_source
    with pytest.raises(FileNotFoundError, match="'work_dirs/nothing/epoch_3.pth' is not an existing "
                                                "file or directory.*not looked up as a hub id"):
        resolve_source('work_dirs/nothing/epoch_3.pth')


def test_init_detector_refuses_a_checkpoint_missing_a_head_tensor(detector_source, tmp_path):
    from mmdet.apis import init_detector
    state, _ = detector_source
    path = tmp_path / 'no_mask_logits.pth'
    torch.save({'state_dict': {k: v for k, v in mmpretrain_names(state).items()
                               if not k.startswith('roi_head.mask_head.conv_logits')}}, path)
    with pytest.raises(ValueError) as err:
        init_detector(demo_cfg(DET_CONFIG), str(path), device='cpu')
    assert 'every parameter and buffer' in str(err.value)
    assert 'roi_head.mask_head.conv_logits: weight, bias' in str(err.value)


def test_init_model_refuses_another_class_count(tmp_path):
    from mmseg.apis import init_model
    state = perturbed_state(build(demo_cfg(SEG_CONFIG)), seed=4)
    path = tmp_path / 'upernet.pth'
    torch.save({'state_dict': state}, path)
    with pytest.raises(ValueError, match=r'mis-shaped(.|\n)*decode_head.conv_seg: weight'):
        init_model(demo_cfg(SEG_CONFIG, num_classes=3), str(path), device='cpu')


def test_switch_leaves_models_without_convnext_to_mmengine(tmp_path):
    import convnext_dense.model_checkpoints as switch
    from mmengine.runner import load_checkpoint
    assert switch.enabled()
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    path = tmp_path / 'first_layer_only.pth'
    torch.save({'state_dict': {'0.weight': torch.ones(2, 2), '0.bias': torch.zeros(2)}}, path)
    load_checkpoint(model, str(path))  # non-strict, as mmengine does for any other model
    assert torch.equal(model[0].weight, torch.ones(2, 2))


class _StartedLoop(BaseLoop):
    """What ``Runner.train()`` has built by the time it loads ``load_from``."""

    def run(self):
        pass


def test_a_plain_mmengine_runner_loads_load_from_by_the_rule_of_its_run(detector_source,
                                                                          tmp_path):
    """mmdet's and mmseg's own tools/test.py and train.py build mmengine's Runner."""
    from mmengine.runner import Runner
    state, _ = detector_source
    path = tmp_path / 'no_mask_logits.pth'
    torch.save({'state_dict': {k: v for k, v in mmpretrain_names(state).items()
                               if not k.startswith('roi_head.mask_head.conv_logits')}}, path)

    def runner():
        cfg = demo_cfg(DET_CONFIG)
        cfg.work_dir, cfg.load_from = str(tmp_path / 'work'), str(path)
        return Runner.from_cfg(cfg)

    testing = runner()  # test() / val() load before building any training loop
    with pytest.raises(ValueError, match=r'to evaluate, every parameter and buffer.*\n.*\n'
                                         r'.*roi_head.mask_head.conv_logits: weight, bias'):
        testing.load_or_resume()
    training = runner()
    training._train_loop = _StartedLoop(training, [])
    training.load_or_resume()  # fine-tuning: the backbone from the file, the rest listed
    _backbone_equal(training.model, state)
    assert training._has_loaded
