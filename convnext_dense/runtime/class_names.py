"""The class names and palette a model's predictions are drawn and exported with.

One rule for ``tools/image_demo.py``, ``tools/export.py`` (``deploy.json``) and so
``tools/onnx_demo.py``: the classes the checkpoint was trained with (its ``dataset_meta``, as
mmdet's ``init_detector`` and mmseg's ``init_model`` read them), else the config's test dataset's
(its ``metainfo``, else the dataset class's own). The palette is the checkpoint's, else the
config's, when it has a colour per class; else one colour per class drawn as mmseg's datasets
draw theirs (``numpy.random.seed(42)``), so every tool and run draws a class alike.
"""
from typing import Mapping, Optional

import numpy as np

from .config import innermost_dataset, task_registry

# mmseg's BaseSegDataset seeds its generated palettes with 42.
_PALETTE_SEED = 42


def config_dataset_meta(cfg, scope: str) -> dict:
    """``{'classes', 'palette'}`` of the config's test dataset (palette ``None`` if it has none).

    Raises:
        ValueError: the dataset type is not registered in ``scope`` and the config names no
            classes.
    """
    dataset, _ = innermost_dataset(cfg.test_dataloader.dataset)
    metainfo = dict(dataset.get('metainfo') or {})
    if not metainfo.get('classes'):
        # The dataset class's own (CocoDataset's 80 classes), from the task's registry.
        dataset_cls = task_registry(scope, 'DATASETS').get(dataset.type)
        if dataset_cls is None:
            raise ValueError(f'test_dataloader.dataset type {dataset.type!r} is not a registered '
                             f'{scope} dataset, and the config gives no metainfo classes')
        metainfo = dict(dataset_cls.METAINFO)
    palette = metainfo.get('palette')
    return {'classes': tuple(metainfo.get('classes', ())),
            'palette': [tuple(int(c) for c in color) for color in palette] if palette else None}


def checkpoint_dataset_meta(meta: Optional[Mapping]) -> dict:
    """``{'classes', 'palette'}`` from a checkpoint's ``meta`` (either may be ``None``).

    mmengine checkpoints keep them in ``meta['dataset_meta']``; mmdet 2.x / mmseg 0.x ones as
    ``meta['CLASSES']`` and ``meta['PALETTE']``.
    """
    meta = dict(meta or {})
    found = {str(k).lower(): v for k, v in dict(meta.get('dataset_meta') or {}).items()}
    classes = found.get('classes') or meta.get('CLASSES')
    palette = found.get('palette') or meta.get('PALETTE')
    return {'classes': tuple(classes) if classes else None,
            'palette': [tuple(int(c) for c in color) for color in palette] if palette else None}


def drawing_meta(cfg, scope: str, checkpoint_meta: Optional[Mapping] = None) -> dict:
    """``{'classes', 'palette'}`` to draw or export with, by the rule of this module."""
    config = config_dataset_meta(cfg, scope)
    saved = checkpoint_dataset_meta(checkpoint_meta)
    classes = saved['classes'] or config['classes']
    for palette in (saved['palette'], config['palette']):
        if palette and len(palette) == len(classes):
            return {'classes': classes, 'palette': palette}
    return {'classes': classes, 'palette': seeded_palette(len(classes))}


def seeded_palette(count: int) -> list:
    """``count`` colours as mmseg's datasets make them for classes without one (seed 42)."""
    state = np.random.RandomState(_PALETTE_SEED)
    return [tuple(int(c) for c in color) for color in state.randint(0, 255, size=(count, 3))]
