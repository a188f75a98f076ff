"""``make demo``: the main job end to end on the embedded shapes dataset.

1. generate the dataset (COCO and ADE20K layouts) and, beside it in worker processes, render the
   pre-training's scenes;
2. pre-train the demo ConvNeXt on rendered shapes (:mod:`.pretrain`: a conv-BN-ReLU teacher
   learns to name shapes, the ConvNeXt learns its feature maps; the demo's ImageNet-22k) and
   save it in the official checkpoint layout; this step runs in the pipeline's own process, with
   glibc malloc told to keep freed memory as the tools do
   (:func:`~convnext_dense.runtime.allocator.keep_freed_memory`);
3. train the UperNet and the Mask R-CNN demo with ``tools/train.py``, side by side (one core
   each), both backbones initialised from step 2's checkpoint through
   ``init_cfg=dict(type='Pretrained')`` as the real configs load the 22k weights;
4. evaluate each with ``tools/test.py`` (mmseg IoUMetric; mmdet CocoMetric, bbox and segm) as
   soon as its training ends, and draw its predictions;
5. plot the training curves and a gallery of predictions.

Every step writes under ``work_dir``; the tools run as child processes with their full output in
``work_dir/logs/``.
"""
import dataclasses
import functools
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

from ...cpu_fast_paths import cpu_support
from ...model.archs import is_int
from ...runtime.allocator import keep_freed_memory
from .plots import plot_curves, plot_gallery, read_scalars
from .pretrain import (PretrainScenes, PretrainSettings, pretrain_backbone, render_scenes,
                       worker_processes)
from .runs import format_cfg_options, last_checkpoint, read_test_metrics, run_tool
from .shapes import DEFAULT_OUT_DIR, generate_shapes_dataset
from .summary import summary_from_metrics

PathLike = Union[str, os.PathLike]
SEG_CONFIG = 'demo/upernet_convnext-demo_shapes.py'
DET_CONFIG = 'demo/mask-rcnn_convnext-demo_shapes.py'
SEG_LOSSES = ('loss', 'decode.loss_ce', 'aux.loss_ce')
DET_LOSSES = ('loss', 'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask')
# The pre-training scenes are rendered under seed + this offset: apart from the dataset's images.
PRETRAIN_SEED_OFFSET = 1000


@dataclass
class DemoSettings:
    """What ``make demo`` runs; the defaults are the measured recipe.

    Attributes:
        data_dir: Where the shapes dataset is generated (reused when already there).
        work_dir: Where checkpoints, logs and pictures go.
        seed: Dataset seed.
        num_train: Training images to generate.
        num_val: Validation images to generate (the evaluation set).
        seg_iters: UperNet training iterations; None keeps the config's.
        det_iters: Mask R-CNN training iterations; None keeps the config's.
        pretrain_iters: Steps of each pre-training phase (teacher, distillation); None keeps
            :class:`~convnext_dense.extras.demo.pretrain.PretrainSettings`' defaults.
        pretrain_images: Single- and multi-object scenes rendered for the pre-training (not
            written to disk; its memory grows with them, see ``PretrainSettings.scene_images``);
            None keeps the defaults.
        gallery_images: Validation images shown in ``predictions.png``.
        parallel: Train (and test) the two models side by side, each child process on its
            share of the cores; False runs them one after the other.
        threads: Torch threads of each child process (OMP_NUM_THREADS); None: half the cores
            when ``parallel``, else torch's default.
        extra_seg_options: More ``--cfg-options`` for the UperNet training.
        extra_det_options: More ``--cfg-options`` for the Mask R-CNN training.
    """

    data_dir: PathLike = DEFAULT_OUT_DIR
    work_dir: PathLike = 'work_dirs/demo'
    seed: int = 0
    num_train: int = 400
    num_val: int = 100
    seg_iters: Optional[int] = None
    det_iters: Optional[int] = None
    pretrain_iters: Optional[int] = None
    pretrain_images: Optional[int] = None
    gallery_images: int = 6
    parallel: bool = True
    threads: Optional[int] = None
    extra_seg_options: Dict[str, object] = field(default_factory=dict)
    extra_det_options: Dict[str, object] = field(default_factory=dict)


@dataclass
class DemoResult:
    """What a demo run produced.

    Attributes:
        summary: ``demo: bbox_mAP=... segm_mAP=... mIoU=...``.
        det_metrics: tools/test.py metrics of the Mask R-CNN demo.
        seg_metrics: tools/test.py metrics of the UperNet demo.
        pictures: Named PNG files written (curves, gallery).
        seconds: Wall time of each step.
    """

    summary: str
    det_metrics: Dict[str, float]
    seg_metrics: Dict[str, float]
    pictures: Dict[str, Path]
    seconds: Dict[str, float]


def _data_options(task: str, root: Path) -> Dict[str, object]:
    """``--cfg-options`` pointing a demo config's dataloaders (and COCO evaluator) at ``root``."""
    if task == 'seg':
        data_root = root / 'ade'
        options = {f'{loader}.dataset.data_root': data_root
                   for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    else:
        data_root = root / 'coco'
        options = {f'{loader}.dataset.data_root': f'{data_root}/'
                   for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
        ann_file = data_root / 'annotations' / 'instances_val.json'
        options.update({'val_evaluator.ann_file': ann_file, 'test_evaluator.ann_file': ann_file})
    return options


def _iters_options(iters: Optional[int]) -> Dict[str, object]:
    if iters is None:
        return {}
    if not is_int(iters) or iters < 1:
        raise ValueError(f'iterations must be a positive int or None, got {iters!r}')
    # Validate and save once, at the end, when the length changes.
    return {'train_cfg.max_iters': iters, 'train_cfg.val_interval': iters,
            'default_hooks.checkpoint.interval': iters}


def _drawn(show_dir: Path, count: int) -> List[Path]:
    files = sorted(p for p in show_dir.rglob('*.png') if p.is_file())
    files += sorted(p for p in show_dir.rglob('*.jpg') if p.is_file())
    return files[:count]


class DemoPipeline:
    """Runs the demo steps; see the module docstring.

    Args:
        tools_dir: Folder holding ``train.py`` and ``test.py``.
        config_dir: Folder holding ``demo/*.py`` configs.
        settings: What to run.
        echo: Receives progress lines (step headers and the tools' progress); None is silent.
    """

    def __init__(self, tools_dir: PathLike, config_dir: PathLike,
                 settings: Optional[DemoSettings] = None,
                 echo: Optional[Callable[[str], None]] = None) -> None:
        self.tools_dir = Path(tools_dir)
        self.config_dir = Path(config_dir)
        self.settings = settings or DemoSettings()
        self.echo = echo or (lambda line: None)
        self.work_dir = Path(self.settings.work_dir).resolve()
        self.data_dir = Path(self.settings.data_dir).resolve()
        for name in ('train.py', 'test.py'):
            if not (self.tools_dir / name).is_file():
                raise FileNotFoundError(f'{self.tools_dir / name} not found')
        for name in (SEG_CONFIG, DET_CONFIG):
            if not (self.config_dir / name).is_file():
                raise FileNotFoundError(f'{self.config_dir / name} not found')
        # Unbuffered children: their progress lines arrive as they are written.
        self.env = dict(os.environ, PYTHONUNBUFFERED='1')
        threads = self.settings.threads
        if threads is None and self.settings.parallel:
            # Two small models gain more from a core each than from sharing both.
            threads = max(1, (os.cpu_count() or 2) // 2)
        if threads is not None:
            self.env['OMP_NUM_THREADS'] = str(threads)
        self.seconds: Dict[str, float] = {}

    def _tool(self, step: str, tool: str, args: List[str]) -> None:
        start = time.perf_counter()
        echo = self.echo
        if self.settings.parallel:  # two tools talk at once: say whose line it is
            echo = lambda line: self.echo(f'[{step}] {line}')  # noqa: E731
        run_tool(self.tools_dir / tool, args, self.work_dir / 'logs' / f'{step}.log', echo,
                 self.env)
        self.seconds[step] = time.perf_counter() - start

    def _both(self, seg: Callable, det: Callable):
        """``(seg(), det())``, side by side when ``parallel``; the first error is raised."""
        if not self.settings.parallel:
            return seg(), det()
        with ThreadPoolExecutor(max_workers=2) as pool:
            seg_future, det_future = pool.submit(seg), pool.submit(det)
            return seg_future.result(), det_future.result()

    def _pretrain_settings(self) -> PretrainSettings:
        settings = PretrainSettings(seed=self.settings.seed + PRETRAIN_SEED_OFFSET)
        if self.settings.pretrain_iters is not None:
            iters = self.settings.pretrain_iters
            settings = dataclasses.replace(settings, teacher_iters=iters, distill_iters=iters,
                                           warmup_iters=min(settings.warmup_iters, iters))
        if self.settings.pretrain_images is not None:
            count = self.settings.pretrain_images
            settings = dataclasses.replace(settings, single_object_images=count,
                                           scene_images=count)
        return settings

    def generate_data(self) -> PretrainScenes:
        """Step 1: the dataset (nothing to do when ``data_dir`` already holds it) and the
        pre-training scenes, side by side in worker processes where there are two CPUs or more;
        returns the scenes. Both are pure functions of their seeds: the same either way."""
        s = self.settings
        self.echo(f'[1/5] shapes dataset in {self.data_dir} ({s.num_train} train / {s.num_val} '
                  'val images), and the pre-training\'s scenes beside it')
        start = time.perf_counter()
        make_dataset = functools.partial(generate_shapes_dataset, self.data_dir, seed=s.seed,
                                         num_train=s.num_train, num_val=s.num_val)
        if (os.cpu_count() or 1) < 2:
            _, created = make_dataset()
            scenes = render_scenes(self._pretrain_settings())
        else:
            with worker_processes(2) as pool:
                dataset = pool.submit(make_dataset)
                scenes = render_scenes(self._pretrain_settings(), pool)
                _, created = dataset.result()
        self.seconds['data'] = time.perf_counter() - start
        self.echo(f'      dataset {"generated" if created else "already there"}; rendered 2 x '
                  f'{len(scenes.singles)} single-object (shape anywhere / nearer the middle) and '
                  f'{len(scenes.scenes)} multi-object scenes ({self.seconds["data"]:.0f} s)')
        return scenes

    def pretrain(self, scenes: Optional[PretrainScenes] = None) -> Path:
        """Pre-train the demo backbone (the demo's ImageNet stand-in, see :mod:`.pretrain`) on
        :meth:`generate_data`'s scenes (None: renders them first)."""
        from mmengine.config import Config
        arch = Config.fromfile(self.config_dir / SEG_CONFIG).model.backbone.arch
        out_file = self.work_dir / 'pretrain' / 'convnext-demo_shapes-distilled.pth'
        # Its steps free and allocate the same tensors each step, as tools/train.py's do.
        self.echo(f'      {keep_freed_memory()}')
        start = time.perf_counter()
        pretrain_backbone(dict(arch), out_file, self._pretrain_settings(),
                          log=lambda line: self.echo(f'      {line}'), scenes=scenes)
        self.seconds['pretrain'] = time.perf_counter() - start
        return out_file

    def train(self, task: str, extra: Dict[str, object]) -> Path:
        """Train the ``'seg'`` or ``'det'`` demo model; return its last checkpoint."""
        s = self.settings
        config = self.config_dir / (SEG_CONFIG if task == 'seg' else DET_CONFIG)
        work_dir = self.work_dir / ('upernet' if task == 'seg' else 'mask_rcnn')
        options = _data_options(task, self.data_dir)
        options.update(_iters_options(s.seg_iters if task == 'seg' else s.det_iters))
        options.update(extra)
        # A new demo run replaces the earlier demo's checkpoints (train.py --restart would keep
        # them in a folder of their own, one more per run).
        for old in [*work_dir.glob('*.pth'), work_dir / 'last_checkpoint']:
            old.unlink(missing_ok=True)
        self._tool(f'train_{task}', 'train.py',
                   [str(config), '--work-dir', str(work_dir), *format_cfg_options(options)])
        return last_checkpoint(work_dir)

    def test(self, task: str, checkpoint: Path) -> Dict[str, float]:
        """Evaluate a checkpoint and draw its predictions; return tools/test.py's metrics."""
        config = self.config_dir / (SEG_CONFIG if task == 'seg' else DET_CONFIG)
        test_dir = self.work_dir / ('upernet' if task == 'seg' else 'mask_rcnn') / 'test'
        shutil.rmtree(test_dir, ignore_errors=True)  # an earlier demo's, drawn anew below
        options = _data_options(task, self.data_dir)
        # Only the gallery's images are drawn: drawing took twice the inference's time.
        self._tool(f'test_{task}', 'test.py',
                   [str(config), str(checkpoint), '--work-dir', str(test_dir), '--show-dir',
                    str(test_dir / 'show'), '--show-limit', str(self.settings.gallery_images),
                    *format_cfg_options(options)])
        return read_test_metrics(test_dir)

    def pictures(self) -> Dict[str, Path]:
        """Step 5: training curves and the prediction gallery."""
        seg_records = read_scalars(self.work_dir / 'upernet')
        det_records = read_scalars(self.work_dir / 'mask_rcnn')
        curves = plot_curves([
            dict(title='UperNet: training losses', records=seg_records, keys=SEG_LOSSES,
                 ylabel='loss', smooth=5),
            dict(title='UperNet: validation', records=seg_records, keys=('mIoU',),
                 ylabel='mIoU (%)'),
            dict(title='Mask R-CNN: training losses', records=det_records, keys=DET_LOSSES,
                 ylabel='loss', smooth=5),
            dict(title='Mask R-CNN: validation', records=det_records,
                 keys=('coco/bbox_mAP', 'coco/segm_mAP'), ylabel='COCO AP@[.5:.95]'),
        ], self.work_dir / 'curves.png')
        count = self.settings.gallery_images
        seg_files = _drawn(self.work_dir / 'upernet' / 'test' / 'show', count)
        det_all = _drawn(self.work_dir / 'mask_rcnn' / 'test' / 'show', self.settings.num_val)
        # The same validation images in both columns: match by file name.
        det_by_stem = {p.stem: p for p in det_all}
        rows = []
        for seg_file in seg_files:
            stem = next((s for s in det_by_stem if s in seg_file.stem), None)
            if stem is not None:
                rows.append((det_by_stem[stem], seg_file))
        if not rows:
            rows = list(zip(det_all[:count], seg_files))
        gallery = plot_gallery(
            [('Mask R-CNN: ground truth | prediction', [d for d, _ in rows]),
             ('UperNet: ground truth | prediction', [s for _, s in rows])],
            self.work_dir / 'predictions.png')
        return {'curves': curves, 'predictions': gallery}

    def run(self) -> DemoResult:
        """All steps; returns the summary line and where the pictures are."""
        start = time.perf_counter()
        cpu = cpu_support.describe()
        self.echo(f"machine: {cpu['cpu_model']}, {cpu['cpu_capability']}, bf16 "
                  f"{'native' if cpu['native_bf16'] else 'emulated'}, {os.cpu_count()} logical "
                  f"CPUs, {cpu['threads_per_core'] or '?'} per core (the demo's times depend on it)")
        scenes = self.generate_data()
        self.echo('[2/5] pre-training the backbone on rendered shapes (the demo\'s '
                  'ImageNet-22k): a conv-BN-ReLU teacher, then hint distillation')
        pretrained = self.pretrain(scenes)
        how = 'side by side' if self.settings.parallel else 'one after the other'
        self.echo(f'[3/5] training UperNet (semantic segmentation) and Mask R-CNN (instances) '
                  f'from it with tools/train.py, {how}')
        self.echo('[4/5] evaluating each with tools/test.py as soon as its training ends: mIoU '
                  '(mmseg IoUMetric), COCO bbox and segm AP (mmdet CocoMetric)')
        seg_extra = {'model.backbone.init_cfg.checkpoint': pretrained,
                     **self.settings.extra_seg_options}
        det_extra = {'model.backbone.init_cfg.checkpoint': pretrained,
                     **self.settings.extra_det_options}
        # One model's evaluation runs beside the other's training, not after both trainings.
        seg_metrics, det_metrics = self._both(
            lambda: self.test('seg', self.train('seg', seg_extra)),
            lambda: self.test('det', self.train('det', det_extra)))
        self.echo('[5/5] drawing curves and predictions')
        pictures = self.pictures()
        self.seconds['total'] = time.perf_counter() - start
        return DemoResult(summary_from_metrics(det_metrics, seg_metrics), det_metrics,
                          seg_metrics, pictures, dict(self.seconds))
