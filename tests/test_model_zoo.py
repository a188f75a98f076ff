"""The model-zoo configs evaluate published checkpoints with the official test-time settings.

The numbers below were checked against the ConvNeXt authors' configs (facebookresearch/ConvNeXt
048efce, object_detection/configs/convnext and semantic_segmentation/configs/convnext, mmdet 2.x /
mmseg 0.x, over Swin Detection 6a979e2's schedule_1x.py and coco_instance.py): detection tests at
1333x800 without flip; UperNet 512 models at 2048x512 with 512 / 341 slide windows, the 640 models
at 2560x640 with 640 / 426 (`_ss` configs); the multi-scale column (`--aug-test` on the `_ms`
configs, whose model keeps `test_cfg=dict(mode='whole')`) rescales to the test scale times 0.5-1.75
(mmseg 0.x MultiScaleFlipAug with img_scale and img_ratios), with flip, whole-image inference.
"""
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
from mmengine.config import Config

from convnext_dense.runtime.cli_options import enable_tta
from convnext_dense.runtime.config import load_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MS_RATIOS = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
DET_TEST = dict(scale=(1333, 800))
SEG_512 = dict(scale=(2048, 512), crop=(512, 512), stride=(341, 341),
               ms_scales=[(int(2048 * r), int(512 * r)) for r in MS_RATIOS])
SEG_640 = dict(scale=(2560, 640), crop=(640, 640), stride=(426, 426),
               ms_scales=[(int(2560 * r), int(640 * r)) for r in MS_RATIOS])
_COCO = 'https://dl.fbaipublicfiles.com/convnext/coco/'
_ADE = 'https://dl.fbaipublicfiles.com/convnext/ade20k/'

# config -> (official checkpoint, test settings, arch)
ZOO = {
    'mask_rcnn/mask-rcnn_convnext-t-in1k_fpn_ms-crop-3x_coco.py':
        (_COCO + 'mask_rcnn_convnext_tiny_1k_3x.pth', DET_TEST, 'tiny'),
    'cascade_mask_rcnn/cascade-mask-rcnn_convnext-t-in1k_fpn_4conv1fc-giou_ms-crop-3x_coco.py':
        (_COCO + 'cascade_mask_rcnn_convnext_tiny_1k_3x.pth', DET_TEST, 'tiny'),
    'cascade_mask_rcnn/cascade-mask-rcnn_convnext-s-in1k_fpn_4conv1fc-giou_ms-crop-3x_coco.py':
        (_COCO + 'cascade_mask_rcnn_convnext_small_1k_3x.pth', DET_TEST, 'small'),
    'cascade_mask_rcnn/cascade-mask-rcnn_convnext-b-in1k_fpn_4conv1fc-giou_ms-crop-3x_coco.py':
        (_COCO + 'cascade_mask_rcnn_convnext_base_1k_3x.pth', DET_TEST, 'base'),
    'cascade_mask_rcnn/cascade-mask-rcnn_convnext-b-in22k_fpn_4conv1fc-giou_ms-crop-3x_coco.py':
        (_COCO + 'cascade_mask_rcnn_convnext_base_22k_3x.pth', DET_TEST, 'base'),
    'cascade_mask_rcnn/cascade-mask-rcnn_convnext-l-in22k_fpn_4conv1fc-giou_ms-crop-3x_coco.py':
        (_COCO + 'cascade_mask_rcnn_convnext_large_22k_3x.pth', DET_TEST, 'large'),
    'cascade_mask_rcnn/cascade-mask-rcnn_convnext-xl-in22k_fpn_4conv1fc-giou_ms-crop-3x_coco.py':
        (_COCO + 'cascade_mask_rcnn_convnext_xlarge_22k_3x.pth', DET_TEST, 'xlarge'),
    'upernet/upernet_convnext-t-in1k_8xb2-160k_ade20k-512x512.py':
        (_ADE + 'upernet_convnext_tiny_1k_512x512.pth', SEG_512, 'tiny'),
    'upernet/upernet_convnext-s-in1k_8xb2-160k_ade20k-512x512.py':
        (_ADE + 'upernet_convnext_small_1k_512x512.pth', SEG_512, 'small'),
    'upernet/upernet_convnext-b-in1k_8xb2-160k_ade20k-512x512.py':
        (_ADE + 'upernet_convnext_base_1k_512x512.pth', SEG_512, 'base'),
    'upernet/upernet_convnext-b-in22k_8xb2-160k_ade20k-640x640.py':
        (_ADE + 'upernet_convnext_base_22k_640x640.pth', SEG_640, 'base'),
    'upernet/upernet_convnext-l-in22k_8xb2-160k_ade20k-640x640.py':
        (_ADE + 'upernet_convnext_large_22k_640x640.pth', SEG_640, 'large'),
    'upernet/upernet_convnext-xl-in22k_8xb2-160k_ade20k-640x640.py':
        (_ADE + 'upernet_convnext_xlarge_22k_640x640.pth', SEG_640, 'xlarge'),
}


# config -> the authors' training recipe: (drop path, AdamW lr, layer decay (rate, type, layers),
# mixed precision, warmup iterations). Their configs: use_fp16=True except L and XL; detection
# warmup is Swin Detection's schedule_1x.py (500), UperNet's their own lr_config (1500).
_DET = 'layer_wise'
_SEG = 'stage_wise'
RECIPES = {
    'mask_rcnn/mask-rcnn_convnext-t-in1k_fpn_ms-crop-3x_coco.py': (0.4, 1e-4, (0.95, _DET, 6), True, 500),
    'cascade_mask_rcnn/cascade-mask-rcnn_convnext-t-in1k_fpn_4conv1fc-giou_ms-crop-3x_coco.py':
        (0.4, 2e-4, (0.7, _DET, 6), True, 500),
    'cascade_mask_rcnn/cascade-mask-rcnn_convnext-s-in1k_fpn_4conv1fc-giou_ms-crop-3x_coco.py':
        (0.6, 2e-4, (0.7, _DET, 12), True, 500),
    'cascade_mask_rcnn/cascade-mask-rcnn_convnext-b-in1k_fpn_4conv1fc-giou_ms-crop-3x_coco.py':
        (0.7, 2e-4, (0.8, _DET, 12), True, 500),
    'cascade_mask_rcnn/cascade-mask-rcnn_convnext-b-in22k_fpn_4conv1fc-giou_ms-crop-3x_coco.py':
        (0.6, 1e-4, (0.8, _DET, 12), True, 500),
    'cascade_mask_rcnn/cascade-mask-rcnn_convnext-l-in22k_fpn_4conv1fc-giou_ms-crop-3x_coco.py':
        (0.7, 1e-4, (0.7, _DET, 12), False, 500),
    'cascade_mask_rcnn/cascade-mask-rcnn_convnext-xl-in22k_fpn_4conv1fc-giou_ms-crop-3x_coco.py':
        (0.8, 1e-4, (0.7, _DET, 12), False, 500),
    'upernet/upernet_convnext-t-in1k_8xb2-160k_ade20k-512x512.py': (0.4, 1e-4, (0.9, _SEG, 6), True, 1500),
    'upernet/upernet_convnext-s-in1k_8xb2-160k_ade20k-512x512.py': (0.3, 1e-4, (0.9, _SEG, 12), True, 1500),
    'upernet/upernet_convnext-b-in1k_8xb2-160k_ade20k-512x512.py': (0.4, 1e-4, (0.9, _SEG, 12), True, 1500),
    'upernet/upernet_convnext-b-in22k_8xb2-160k_ade20k-640x640.py': (0.4, 1e-4, (0.9, _SEG, 12), True, 1500),
    'upernet/upernet_convnext-l-in22k_8xb2-160k_ade20k-640x640.py': (0.4, 1e-4, (0.9, _SEG, 12), False, 1500),
    'upernet/upernet_convnext-xl-in22k_8xb2-160k_ade20k-640x640.py': (0.4, 8e-5, (0.9, _SEG, 12), False, 1500),
}


def _load(name: str) -> Config:
    return Config.fromfile(osp.join(ROOT, 'configs', name))


def _resize(pipeline):
    return [dict(step) for step in pipeline if step['type'] == 'Resize']


@pytest.mark.parametrize('name', sorted(ZOO), ids=lambda n: osp.basename(n)[:40])
def test_test_time_settings_are_the_official_ones(name):
    cfg = _load(name)
    _, expected, arch = ZOO[name]
    assert cfg.model.backbone.arch == arch
    assert 'convnext_dense.model_checkpoints' in cfg.custom_imports.imports
    resize = _resize(cfg.test_dataloader.dataset.pipeline)
    assert resize == [dict(type='Resize', scale=expected['scale'], keep_ratio=True)]
    assert not any(step['type'] == 'RandomFlip' for step in cfg.test_dataloader.dataset.pipeline)
    if cfg.default_scope == 'mmdet':
        return
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=expected['crop'],
                                      stride=expected['stride'])
    # --tta: the multi-scale + flip column: the test scale times each ratio, as mmseg 0.x did.
    scales, flips = cfg.tta_pipeline[1].transforms[:2]
    assert [dict(step) for step in scales] == [
        dict(type='Resize', scale=scale, keep_ratio=True) for scale in expected['ms_scales']]
    assert [step['prob'] for step in flips] == [0.0, 1.0]


@pytest.mark.parametrize('name', sorted(n for n in ZOO if n.startswith('upernet/')),
                         ids=lambda n: osp.basename(n)[:40])
def test_multi_scale_column_runs_whole_image_inference(name):
    """The README's `--tta --cfg-options model.test_cfg.mode=whole` reaches the wrapped model."""
    cfg = load_config(osp.join(ROOT, 'configs', name), {'model.test_cfg.mode': 'whole'})
    enable_tta(cfg)
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module.test_cfg.mode == 'whole'
    assert cfg.test_dataloader.dataset.pipeline[1].type == 'TestTimeAug'


@pytest.mark.parametrize('name', sorted(RECIPES), ids=lambda n: osp.basename(n)[:40])
def test_training_recipe_is_the_authors(name):
    cfg = _load(name)
    drop_path, lr, (rate, decay_type, layers), amp, warmup = RECIPES[name]
    assert cfg.model.backbone.drop_path_rate == drop_path
    assert cfg.model.backbone.layer_scale_init_value == 1.0
    optim = cfg.optim_wrapper
    assert optim.constructor == 'convnext_dense.LayerDecayOptimizerConstructor'
    assert optim.optimizer == dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05)
    assert optim.paramwise_cfg == dict(decay_rate=rate, decay_type=decay_type, num_layers=layers)
    assert optim.type == ('AmpOptimWrapper' if amp else 'OptimWrapper')
    assert optim.get('clip_grad') is None
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs
    first = cfg.param_scheduler[0]
    assert first.type == 'LinearLR' and (first.begin, first.end) == (0, warmup)
    if cfg.default_scope == 'mmdet':
        assert first.start_factor == 0.001 and cfg.train_cfg.max_epochs == 36
        assert list(cfg.param_scheduler[1].milestones) == [27, 33]
    else:
        assert first.start_factor == 1e-6 and cfg.train_cfg.max_iters == 160000
        crop = (512, 512) if '512x512' in name else (640, 640)
        assert cfg.crop_size == crop and cfg.model.data_preprocessor.size == crop


def test_every_zoo_row_is_in_the_readme():
    readme = open(osp.join(ROOT, 'README.md')).read()
    for name, (url, _, _) in ZOO.items():
        assert f'configs/{name}' in readme, name
        assert url in readme, url


def test_offline_evaluation_fails_fast_saying_where_to_put_the_file(tmp_path):
    env = dict(os.environ, TORCH_HOME=str(tmp_path / 'torch'))
    url = 'http://127.0.0.1:9/convnext/coco/cascade_mask_rcnn_convnext_tiny_1k_3x.pth'
    config = 'configs/cascade_mask_rcnn/cascade-mask-rcnn_convnext-t-in1k_fpn_4conv1fc-giou_ms-crop-3x_coco.py'
    start = time.monotonic()
    result = subprocess.run([sys.executable, 'tools/test.py', config, url], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    expected = tmp_path / 'torch' / 'hub' / 'checkpoints' / 'cascade_mask_rcnn_convnext_tiny_1k_3x.pth'
    assert f'put it at {expected}' in result.stderr
    assert time.monotonic() - start < 60
