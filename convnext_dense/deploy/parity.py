"""Check an export against PyTorch on a dataset's images (``tools/onnx_parity.py``).

Detectors: every PyTorch detection above a score is looked for among the ONNX ones (same label,
box IoU, score difference), and COCO bbox / segm AP (mmdet ``CocoMetric``) is computed from both.
Segmenters: the share of pixels whose predicted class is the same.
"""
import os
from pathlib import Path
from typing import Dict, Sequence, Union

import torch

from ..runtime.config import load_config, task_scope
from .export import build_model
from .meta import read_meta
from .runtime import OnnxModel

PathLike = Union[str, os.PathLike]


def match_detections(reference, exported, score_thr: float = 0.05) -> Dict[str, float]:
    """Match ``reference``'s detections above ``score_thr`` to ``exported``'s (same label).

    Returns:
        ``count``, ``unmatched`` (no ONNX box of the same label with IoU >= 0.99 and score within
        1e-3), ``worst_iou`` and ``max_score_diff`` over the best-matching boxes.
    """
    from mmdet.structures.bbox import bbox_overlaps
    ref, out = reference.pred_instances, exported.pred_instances
    keep = ref.scores > score_thr
    ref_boxes, ref_scores, ref_labels = ref.bboxes[keep], ref.scores[keep], ref.labels[keep]
    if len(ref_boxes) == 0:
        return dict(count=0, unmatched=0, worst_iou=1.0, max_score_diff=0.0)
    if len(out.bboxes) == 0:
        return dict(count=len(ref_boxes), unmatched=len(ref_boxes), worst_iou=0.0,
                    max_score_diff=float('inf'))
    ious = bbox_overlaps(ref_boxes, out.bboxes)
    same_label = ref_labels[:, None] == out.labels[None, :]
    ious = torch.where(same_label, ious, torch.zeros_like(ious))
    score_diff = (ref_scores[:, None] - out.scores[None, :]).abs()
    matched = (ious >= 0.99) & (score_diff <= 1e-3)
    best = ious.max(dim=1)
    return dict(count=len(ref_boxes), unmatched=int((~matched.any(dim=1)).sum()),
                worst_iou=float(best.values.min()),
                max_score_diff=float(score_diff.gather(1, best.indices[:, None]).max()))


def detector_parity(config: PathLike, checkpoint: PathLike, onnx_dir: PathLike,
                    images: Sequence[PathLike], ann_file: PathLike,
                    score_thr: float = 0.05) -> Dict[str, float]:
    """PyTorch (``inference_detector``) against the export on ``images`` of a COCO ``ann_file``."""
    import json
    from mmdet.apis import inference_detector
    from mmdet.evaluation import CocoMetric
    _check_same_task(config, onnx_dir)
    model, cfg, _ = build_model(config, checkpoint)
    model.cfg = cfg
    runtime = OnnxModel(onnx_dir)
    ids = {Path(i['file_name']).name: i['id']
           for i in json.loads(Path(ann_file).read_text())['images']}
    unknown = [Path(image).name for image in images if Path(image).name not in ids]
    if unknown:
        raise ValueError(f'{len(unknown)} of the images are not in {ann_file} '
                         f'({", ".join(unknown[:4])}{", ..." if len(unknown) > 4 else ""}): give '
                         'the images the annotations describe')
    metrics = {}
    for side in ('pytorch', 'onnx'):
        metrics[side] = CocoMetric(ann_file=str(ann_file), metric=['bbox', 'segm'])
        metrics[side].dataset_meta = {'classes': tuple(runtime.meta['classes'])}
    totals = dict(count=0, unmatched=0, worst_iou=1.0, max_score_diff=0.0)
    for image in images:
        with torch.no_grad():
            reference = inference_detector(model, str(image))
        exported = runtime.predict(image)
        stats = match_detections(reference, exported, score_thr)
        totals['count'] += stats['count']
        totals['unmatched'] += stats['unmatched']
        totals['worst_iou'] = min(totals['worst_iou'], stats['worst_iou'])
        totals['max_score_diff'] = max(totals['max_score_diff'], stats['max_score_diff'])
        for side, sample in (('pytorch', reference), ('onnx', exported)):
            sample.set_metainfo({'img_id': ids[Path(image).name]})
            metrics[side].process({}, [sample.to_dict()])
    for side, metric in metrics.items():
        result = metric.evaluate(len(images))
        totals[f'{side}_bbox_mAP'] = result['coco/bbox_mAP']
        totals[f'{side}_segm_mAP'] = result['coco/segm_mAP']
    return totals


def segmenter_parity(config: PathLike, checkpoint: PathLike, onnx_dir: PathLike,
                     images: Sequence[PathLike]) -> Dict[str, float]:
    """PyTorch (``inference_model``) against the export: the share of identical pixels."""
    from mmseg.apis import inference_model
    _check_same_task(config, onnx_dir)
    model, cfg, _ = build_model(config, checkpoint)
    model.cfg = cfg
    runtime = OnnxModel(onnx_dir)
    same = total = 0
    for image in images:
        with torch.no_grad():
            reference = inference_model(model, str(image)).pred_sem_seg.data
        predicted = runtime.predict(image).pred_sem_seg.data
        same += int((predicted == reference).sum())
        total += reference.numel()
    return dict(pixels=total, identical=same / total)


def _check_same_task(config: PathLike, onnx_dir: PathLike) -> None:
    """Refuse a config of the other task than the export's, before anything is built."""
    scope, meta = task_scope(load_config(str(config))), read_meta(onnx_dir)
    if scope != meta['scope']:
        raise ValueError(f"{config} is an {scope} config, and {onnx_dir} holds an export of an "
                         f"{meta['scope']} {meta['task']}: give the config the export was made "
                         'from')
