"""``tools/test.py --show-limit``: mmdet's and mmseg's own visualization hooks stop drawing."""
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from mmdet.engine.hooks import DetVisualizationHook
from mmdet.structures import DetDataSample
from mmdet.visualization import DetLocalVisualizer
from mmengine.structures import InstanceData, PixelData
from mmengine.visualization import Visualizer
from mmseg.engine.hooks import SegVisualizationHook
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer

from convnext_dense.runtime.hooks import ShowLimitHook


def _det_sample(image_path):
    sample = DetDataSample(metainfo=dict(img_path=str(image_path), img_shape=(24, 32)))
    sample.pred_instances = InstanceData(bboxes=torch.tensor([[2., 2., 12., 12.]]),
                                         scores=torch.tensor([0.9]), labels=torch.tensor([0]))
    return sample


def _seg_sample(image_path):
    sample = SegDataSample(metainfo=dict(img_path=str(image_path), img_shape=(24, 32)))
    sample.pred_sem_seg = PixelData(data=torch.zeros(1, 24, 32, dtype=torch.long))
    return sample


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_drawing_stops_after_the_limit(scope, tmp_path):
    images = []
    for index in range(5):
        path = tmp_path / f'img_{index}.jpg'
        cv2.imwrite(str(path), np.full((24, 32, 3), 40 * index, np.uint8))
        images.append(path)
    Visualizer._instance_dict.clear()  # a fresh current visualizer for the hook
    if scope == 'mmdet':
        DetLocalVisualizer.get_instance(f'vis_{scope}', save_dir=str(tmp_path / 'vis'))
        drawer = DetVisualizationHook(draw=True, test_out_dir=str(tmp_path / 'show'))
        samples = [_det_sample(path) for path in images]
    else:
        SegLocalVisualizer.get_instance(f'vis_{scope}', save_dir=str(tmp_path / 'vis'),
                                        vis_backends=[dict(type='LocalVisBackend')])
        drawer = SegVisualizationHook(draw=True, interval=1)
        samples = [_seg_sample(path) for path in images]
    limit = ShowLimitHook(limit=3)
    runner = SimpleNamespace(hooks=[drawer, limit], work_dir=str(tmp_path), timestamp='t',
                             iter=0)
    limit.before_test(runner)
    for index, sample in enumerate(samples):  # batches of one image, as the test loaders
        for hook in runner.hooks:  # in priority order: the drawer (NORMAL) before LOW
            hook.after_test_iter(runner, index, data_batch=None, outputs=[sample])
    drawn = sorted(p.name for p in tmp_path.rglob('*') if p.suffix in ('.jpg', '.png')
                   and 'img_' in p.name and p.parent != tmp_path)
    assert len(drawn) == 3 and all(f'img_{i}' in ' '.join(drawn) for i in range(3)), drawn
    assert drawer.draw is False and limit.seen == 5


@pytest.mark.parametrize('limit', [0, -2, 1.5, '3', None])
def test_bad_limit_is_named(limit):
    with pytest.raises(ValueError, match=rf'limit must be an int >= 1 .*got {limit!r}'):
        ShowLimitHook(limit=limit)
