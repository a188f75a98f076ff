"""Mask R-CNN and Cascade Mask R-CNN exported to ONNX give mmdet's detections under onnxruntime.

Demo-size models with spread random weights (tests/deploy_helpers.py) on generated demo images
of several sizes, exported with ``--dynamic``; the reference is mmdet's own ``inference_detector``.
"""
import json
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch
from mmdet.apis import inference_detector
from mmdet.evaluation import CocoMetric
from mmdet.structures.bbox import bbox_overlaps

from convnext_dense.extras.demo.shapes import generate_shapes_dataset
from convnext_dense.deploy import OnnxModel, export_model
from convnext_dense.deploy.export import build_model
from deploy_helpers import (DET_CONFIG, ROOT, coco_image_ids, random_checkpoint,
                            small_cascade_config, with_data_root)

SCORE_THR = 0.05  # every PyTorch detection above it must be found by onnxruntime


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('deploy_det') / 'shapes'
    generate_shapes_dataset(root, seed=0, num_train=1, num_val=6)
    return root


def _predict_both(config, checkpoint, onnx_dir, images):
    model, cfg, _ = build_model(config, checkpoint)
    model.cfg = cfg
    runtime = OnnxModel(onnx_dir)
    pairs = []
    for image in images:
        with torch.no_grad():
            reference = inference_detector(model, str(image))
        pairs.append((reference, runtime.predict(image)))
    return pairs


def _assert_matched(reference, exported):
    ref, out = reference.pred_instances, exported.pred_instances
    keep = ref.scores > SCORE_THR
    ref_boxes, ref_scores, ref_labels = ref.bboxes[keep], ref.scores[keep], ref.labels[keep]
    assert len(ref_boxes) > 0, 'the reference has no detection to compare'
    ious = bbox_overlaps(ref_boxes, out.bboxes)
    same = (ref_labels[:, None] == out.labels[None, :]) & (ious >= 0.99) & (
        (ref_scores[:, None] - out.scores[None, :]).abs() <= 1e-3)
    unmatched = (~same.any(dim=1)).nonzero().flatten().tolist()
    best = torch.where(same, ious, torch.zeros_like(ious)).max(dim=1)
    score_gap = (ref_scores - out.scores[best.indices]).abs().max().item()
    print(f'{len(ref_boxes)} detections > {SCORE_THR}: worst matched IoU {best.values.min():.6f}, '
          f'largest score difference {score_gap:.2e}')
    assert not unmatched, (f'{len(unmatched)} of {len(ref_boxes)} PyTorch detections have no '
                           f'ONNX match, e.g. {ref_boxes[unmatched[0]].tolist()} '
                           f'score {ref_scores[unmatched[0]]:.4f}')
    return len(ref_boxes), best.values.min().item()


def _coco_ap(samples, ann_file, image_ids, classes):
    metric = CocoMetric(ann_file=str(ann_file), metric=['bbox', 'segm'])
    metric.dataset_meta = {'classes': classes}
    for sample in samples:
        sample.set_metainfo({'img_id': image_ids[sample.img_path.split('/')[-1]]})
        metric.process({}, [sample.to_dict()])
    results = metric.evaluate(len(samples))
    return results['coco/bbox_mAP'], results['coco/segm_mAP']


@pytest.fixture(scope='module')
def mask_rcnn(shapes, tmp_path_factory):
    work = tmp_path_factory.mktemp('mask_rcnn_onnx')
    config = with_data_root(DET_CONFIG, 'det', shapes, work / 'config.py')
    checkpoint = random_checkpoint(config, work / 'model.pth')
    result = subprocess.run(
        [sys.executable, 'tools/export.py', str(config), str(checkpoint), '--out',
         str(work / 'onnx'), '--dynamic', '--shape', '128', '160'],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    images = sorted((shapes / 'coco' / 'val').glob('*.jpg'))
    return config, checkpoint, work / 'onnx', images


def test_mask_rcnn_graph_uses_standard_nms_and_roi_align(mask_rcnn):
    _, _, onnx_dir, _ = mask_rcnn
    graph = onnx.load(str(onnx_dir / 'model.onnx')).graph
    ops = {node.op_type for node in graph.node}
    assert {'NonMaxSuppression', 'RoiAlign'} <= ops
    assert all(node.domain in ('', 'ai.onnx') for node in graph.node)
    assert not any('mkldnn' in op.lower() for op in ops)
    assert [o.name for o in graph.output] == ['boxes', 'scores', 'labels', 'masks']


def test_mask_rcnn_matches_pytorch_detections_and_coco_ap(mask_rcnn, shapes):
    config, checkpoint, onnx_dir, images = mask_rcnn
    pairs = _predict_both(config, checkpoint, onnx_dir, images)
    sizes = {tuple(reference.ori_shape) for reference, _ in pairs}
    assert len(sizes) >= 2, sizes  # the dynamic export at several input sizes
    for reference, exported in pairs:
        _assert_matched(reference, exported)
        ref_masks = reference.pred_instances.masks
        assert ref_masks.shape[1:] == exported.pred_instances.masks.shape[1:]
    ann_file = shapes / 'coco' / 'annotations' / 'instances_val.json'
    ids = coco_image_ids(ann_file)
    classes = ('circle', 'triangle', 'square', 'star')
    ref_ap = _coco_ap([r for r, _ in pairs], ann_file, ids, classes)
    onnx_ap = _coco_ap([o for _, o in pairs], ann_file, ids, classes)
    print(f'COCO bbox/segm AP: PyTorch {ref_ap}, ONNX {onnx_ap}')
    assert abs(ref_ap[0] - onnx_ap[0]) <= 0.002 and abs(ref_ap[1] - onnx_ap[1]) <= 0.002


def test_mask_rcnn_masks_agree_with_pytorch(mask_rcnn):
    config, checkpoint, onnx_dir, images = mask_rcnn
    reference, exported = _predict_both(config, checkpoint, onnx_dir, images[:1])[0]
    ref, out = reference.pred_instances, exported.pred_instances
    # The same detections in the same order (scores are distinct): masks pixel by pixel.
    count = min(len(ref), len(out), 20)
    assert torch.allclose(ref.scores[:count], out.scores[:count], atol=1e-4)
    agree = (ref.masks[:count] == out.masks[:count]).float().mean().item()
    assert agree >= 0.999, agree


def test_onnx_demo_draws_detections(mask_rcnn, tmp_path):
    _, _, onnx_dir, images = mask_rcnn
    result = subprocess.run(
        [sys.executable, 'tools/onnx_demo.py', str(images[0]), str(onnx_dir), '--out-dir',
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    drawn = cv2.imread(str(tmp_path / 'vis' / f'{images[0].stem}.png'))
    assert drawn is not None and drawn.shape == cv2.imread(str(images[0])).shape
    assert not np.array_equal(drawn, cv2.imread(str(images[0])))  # something was drawn


def test_onnx_parity_tool_reports_matches_and_ap(mask_rcnn, shapes):
    config, checkpoint, onnx_dir, _ = mask_rcnn
    result = subprocess.run(
        [sys.executable, 'tools/onnx_parity.py', str(config), str(checkpoint), str(onnx_dir),
         str(shapes / 'coco' / 'val'), '--limit', '2', '--ann-file',
         str(shapes / 'coco' / 'annotations' / 'instances_val.json')],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.rindex('{\n  "images"'):])
    assert report['images'] == 2 and report['count'] == 200 and report['unmatched'] == 0
    assert report['worst_iou'] >= 0.99 and report['max_score_diff'] <= 1e-3
    assert report['pytorch_bbox_mAP'] == pytest.approx(report['onnx_bbox_mAP'], abs=0.002)


@pytest.mark.parametrize('limit', ['0', '-2'])
def test_onnx_parity_tool_refuses_a_limit_below_one(tmp_path, limit):
    result = subprocess.run(
        [sys.executable, 'tools/onnx_parity.py', 'config.py', 'model.pth', str(tmp_path),
         str(tmp_path), '--limit', limit], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert f"argument --limit: '{limit}' is not a positive integer" in result.stderr


def test_no_detection_gives_empty_results(tmp_path):
    # Background wins everywhere: the graph's NMS, RoIAlign and mask head see zero boxes.
    model, _, _ = build_model(DET_CONFIG, None)
    model.roi_head.bbox_head.fc_cls.bias.data[-1] = 30.0
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'model.pth')
    export_model(DET_CONFIG, tmp_path / 'model.pth', tmp_path / 'onnx', shape=(128, 160),
                 dynamic=True)
    image = np.random.default_rng(0).integers(0, 256, (150, 170, 3), dtype=np.uint8)
    result = OnnxModel(tmp_path / 'onnx').predict(image).pred_instances
    assert len(result) == 0 and result.masks.shape == (0, 150, 170)


@pytest.mark.slow
def test_cascade_mask_rcnn_matches_pytorch(shapes, tmp_path):
    config = small_cascade_config(tmp_path / 'cascade.py')
    checkpoint = random_checkpoint(config, tmp_path / 'cascade.pth')
    export_model(config, checkpoint, tmp_path / 'onnx', shape=(128, 160), dynamic=True)
    images = sorted((shapes / 'coco' / 'val').glob('*.jpg'))[:2]
    for reference, exported in _predict_both(config, checkpoint, tmp_path / 'onnx', images):
        count, worst_iou = _assert_matched(reference, exported)
        assert count > 0 and worst_iou >= 0.99
