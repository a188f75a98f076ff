"""``deploy.json``: what a runner needs beside ``model.onnx`` (input policy, mean/std, classes)."""
import json
from pathlib import Path
from typing import Optional, Sequence, Tuple


META_FILE = 'deploy.json'
# What every deploy.json holds (the task-specific parts are checked where they are used).
_REQUIRED_KEYS = ('task', 'scope', 'input', 'inputs', 'outputs')
# Test-pipeline steps that read annotations: the runner has only the image.
_ANNOTATION_STEPS = ('LoadAnnotations',)


def _test_pipeline(cfg) -> list:
    pipeline = cfg.get('test_pipeline') or cfg.test_dataloader.dataset.pipeline
    steps = []
    for step in pipeline:
        step = dict(step)
        step.pop('_scope_', None)
        if step['type'] in _ANNOTATION_STEPS:
            continue
        steps.append(_plain(step))
    return steps


def _plain(value):
    # Config values (tuples, ConfigDicts) as JSON-friendly lists and dicts.
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def build_meta(cfg, scope: str, task: str, inputs: Sequence[str], outputs: Sequence[str],
               shape: Optional[Tuple[int, int]], fp16: bool, opset: int, config: str,
               dataset_meta: dict) -> dict:
    """The JSON-ready description of an export of ``cfg`` (see README "Deploy").

    ``dataset_meta``: ``{'classes', 'palette'}``
    (:func:`~convnext_dense.runtime.class_names.drawing_meta`).
    """
    pre = cfg.model.data_preprocessor
    pad_size = None
    if scope == 'mmdet':
        divisor = pre.get('pad_size_divisor', 1)
    else:
        divisor = (pre.get('test_cfg') or {}).get('size_divisor', 1) or 1
        pad_size = (pre.get('test_cfg') or {}).get('size')
    meta = {
        'task': task,
        'scope': scope,
        'config': config,
        'opset': opset,
        'fp16': fp16,
        'inputs': list(inputs),
        'outputs': list(outputs),
        'input': {
            'shape': list(shape) if shape else None,  # None: any size (dynamic export)
            'mean': list(pre.get('mean', (0, 0, 0))),
            'std': list(pre.get('std', (1, 1, 1))),
            'bgr_to_rgb': bool(pre.get('bgr_to_rgb', False) or pre.get('rgb_to_bgr', False)),
            'pad_size_divisor': int(divisor),
            'pad_size': list(pad_size) if pad_size else None,  # mmseg's test_cfg.size
            'pad_value': float(pre.get('pad_value', pre.get('pad_val', 0))),
        },
        'test_pipeline': _test_pipeline(cfg),
        'classes': list(dataset_meta['classes']),
        'palette': _plain(dataset_meta['palette']),
    }
    if task == 'segmenter':
        test_cfg = cfg.model.test_cfg
        meta['segmenter'] = {
            'mode': test_cfg.get('mode', 'whole'),
            'crop_size': list(test_cfg['crop_size']) if 'crop_size' in test_cfg else None,
            'stride': list(test_cfg['stride']) if 'stride' in test_cfg else None,
            'align_corners': bool(cfg.model.decode_head.get('align_corners', False)),
        }
    if task == 'detector':
        meta['detector'] = {'mask_thr_binary': float(cfg.model.test_cfg.rcnn.mask_thr_binary),
                            'boxes': 'x1 y1 x2 y2 in input pixels (divide by scale_factor)'}
    return meta


def write_meta(out_dir: Path, meta: dict) -> Path:
    path = Path(out_dir) / META_FILE
    path.write_text(json.dumps(meta, indent=2) + '\n', encoding='utf-8')
    return path


def read_meta(model_dir) -> dict:
    """The ``deploy.json`` of an export folder.

    Raises:
        FileNotFoundError: there is none.
        ValueError: it is not JSON, or not the one ``tools/export.py`` writes (keys missing).
    """
    path = Path(model_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: {model_dir} is not a folder written by '
                                'tools/export.py')
    try:
        meta = json.loads(path.read_text(encoding='utf-8'))
    except ValueError as err:
        raise ValueError(f'{path} is not valid JSON ({err}): export again with '
                         'tools/export.py') from None
    missing = [k for k in _REQUIRED_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ValueError(f'{path} lacks {missing}: it was not written by tools/export.py '
                         '(export again)')
    return meta
