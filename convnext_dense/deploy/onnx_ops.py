"""NMS and RoIAlign that run mmcv's kernels in PyTorch and export as standard ONNX operators.

Under the TorchScript exporter each :class:`torch.autograd.Function` below is replaced by its
``symbolic``: ``NonMaxSuppression`` and ``RoiAlign`` (opset 16's ``half_pixel`` mode, which is
mmcv's ``aligned=True``), so onnxruntime needs no custom-op library.
"""
import torch
from mmcv.ops import nms as mmcv_nms
from mmcv.ops import roi_align as mmcv_roi_align

INT64 = 7  # onnx.TensorProto.INT64


def _const(g, values, dtype=torch.int64):
    return g.op('Constant', value_t=torch.tensor(values, dtype=dtype))


class _NMS(torch.autograd.Function):

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float):
        _, keep = mmcv_nms(boxes, scores, iou_threshold)
        return keep

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold):
        boxes = g.op('Unsqueeze', boxes, _const(g, [0]))
        scores = g.op('Unsqueeze', scores, _const(g, [0, 1]))
        selected = g.op('NonMaxSuppression', boxes, scores, _const(g, [2 ** 31 - 1]),
                        _const(g, [iou_threshold], torch.float32))
        return g.op('Gather', selected, _const(g, 2), axis_i=1)


class _RoIAlign(torch.autograd.Function):

    @staticmethod
    def forward(ctx, feats: torch.Tensor, rois: torch.Tensor, out_h: int, out_w: int,
                spatial_scale: float):
        return mmcv_roi_align(feats, rois, (out_h, out_w), spatial_scale, 0, 'avg', True)

    @staticmethod
    def symbolic(g, feats, rois, out_h, out_w, spatial_scale):
        batch = g.op('Cast', g.op('Gather', rois, _const(g, 0), axis_i=1), to_i=INT64)
        boxes = g.op('Slice', rois, _const(g, [1]), _const(g, [5]), _const(g, [1]))
        return g.op('RoiAlign', feats, boxes, batch, mode_s='avg', output_height_i=out_h,
                    output_width_i=out_w, sampling_ratio_i=0, spatial_scale_f=spatial_scale,
                    coordinate_transformation_mode_s='half_pixel')


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes (N, 4; x1 y1 x2 y2) that NMS keeps, highest score first."""
    return _NMS.apply(boxes, scores, float(iou_threshold))


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """mmcv's ``batched_nms`` (one NMS, each ``idxs`` group shifted apart); the kept indices."""
    # max over the boxes and 0: mmcv's boxes.max() for clipped boxes, and defined when empty.
    max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def roi_align(feats: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float):
    """mmcv ``RoIAlign(output_size, spatial_scale, sampling_ratio=0, 'avg', aligned=True)``."""
    out_h, out_w = output_size
    return _RoIAlign.apply(feats, rois, int(out_h), int(out_w), float(spatial_scale))
