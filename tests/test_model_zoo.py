"""The model-zoo configs evaluate published checkpoints with the official test-time settings.

The numbers below are written from the ConvNeXt authors' configs (facebookresearch/ConvNeXt,
object_detection/configs and semantic_segmentation/configs, mmdet 2.x / mmseg 0.x): detection
tests at 1333x800 without flip; UperNet 512 models at 2048x512 with 512 / 341 slide windows, the
640 models at 2560x640 with 640 / 426; the multi-scale column at ratios 0.5-1.75 with flip.
"""
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MS_RATIOS = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
DET_TEST = dict(scale=(1333, 800))
SEG_512 = dict(scale=(2048, 512), crop=(512, 512), stride=(341, 341))
SEG_640 = dict(scale=(2560, 640), crop=(640, 640), stride=(426, 426))
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
    # --tta: the multi-scale + flip column.
    scales, flips = cfg.tta_pipeline[1].transforms[:2]
    assert [step['scale_factor'] for step in scales] == MS_RATIOS
    assert [step['prob'] for step in flips] == [0.0, 1.0]


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
