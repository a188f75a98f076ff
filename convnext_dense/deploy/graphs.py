"""What gets exported: the backbone, an mmseg segmenter and an mmdet two-stage detector as plain
tensor-in, tensor-out modules whose forward the ONNX exporter can trace.

The detector graph is mmdet's test path written with traceable tensor ops (shapes come from the
input, so ``--dynamic`` works): RPN anchors and top-k per level, NMS across levels, RoIAlign per
FPN level, the box head, per-class NMS, the mask head. The same functions as mmdet's are used where
they trace (heads, ``map_roi_levels``); the rest follows mmdet 3.3's code line by line (see
``tests/test_deploy_detector.py`` for the parity it reaches).
"""
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ExportError
from .onnx_ops import batched_nms, roi_align

DET_OUTPUTS = ('boxes', 'scores', 'labels', 'masks')


class BackboneGraph(nn.Module):
    """``images (1, 3, H, W) -> the backbone's feature maps`` (one output per ``out_indices``)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.backbone(images))


def _pool_matrix(size: torch.Tensor, out: int, like: torch.Tensor) -> torch.Tensor:
    # (out, size) averaging weights of adaptive_avg_pool's bins [floor(i*n/o), ceil((i+1)*n/o)).
    index = torch.arange(out, device=like.device)
    start = torch.div(index * size, out, rounding_mode='floor')
    end = torch.div((index + 1) * size + out - 1, out, rounding_mode='floor')
    pos = torch.arange(size, device=like.device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(like) / (end - start)[:, None].to(like)


class AdaptiveAvgPool(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as two matrix products, exportable at any input size.

    The ONNX exporter refuses adaptive pooling whose output size does not divide the input
    (UperNet's pyramid pooling, scales 1, 2, 3, 6); the bins and their means are the same.
    """

    def __init__(self, output_size):
        super().__init__()
        size = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
        self.out_h, self.out_w = (int(v) for v in size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _pool_matrix(x.shape[2], self.out_h, x)
        cols = _pool_matrix(x.shape[3], self.out_w, x)
        return torch.matmul(torch.matmul(rows, x), cols.t())


def replace_adaptive_pools(model: nn.Module) -> int:
    """Swap every ``nn.AdaptiveAvgPool2d`` of ``model`` for :class:`AdaptiveAvgPool`; the count."""
    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                setattr(module, child_name, AdaptiveAvgPool(child.output_size))
                count += 1
    return count


class SegmenterGraph(nn.Module):
    """``images -> seg logits (1, num_classes, H, W)`` at the input size (mmseg ``encode_decode``).

    The segmenter's adaptive average pools are replaced by :class:`AdaptiveAvgPool`.
    """

    def __init__(self, segmenter: nn.Module):
        super().__init__()
        replace_adaptive_pools(segmenter)
        self.segmenter = segmenter

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.segmenter.decode_head(self.segmenter.extract_feat(images))
        return F.interpolate(logits, size=images.shape[2:], mode='bilinear',
                             align_corners=self.segmenter.decode_head.align_corners)


def _clip(boxes: torch.Tensor, img_shape: torch.Tensor) -> torch.Tensor:
    # delta2bbox's clamp_(min=0, max=img_shape) with the image shape as a graph input.
    limits = torch.stack([img_shape[1], img_shape[0], img_shape[1], img_shape[0]])
    return torch.minimum(boxes.clamp(min=0), limits)


def delta2bbox(rois: torch.Tensor, deltas: torch.Tensor, coder, img_shape: torch.Tensor,
               wh_ratio_clip: float = 16 / 1000) -> torch.Tensor:
    """mmdet's ``DeltaXYWHBBoxCoder.decode`` for (N, 4) rois and (N, 4) deltas, clipped."""
    means = deltas.new_tensor(coder.means).view(1, -1)
    stds = deltas.new_tensor(coder.stds).view(1, -1)
    denorm = deltas * stds + means
    dxy, dwh = denorm[:, :2], denorm[:, 2:]
    pxy = (rois[:, :2] + rois[:, 2:]) * 0.5
    pwh = rois[:, 2:] - rois[:, :2]
    max_ratio = float(np.abs(np.log(wh_ratio_clip)))
    gxy = pxy + pwh * dxy
    gwh = pwh * dwh.clamp(min=-max_ratio, max=max_ratio).exp()
    boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
    return _clip(boxes, img_shape) if coder.clip_border else boxes


def _check_coder(coder, where: str) -> None:
    name = type(coder).__name__
    if name != 'DeltaXYWHBBoxCoder' or coder.add_ctr_clamp:
        raise ExportError(f'{where}: box coder {name} (add_ctr_clamp={coder.add_ctr_clamp}) is '
                          'not supported; the exporter decodes DeltaXYWHBBoxCoder without '
                          'add_ctr_clamp')


def _check_nms(cfg, where: str) -> float:
    nms = cfg.nms
    if nms.get('type', 'nms') != 'nms' or nms.get('class_agnostic', False):
        raise ExportError(f"{where}: nms {dict(nms)} is not supported; only type='nms' (per "
                          'class) exports as ONNX NonMaxSuppression')
    return float(nms.iou_threshold)


class TwoStageGraph(nn.Module):
    """``images, img_shape (h, w) -> boxes (K, 4), scores (K,), labels (K,), masks (K, M, M)``.

    Mask R-CNN (``StandardRoIHead``) and Cascade Mask R-CNN (``CascadeRoIHead``). ``images`` is the
    normalised, padded batch of one image; ``img_shape`` its size before padding (boxes are clipped
    to it, as mmdet does). Boxes are in input pixels; ``masks`` are the mask head's probabilities
    for each box's class, to be pasted into the image by the runner (mmdet's ``_do_paste_mask``).
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        roi_head = getattr(detector, 'roi_head', None)
        head_type = type(roi_head).__name__
        if head_type not in ('StandardRoIHead', 'CascadeRoIHead'):
            raise ExportError(f'{type(detector).__name__} with roi_head {head_type}: only Mask '
                              'R-CNN (StandardRoIHead) and Cascade Mask R-CNN (CascadeRoIHead) '
                              'detectors export')
        if type(detector.rpn_head).__name__ != 'RPNHead':
            raise ExportError(f'rpn_head {type(detector.rpn_head).__name__}: only RPNHead exports')
        if not roi_head.with_mask:
            raise ExportError(f'{head_type} has no mask head: the exporter writes Mask R-CNN '
                              'and Cascade Mask R-CNN (boxes and masks)')
        self.detector = detector
        self.cascade = head_type == 'CascadeRoIHead'
        self.num_stages = roi_head.num_stages if self.cascade else 1
        self.rpn_cfg = detector.rpn_head.test_cfg
        self.rcnn_cfg = roi_head.test_cfg
        self.rpn_iou = _check_nms(self.rpn_cfg, 'rpn test_cfg')
        self.rcnn_iou = _check_nms(self.rcnn_cfg, 'rcnn test_cfg')
        _check_coder(detector.rpn_head.bbox_coder, 'rpn_head')
        for stage in range(self.num_stages):
            _check_coder(self._bbox_head(stage).bbox_coder, f'bbox_head[{stage}]')
            if getattr(self._bbox_head(stage), 'custom_cls_channels', False):
                raise ExportError(f'bbox_head[{stage}]: custom classification activations '
                                  'are not supported')
        if not detector.rpn_head.use_sigmoid_cls:
            raise ExportError('rpn_head with a softmax classifier is not supported')

    def _stage(self, attr: str, stage: int) -> nn.Module:
        module = getattr(self.detector.roi_head, attr)
        return module[stage] if self.cascade else module

    def _bbox_head(self, stage: int) -> nn.Module:
        return self._stage('bbox_head', stage)

    def forward(self, images: torch.Tensor, img_shape: torch.Tensor):
        feats = self.detector.extract_feat(images)
        proposals = self._proposals(feats, img_shape)
        rois = torch.cat([proposals.new_zeros(proposals.size(0), 1), proposals], dim=1)
        stage_scores = []
        for stage in range(self.num_stages):
            cls_score, bbox_pred = self._bbox_forward(stage, feats, rois)
            stage_scores.append(cls_score)
            if stage < self.num_stages - 1:
                labels = cls_score[:, :-1].argmax(dim=1)
                refined = self._decode_for_labels(stage, rois[:, 1:], bbox_pred, labels, img_shape)
                rois = torch.cat([rois[:, :1], refined], dim=1)
        cls_score = sum(stage_scores) / float(len(stage_scores))
        boxes, scores, labels = self._detections(cls_score, bbox_pred, rois, img_shape)
        masks = self._masks(feats, boxes, labels)
        return boxes, scores, labels, masks

    def _anchors(self, level: int, feat: torch.Tensor) -> torch.Tensor:
        # mmdet AnchorGenerator.single_level_grid_priors, with the grid size taken from the graph.
        generator = self.detector.rpn_head.prior_generator
        stride_w, stride_h = generator.strides[level]
        base = generator.base_anchors[level].to(feat)
        shift_x = torch.arange(0, feat.shape[3]).to(feat) * stride_w
        shift_y = torch.arange(0, feat.shape[2]).to(feat) * stride_h
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing='ij')
        xx, yy = xx.reshape(-1), yy.reshape(-1)
        shifts = torch.stack([xx, yy, xx, yy], dim=-1)
        return (base[None, :, :] + shifts[:, None, :]).view(-1, 4)

    def _proposals(self, feats: Sequence[torch.Tensor], img_shape: torch.Tensor) -> torch.Tensor:
        # mmdet RPNHead._predict_by_feat_single + _bbox_post_process, for one image.
        rpn_head = self.detector.rpn_head
        cls_scores, bbox_preds = rpn_head(feats)
        nms_pre = self.rpn_cfg.get('nms_pre', -1)
        all_scores, all_deltas, all_anchors, level_ids = [], [], [], []
        for level, (cls_score, bbox_pred) in enumerate(zip(cls_scores, bbox_preds)):
            scores = cls_score[0].permute(1, 2, 0).reshape(-1).sigmoid()
            deltas = bbox_pred[0].permute(1, 2, 0).reshape(-1, 4)
            anchors = self._anchors(level, cls_score)
            if nms_pre > 0:
                scores, order = scores.sort(descending=True)
                scores, order = scores[:nms_pre], order[:nms_pre]
                deltas, anchors = deltas[order], anchors[order]
            all_scores.append(scores)
            all_deltas.append(deltas)
            all_anchors.append(anchors)
            level_ids.append(torch.full_like(scores, level, dtype=torch.long))
        scores = torch.cat(all_scores)
        boxes = delta2bbox(torch.cat(all_anchors), torch.cat(all_deltas), rpn_head.bbox_coder,
                           img_shape)
        level_ids = torch.cat(level_ids)
        min_size = self.rpn_cfg.get('min_bbox_size', -1)
        if min_size >= 0:
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            valid = torch.nonzero((w > min_size) & (h > min_size)).squeeze(1)
            boxes, scores, level_ids = boxes[valid], scores[valid], level_ids[valid]
        keep = batched_nms(boxes, scores, level_ids, self.rpn_iou)
        return boxes[keep][:self.rpn_cfg.max_per_img]

    def _roi_feats(self, extractor: nn.Module, feats: Sequence[torch.Tensor],
                   rois: torch.Tensor) -> torch.Tensor:
        # SingleRoIExtractor: every RoI from the level its size maps to. All levels are pooled
        # for all RoIs and the right one picked (each RoI's value depends only on itself).
        num_levels = len(extractor.featmap_strides)
        target = extractor.map_roi_levels(rois, num_levels)
        out = None
        for level in range(num_levels):
            layer = extractor.roi_layers[level]
            pooled = roi_align(feats[level], rois, layer.output_size, layer.spatial_scale)
            if out is None:
                out = pooled
            else:
                out = torch.where((target == level)[:, None, None, None], pooled, out)
        return out

    def _bbox_forward(self, stage: int, feats, rois: torch.Tensor):
        extractor = self._stage('bbox_roi_extractor', stage)
        roi_feats = self._roi_feats(extractor, feats, rois)
        return self._bbox_head(stage)(roi_feats)

    def _decode_for_labels(self, stage: int, rois: torch.Tensor, bbox_pred: torch.Tensor,
                           labels: torch.Tensor, img_shape: torch.Tensor) -> torch.Tensor:
        # BBoxHead.regress_by_class (cascade refinement).
        head = self._bbox_head(stage)
        if not head.reg_class_agnostic:
            index = (labels * 4)[:, None] + torch.arange(4, device=labels.device)[None]
            bbox_pred = torch.gather(bbox_pred, 1, index)
        return delta2bbox(rois, bbox_pred, head.bbox_coder, img_shape)

    def _detections(self, cls_score, bbox_pred, rois, img_shape):
        # BBoxHead._predict_by_feat_single + multiclass_nms (boxes in input pixels).
        head = self._bbox_head(self.num_stages - 1)
        scores = F.softmax(cls_score, dim=-1)
        num_classes = scores.shape[1] - 1
        per_class = 1 if head.reg_class_agnostic else num_classes
        priors = rois[:, 1:][:, None, :].expand(-1, per_class, 4).reshape(-1, 4)
        boxes = delta2bbox(priors, bbox_pred.reshape(-1, 4), head.bbox_coder, img_shape)
        boxes = boxes.view(-1, per_class, 4).expand(-1, num_classes, 4).reshape(-1, 4)
        scores = scores[:, :-1].reshape(-1)
        labels = torch.arange(num_classes, device=scores.device)[None, :].expand(
            cls_score.shape[0], num_classes).reshape(-1)
        valid = torch.nonzero(scores > self.rcnn_cfg.score_thr).squeeze(1)
        boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
        keep = batched_nms(boxes, scores, labels, self.rcnn_iou)[:self.rcnn_cfg.max_per_img]
        return boxes[keep], scores[keep], labels[keep]

    def _masks(self, feats, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        rois = torch.cat([boxes.new_zeros(boxes.size(0), 1), boxes], dim=1)
        stage_masks: List[torch.Tensor] = []
        stages = range(self.num_stages) if self.cascade else [0]
        for stage in stages:
            roi_feats = self._roi_feats(self._stage('mask_roi_extractor', stage), feats, rois)
            mask_head = self._stage('mask_head', stage)
            logits = mask_head(roi_feats)
            if not mask_head.class_agnostic:
                index = labels[:, None, None, None].expand(-1, 1, *logits.shape[2:])
                logits = torch.gather(logits, 1, index)
            stage_masks.append(logits[:, 0].sigmoid())
        return sum(stage_masks) / float(len(stage_masks))
