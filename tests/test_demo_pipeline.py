"""`make demo` end to end in miniature: the demo configs, tools/demo.py's pipeline, image_demo."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from convnext_dense.runtime import config, run
from convnext_dense.runtime.allocator import reason_to_leave_alone
from convnext_dense.runtime.inference import draw_predictions
from convnext_dense.extras.demo import SHAPE_CLASSES, plots
from convnext_dense.extras.demo.pipeline import DET_CONFIG, SEG_CONFIG, DemoPipeline, DemoSettings
from convnext_dense.extras.demo.pipeline import _data_options
from convnext_dense.extras.demo.shapes import IMAGE_SIZE_RANGE, generate_shapes_dataset
from convnext_dense.extras.demo.summary import parse_summary

ROOT = Path(__file__).resolve().parents[1]
REAL = {'det': 'configs/mask_rcnn/mask-rcnn_convnext-b-in22k_fpn_ms-crop-3x_coco.py',
        'seg': 'configs/upernet/upernet_convnext-b-in22k_8xb2-160k_ade20k-640x640.py'}
DEMO = {'det': f'configs/{DET_CONFIG}', 'seg': f'configs/{SEG_CONFIG}'}


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_demo_config_is_the_real_config_with_demo_changes(task):
    demo = config.load_config(str(ROOT / DEMO[task]))
    real = config.load_config(str(ROOT / REAL[task]))
    # Inherited unchanged from the real B-22k config.
    assert demo.model.type == real.model.type
    assert demo.model.backbone.type == real.model.backbone.type == 'convnext_dense.ConvNeXt'
    assert demo.optim_wrapper.constructor == real.optim_wrapper.constructor
    assert demo.optim_wrapper.optimizer.type == real.optim_wrapper.optimizer.type == 'AdamW'
    assert demo.optim_wrapper.paramwise_cfg.decay_type == real.optim_wrapper.paramwise_cfg.decay_type
    # Changed for the demo: small arch, local weights, iterations, the shapes classes.
    assert demo.model.backbone.arch != real.model.backbone.arch
    checkpoint = demo.model.backbone.init_cfg.checkpoint
    assert demo.model.backbone.init_cfg.type == 'Pretrained' and '://' not in checkpoint
    assert demo.train_cfg.type == 'IterBasedTrainLoop'
    assert demo.randomness.seed == 0  # the figures repeat from run to run
    classes = tuple(demo.train_dataloader.dataset.metainfo.classes)
    if task == 'det':
        assert classes == SHAPE_CLASSES
        assert demo.model.roi_head.bbox_head.num_classes == len(SHAPE_CLASSES)
        assert demo.model.roi_head.mask_head.num_classes == len(SHAPE_CLASSES)
        assert set(demo.val_evaluator.metric) == {'bbox', 'segm'}
    else:
        assert classes == ('background',) + SHAPE_CLASSES
        assert demo.model.decode_head.num_classes == len(classes)
        assert demo.train_dataloader.dataset.reduce_zero_label is False
        assert demo.val_evaluator.type == 'IoUMetric'


def test_demo_segmenter_is_tested_on_what_it_was_trained_on():
    # Padding a test image (to a multiple of 32) showed the model borders it never saw in its
    # 128 x 128 training crops, and it painted shapes along them. The test input stays unpadded
    # and slide windows are the training crop, which fits in every image of the dataset.
    cfg = config.load_config(str(ROOT / DEMO['seg']))
    train_crop = next(t['crop_size'] for t in cfg.train_pipeline if t['type'] == 'RandomCrop')
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=train_crop, stride=(85, 85))
    assert max(train_crop) <= IMAGE_SIZE_RANGE[0]
    # In mmseg's scope: an mmdet model built earlier in this process (init_detector) left its own.
    with DefaultScope.overwrite_default_scope('mmseg'):
        preprocessor = MODELS.build(cfg.model.data_preprocessor)
    image = torch.randint(0, 256, (3, 150, 171), dtype=torch.uint8)
    test_input = preprocessor(dict(inputs=[image], data_samples=[SegDataSample()]))['inputs']
    assert test_input.shape == (1, 3, 150, 171)


@pytest.fixture(scope='module')
def tiny_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny') / 'shapes'
    generate_shapes_dataset(root, seed=0, num_train=4, num_val=2)
    return root


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_demo_config_overrides_length_from_the_command_line(task, tiny_shapes, tmp_path):
    # The runner reads max_iters from its training loop, which opens the dataset: a tiny one.
    options = {key: str(value) for key, value in _data_options(task, tiny_shapes).items()}
    options.update({
        'train_cfg.max_iters': 1000, 'train_cfg.val_interval': 1000,
        'default_hooks.checkpoint.interval': 1000, 'model.backbone.init_cfg': None})
    cfg = config.load_config(str(ROOT / DEMO[task]), options)
    assert (cfg.train_cfg.max_iters, cfg.default_hooks.checkpoint.interval) == (1000, 1000)
    assert cfg.model.backbone.init_cfg is None
    # The learning-rate schedule the runner builds ends at the overridden length, not the
    # config's: lr reaches 0 at iteration 1000.
    cfg.work_dir = str(tmp_path)
    runner = run.build_runner(cfg)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    schedulers = runner.build_param_scheduler(cfg.param_scheduler)
    assert max(s.end for s in schedulers) == 1000
    optimizer = schedulers[0].optimizer
    peak = max(group['initial_lr'] for group in optimizer.param_groups)
    lrs = []
    for _ in range(1000):
        lrs.append(max(group['lr'] for group in optimizer.param_groups))
        for scheduler in schedulers:
            scheduler.step()
    assert 0.85 * peak < max(lrs) <= peak  # after the warmup (the decay has begun meanwhile)
    assert lrs[-1] < 0.02 * peak


def test_generate_data_on_one_cpu_renders_in_this_process(tmp_path, monkeypatch):
    # With one CPU the scenes are rendered here, after the dataset, with no worker processes.
    import convnext_dense.extras.demo.pipeline as pipeline

    def no_workers(count=2):
        raise AssertionError('worker processes started on a 1-CPU machine')

    monkeypatch.setattr(pipeline, 'worker_processes', no_workers)
    monkeypatch.setattr(pipeline.os, 'cpu_count', lambda: 1)
    settings = DemoSettings(data_dir=tmp_path / 'data', work_dir=tmp_path / 'work', num_train=4,
                            num_val=2, pretrain_images=4)
    demo = DemoPipeline(ROOT / 'tools', ROOT / 'configs', settings)
    scenes = demo.generate_data()
    assert (tmp_path / 'data' / 'coco' / 'annotations' / 'instances_val.json').is_file()
    assert len(list((tmp_path / 'data' / 'ade' / 'images' / 'training').iterdir())) == 4
    assert scenes.singles.shape[0] == 4 and scenes.scenes.shape[0] == 4
    # The same scenes the worker processes would render: each set is a pure function of its seed.
    expected = pipeline.render_scenes(demo._pretrain_settings())
    assert torch.equal(scenes.singles, expected.singles)
    assert torch.equal(scenes.scenes, expected.scenes)
    assert 'data' in demo.seconds


def test_a_new_demo_run_replaces_the_earlier_demos_checkpoints(tmp_path, monkeypatch):
    settings = DemoSettings(data_dir=tmp_path / 'data', work_dir=tmp_path / 'work')
    demo = DemoPipeline(ROOT / 'tools', ROOT / 'configs', settings)
    work_dir = tmp_path / 'work' / 'upernet'
    work_dir.mkdir(parents=True)
    for name in ('iter_2.pth', 'iter_4.pth'):  # an earlier, longer demo run
        (work_dir / name).write_bytes(b'old')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_4.pth'))

    def train_tool(step, tool, args):  # what train.py leaves: this run's checkpoint
        assert sorted(p.name for p in work_dir.iterdir()) == []
        (work_dir / 'iter_2.pth').write_bytes(b'new')
        (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    monkeypatch.setattr(demo, '_tool', train_tool)
    assert demo.train('seg', {}) == work_dir / 'iter_2.pth'
    assert sorted(p.name for p in work_dir.iterdir()) == ['iter_2.pth', 'last_checkpoint']


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    """The whole pipeline with tiny counts: 16 + 4 images (two batches of 8: the logger writes
    the last iteration, an epoch's end), 2 iterations per model."""
    root = tmp_path_factory.mktemp('demo')
    settings = DemoSettings(data_dir=root / 'data', work_dir=root / 'work', num_train=16,
                            num_val=4, seg_iters=2, det_iters=2, pretrain_iters=2,
                            pretrain_images=16, gallery_images=2, threads=1)
    lines = []
    result = DemoPipeline(ROOT / 'tools', ROOT / 'configs', settings, echo=lines.append).run()
    return root, result, lines


@pytest.mark.slow
def test_pipeline_trains_evaluates_and_draws(demo_run):
    root, result, lines = demo_run
    figures = parse_summary(result.summary)
    assert 0 <= figures['bbox_mAP'] <= 1 and 0 <= figures['segm_mAP'] <= 1
    assert 0 <= figures['mIoU'] <= 100
    # The metrics come from tools/test.py: mmdet's CocoMetric and mmseg's IoUMetric.
    assert {'coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50'} <= set(result.det_metrics)
    assert {'mIoU', 'aAcc'} <= set(result.seg_metrics)
    for step in ('train_seg', 'test_seg', 'train_det', 'test_det'):
        assert (root / 'work' / 'logs' / f'{step}.log').is_file()
    # Both trainings went through tools/train.py and logged their iterations.
    assert any('Iter(train) [2/2]' in line for line in lines)
    # The pre-training, in the pipeline's own process, set malloc as the tools do (and said so).
    expected = ('glibc malloc keeps freed memory' if reason_to_leave_alone() is None
                else 'malloc left as it is')
    assert any(expected in line for line in lines), lines[:12]
    # The Mask R-CNN backbone was loaded from a checkpoint through init_cfg Pretrained.
    det_log = (root / 'work' / 'logs' / 'train_det.log').read_text()
    assert 'Read checkpoint' in det_log
    # Validation metrics are logged at their iteration, so the curves have an x axis.
    for model, key in (('mask_rcnn', 'coco/bbox_mAP'), ('upernet', 'mIoU')):
        steps, _ = plots.series(plots.read_scalars(root / 'work' / model), key)
        assert steps.tolist() == [2], (model, steps)
    # tools/test.py drew only the gallery's 2 of the 4 validation images (--show-limit).
    for model in ('mask_rcnn', 'upernet'):
        drawn = [p for p in (root / 'work' / model / 'test' / 'show').rglob('*')
                 if p.suffix in ('.png', '.jpg')]
        assert len(drawn) == 2, (model, drawn)
    # The dataset and the pre-training's scenes were made side by side, in worker processes.
    assert any('dataset generated; rendered 2 x 16 single-object' in line for line in lines)
    for name in ('curves', 'predictions'):
        image = cv2.imread(str(result.pictures[name]))
        assert image is not None and min(image.shape[:2]) > 100


@pytest.mark.slow
@pytest.mark.parametrize('task', ['det', 'seg'])
def test_image_demo_draws_a_prediction(demo_run, task, tmp_path):
    root, _, _ = demo_run
    work_dir = root / 'work' / ('mask_rcnn' if task == 'det' else 'upernet')
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    image = sorted((root / 'data' / 'coco' / 'val').glob('*.jpg'))[0]
    result = subprocess.run(
        [sys.executable, 'tools/image_demo.py', str(image), DEMO[task], checkpoint,
         '--out-dir', str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    drawn = cv2.imread(str(tmp_path / 'vis' / f'{image.stem}.png'))
    assert drawn is not None and drawn.shape == cv2.imread(str(image)).shape


def test_image_demo_reports_a_missing_file(tmp_path):
    result = subprocess.run(
        [sys.executable, 'tools/image_demo.py', str(tmp_path / 'none.jpg'), DEMO['det'],
         str(tmp_path / 'none.pth')], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and 'none.jpg not found' in result.stderr


@pytest.mark.parametrize('image_text, device, said', [
    (b'hello', 'cpu', 'cannot be read as an image'),
    (b'', 'cpu', 'cannot be read as an image'),
    (None, 'gpu', "device 'gpu' is not a torch device"),
    (None, 'cuda', "device 'cuda': there is no CUDA device here"),
])
def test_image_demo_names_an_unreadable_image_or_device(tmp_path, monkeypatch, image_text,
                                                        device, said):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    image = tmp_path / 'picture.jpg'
    if image_text is None:
        cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    else:
        image.write_bytes(image_text)
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'')
    with pytest.raises(ValueError, match=said):
        draw_predictions(image, DEMO['seg'], checkpoint, tmp_path / 'out', device=device)
    assert not (tmp_path / 'out').exists()


def test_image_demo_never_draws_over_the_image(tmp_path):
    image = tmp_path / 'vis' / 'photo.png'
    image.parent.mkdir()
    cv2.imwrite(str(image), np.full((32, 32, 3), 7, np.uint8))
    before = image.read_bytes()
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'')
    with pytest.raises(ValueError, match=r'photo.png would be written over the image itself'):
        draw_predictions(image, DEMO['det'], checkpoint, tmp_path)
    assert image.read_bytes() == before
