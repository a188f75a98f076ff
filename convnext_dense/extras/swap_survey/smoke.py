"""Build a config's model and run one optimizer step on a small synthetic batch (CPU).

Used by the tests and by ``tools/sweep_swap_backbone.py`` to show that a swapped config
trains, not only that it loads.
"""
import copy
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.utils import import_modules_from_strings

from ...runtime.config import stock_config_path, task_registry
from ...runtime.device import amp_to_fp32


def _ints_named(cfg: Any, name: str) -> List[int]:
    if isinstance(cfg, dict):
        found = [v for k, v in cfg.items() if k == name and isinstance(v, int) and v > 0]
        return found + [i for v in cfg.values() for i in _ints_named(v, name)]
    if isinstance(cfg, (list, tuple)):
        return [i for v in cfg for i in _ints_named(v, name)]
    return []


def _random_boxes(count: int, height: int, width: int) -> torch.Tensor:
    x1y1 = torch.rand(count, 2) * torch.tensor([width * 0.6, height * 0.6])
    wh = (0.2 + torch.rand(count, 2) * 0.2) * torch.tensor([width, height])
    return torch.cat([x1y1, x1y1 + wh], dim=1)


def detection_batch(num_classes: int, size: Sequence[int], batch_size: int = 2) -> Dict:
    """Images with boxes, box masks, proposals and a semantic map: any mmdet model finds its
    annotations in it."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData, PixelData
    height, width = size
    inputs, samples = [], []
    for index in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, height, width), dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(
            img_id=index, img_shape=(height, width), ori_shape=(height, width),
            scale_factor=(1.0, 1.0), flip=False, flip_direction=None, border=[0, 0, 0, 0]))
        boxes = _random_boxes(3, height, width)
        masks = torch.zeros(3, height, width, dtype=torch.uint8)
        for mask, (x1, y1, x2, y2) in zip(masks, boxes.round().int().tolist()):
            mask[y1:y2, x1:x2] = 1
        sample.gt_instances = InstanceData(
            bboxes=HorizontalBoxes(boxes), labels=torch.randint(0, num_classes, (3,)),
            masks=BitmapMasks(masks.numpy(), height, width))
        sample.ignored_instances = InstanceData(bboxes=HorizontalBoxes(torch.zeros(0, 4)),
                                                labels=torch.zeros(0, dtype=torch.long))
        proposals = torch.cat([boxes, _random_boxes(13, height, width)])
        sample.proposals = InstanceData(bboxes=proposals, scores=torch.rand(len(proposals)))
        sample.gt_sem_seg = PixelData(
            sem_seg=torch.randint(0, min(num_classes, 255), (1, height, width), dtype=torch.uint8))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def segmentation_batch(num_classes: int, size: Sequence[int], batch_size: int = 2) -> Dict:
    """Images with random label maps for an mmseg segmentor."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    height, width = size
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, height, width), dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(
            img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, height, width)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _without_weights(cfg: Any) -> None:
    """Drop ``init_cfg=dict(type='Pretrained', ...)`` everywhere below ``cfg``, in place."""
    if isinstance(cfg, dict):
        init = cfg.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        elif isinstance(init, list):
            cfg['init_cfg'] = [i for i in init if i.get('type') != 'Pretrained'] or None
        for value in cfg.values():
            _without_weights(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _without_weights(value)


def _for_cpu_step(cfg: Config, size: Sequence[int]) -> Config:
    """A copy that fits one offline CPU step: no AMP, fixed-size padding shrunk to the test
    images, no trained weights to download (the step does not need them), and distillation
    teachers' configs found where mmdet installs them (their stock paths are relative to an
    mmdet checkout)."""
    cfg = copy.deepcopy(cfg)
    preprocessor = cfg.model.get('data_preprocessor') or {}
    if preprocessor.get('size') is not None:
        preprocessor['size'] = tuple(size)
    for augment in preprocessor.get('batch_augments') or []:
        if 'size' in augment:
            augment['size'] = tuple(size)
    amp_to_fp32(cfg)  # AMP needs a GPU
    _without_weights(cfg.model)
    if cfg.model.get('teacher_ckpt'):
        cfg.model.teacher_ckpt = None
    teacher = cfg.model.get('teacher_config')
    if isinstance(teacher, str) and not osp.exists(teacher) and teacher.startswith('configs/'):
        cfg.model.teacher_config = stock_config_path(f'mmdet::{teacher[len("configs/"):]}')
    return cfg


def prepare_step(cfg: Config, size: Optional[Sequence[int]] = None, batch_size: int = 2
                 ) -> Tuple[torch.nn.Module, Any, Dict]:
    """Build the model and optimizer wrapper of ``cfg`` and a synthetic batch for them.

    Args:
        cfg: A full (merged) config.
        size: Image height and width; by default 128x128, or 256x256 for query-based models
            (DINO selects ``num_queries`` = 900 tokens, more than 128x128 images have).
        batch_size: Images in the batch.

    Returns:
        ``(model, optim_wrapper, batch)``, the model initialised (``init_weights``), in train
        mode and without SyncBN.
    """
    scope = cfg.get('default_scope')
    if size is None:
        size = (256, 256) if _ints_named(cfg.model, 'num_queries') else (128, 128)
    cfg = _for_cpu_step(cfg, size)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    with DefaultScope.overwrite_default_scope(scope):
        model = revert_sync_batchnorm(task_registry(scope).build(cfg.model))
        # Some modules allocate parameters with torch.empty and fill them only here.
        model.init_weights()
        model.train()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    num_classes = min(_ints_named(cfg.model, 'num_classes') or [2])
    if scope == 'mmseg':
        batch = segmentation_batch(num_classes, size, batch_size)
    else:
        batch = detection_batch(num_classes, size, batch_size)
    return model, optim_wrapper, batch


def run_step(model: torch.nn.Module, optim_wrapper: Any, batch: Dict, scope: str
             ) -> Dict[str, float]:
    """One ``model.train_step``; returns the logged losses.

    Raises:
        FloatingPointError: a loss is not finite.
    """
    with DefaultScope.overwrite_default_scope(scope):
        log_vars = model.train_step(batch, optim_wrapper)
    losses = {k: float(torch.as_tensor(v).detach()) for k, v in log_vars.items()}
    bad = {k: v for k, v in losses.items() if not torch.isfinite(torch.tensor(v))}
    if bad:
        raise FloatingPointError(f'non-finite losses after one step: {bad}')
    return losses


def train_one_step(cfg: Config, size: Optional[Sequence[int]] = None, batch_size: int = 2
                   ) -> Dict[str, float]:
    """:func:`prepare_step` then :func:`run_step`: build ``cfg`` and train it one step."""
    model, optim_wrapper, batch = prepare_step(cfg, size, batch_size)
    return run_step(model, optim_wrapper, batch, cfg.get('default_scope'))
