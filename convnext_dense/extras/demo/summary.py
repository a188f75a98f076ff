"""The demo's one-line result: ``demo: bbox_mAP=<0..1> segm_mAP=<0..1> mIoU=<0..100>``."""
import math
import re
from typing import Dict, Mapping

# Metric names as mmdet's CocoMetric (prefix 'coco') and mmseg's IoUMetric log them.
DET_KEYS = {'bbox_mAP': 'coco/bbox_mAP', 'segm_mAP': 'coco/segm_mAP'}
SEG_KEY = 'mIoU'
THRESHOLDS = {'bbox_mAP': 0.25, 'segm_mAP': 0.25, 'mIoU': 60.0}
_RANGES = {'bbox_mAP': 1.0, 'segm_mAP': 1.0, 'mIoU': 100.0}
_LINE = re.compile(r'^demo: bbox_mAP=(\S+) segm_mAP=(\S+) mIoU=(\S+)$')


def _check(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f'{name} must be a number, got {value!r}')
    if not 0 <= value <= _RANGES[name]:
        raise ValueError(f'{name} {value!r} is out of range [0, {_RANGES[name]:g}]')
    return float(value)


def format_summary(bbox_map: float, segm_map: float, miou: float) -> str:
    """The summary line; COCO APs in [0, 1] with 3 decimals, mIoU in [0, 100] with 2.

    Raises:
        ValueError: a value outside its range.
        TypeError: a value that is not a number.
    """
    bbox_map, segm_map = _check('bbox_mAP', bbox_map), _check('segm_mAP', segm_map)
    miou = _check('mIoU', miou)
    return f'demo: bbox_mAP={bbox_map:.3f} segm_mAP={segm_map:.3f} mIoU={miou:.2f}'


def parse_summary(line: str) -> Dict[str, float]:
    """The three figures of a summary line (the inverse of :func:`format_summary`).

    Raises:
        ValueError: ``line`` is not a summary line.
    """
    match = _LINE.match(line.strip())
    if match is None:
        raise ValueError(f'not a demo summary line: {line!r}')
    return dict(zip(('bbox_mAP', 'segm_mAP', 'mIoU'), map(float, match.groups())))


def summary_from_metrics(det_metrics: Mapping[str, float], seg_metrics: Mapping[str, float]
                         ) -> str:
    """The summary line from tools/test.py's metrics of the two demo models.

    Raises:
        KeyError: a metric is missing (names what was there).
    """
    for metrics, keys in ((det_metrics, DET_KEYS.values()), (seg_metrics, [SEG_KEY])):
        missing = [k for k in keys if k not in metrics]
        if missing:
            raise KeyError(f'metrics {missing} not found; got {sorted(metrics)}')
    return format_summary(det_metrics[DET_KEYS['bbox_mAP']], det_metrics[DET_KEYS['segm_mAP']],
                          seg_metrics[SEG_KEY])


def below_thresholds(line: str) -> Dict[str, float]:
    """Figures of a summary line under the demo's targets (empty when all are met)."""
    figures = parse_summary(line)
    return {k: v for k, v in figures.items() if v < THRESHOLDS[k]}
