"""Odd sizes, grayscale, RGBA and object-free images train and evaluate through the tools."""
import subprocess
import sys
from pathlib import Path

import pytest

from odd_images import write_awkward_dataset

ROOT = Path(__file__).resolve().parents[1]
# init_cfg=None: the demo configs' pretrained backbone is made by `make demo`, not by the tests.
COMMON = ['model.backbone.init_cfg=None', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
          'default_hooks.checkpoint.interval=2',
          'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
          'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0']


def _options(task, data):
    if task == 'det':
        coco = f'{data}/coco/'
        return COMMON + [
            f'train_dataloader.dataset.data_root={coco}', f'val_dataloader.dataset.data_root={coco}',
            f'test_dataloader.dataset.data_root={coco}',
            f'val_evaluator.ann_file={coco}annotations/instances_val.json',
            f'test_evaluator.ann_file={coco}annotations/instances_val.json',
            # Keep the image without objects in training too: it must not break a batch.
            'train_dataloader.dataset.filter_cfg.filter_empty_gt=False']
    return COMMON + [f'{loader}.dataset.data_root={data}/ade'
                     for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


CONFIGS = {'det': 'configs/demo/mask-rcnn_convnext-demo_shapes.py',
           'seg': 'configs/demo/upernet_convnext-demo_shapes.py'}
METRICS = {'det': ('coco/bbox_mAP', 'coco/segm_mAP'), 'seg': ('mIoU',)}


@pytest.mark.slow
@pytest.mark.parametrize('task', ['det', 'seg'])
def test_awkward_images_train_and_evaluate(task, tmp_path):
    data = write_awkward_dataset(tmp_path / 'data')
    work_dir = tmp_path / 'work'
    options = _options(task, data)
    train = subprocess.run([sys.executable, 'tools/train.py', CONFIGS[task], '--work-dir',
                            str(work_dir), '--cfg-options', *options],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-3000:]
    # on CPU the run says what it did with glibc's malloc (convnext_dense.runtime.allocator)
    assert ('glibc malloc keeps freed memory' in train.stdout + train.stderr
            or 'malloc left as it is: ' in train.stdout + train.stderr)
    out = tmp_path / ('predictions.pkl' if task == 'det' else 'predictions')
    extra = ['--out', str(out), '--show-dir', str(tmp_path / 'drawn')]
    # Testing (drawing too: mmseg's hook asks for runner.iter) must not need the training data.
    no_train_data = [f'train_dataloader.dataset.data_root={tmp_path}/no_training_data/']
    test = subprocess.run([sys.executable, 'tools/test.py', CONFIGS[task], str(work_dir / 'iter_2.pth'),
                           '--work-dir', str(tmp_path / 'test'), *extra,
                           '--cfg-options', *options, *no_train_data],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert test.returncode == 0, test.stdout[-2000:] + test.stderr[-3000:]
    log = test.stdout + test.stderr
    for metric in METRICS[task]:
        assert f'{metric}: ' in log
    assert '[4/4]' in log  # every image, the empty one included, was evaluated
    assert out.exists()  # --out: raw predictions kept
    assert len(list((tmp_path / 'drawn').rglob('*.png')) + list((tmp_path / 'drawn').rglob('*.jpg'))) >= 4


@pytest.mark.slow
def test_segmentation_test_time_augmentation(tmp_path):
    data = write_awkward_dataset(tmp_path / 'data')
    options = _options('seg', data)
    work_dir = tmp_path / 'work'
    subprocess.run([sys.executable, 'tools/train.py', CONFIGS['seg'], '--work-dir', str(work_dir),
                    '--cfg-options', *options], cwd=ROOT, check=True, capture_output=True, timeout=600)
    test = subprocess.run([sys.executable, 'tools/test.py', CONFIGS['seg'], str(work_dir / 'iter_2.pth'),
                           '--tta', '--work-dir', str(tmp_path / 'test'), '--cfg-options', *options],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert test.returncode == 0, test.stdout[-2000:] + test.stderr[-3000:]
    assert 'SegTTAModel' in test.stdout + test.stderr and 'mIoU: ' in test.stdout + test.stderr
