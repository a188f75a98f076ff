"""mmcv's RoIAlign (average pooling) on channels-last feature maps, for the CPU.

mmcv 2.1's CPU ``RoIAlign`` reads ``(N, C, H, W)`` memory, so a channels-last map must be copied
first, and it runs on one thread, interpolating every channel on its own: in a training step of
the demo's Mask R-CNN (one thread, Xeon with AMX) its forward and backward took about 145 ms of
630. Here the sampling points are computed once per RoI and the pooling is a sparse matrix, one
row per output bin and one column per pixel, holding the bilinear weights divided by the
samples per bin, times the ``(pixels, channels)`` view of the channels-last map; the backward
pass is the transposed matrix times the gradient (torch's sparse CSR matmul, MKL's where torch
has it). The sampling is mmcv's exactly (``aligned``, ``sampling_ratio`` 0 for its adaptive
grid, points beyond the map by more than a pixel left out, ``count`` over all points); the sums
run in another order, so results match mmcv's to float rounding.
"""
import warnings
from typing import Tuple

import torch
from mmcv.ops import RoIAlign
from torch import nn
from torch.autograd.function import once_differentiable

SUPPORTED_DTYPES = (torch.float32, torch.float64)


def _axis_samples(start: torch.Tensor, bin_size: torch.Tensor, grid: int, bins: int,
                  limit: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Interpolation along one axis for RoIs sharing ``grid`` samples per bin.

    Returns the two neighbouring pixel indices ``(R, bins, grid, 2)`` and their weights, zero for
    samples beyond the map by more than a pixel, computed in mmcv's order of float operations.
    """
    index = torch.arange(bins, dtype=start.dtype).view(1, bins, 1)
    sample = torch.arange(grid, dtype=start.dtype).view(1, 1, grid)
    start, bin_size = start.view(-1, 1, 1), bin_size.view(-1, 1, 1)
    coord = start + index * bin_size + (sample + 0.5) * bin_size / grid
    inside = (coord >= -1.0) & (coord <= limit)
    coord = coord.clamp(min=0)
    low = coord.long()
    at_edge = low >= limit - 1
    low = torch.where(at_edge, limit - 1, low)
    coord = torch.where(at_edge, low.to(coord.dtype), coord)
    high = torch.where(at_edge, low, low + 1)
    frac = coord - low
    weights = torch.stack([1.0 - frac, frac], -1) * inside.unsqueeze(-1)
    return torch.stack([low, high], -1), weights


def sampling_matrix(rois: torch.Tensor, map_shape: Tuple[int, int, int],
                    output_size: Tuple[int, int], spatial_scale: float, sampling_ratio: int,
                    aligned: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """The RoIAlign pooling of ``rois`` as a sparse matrix over the maps' pixels.

    Args:
        rois: ``(R, 5)`` boxes, batch index then ``x1, y1, x2, y2`` in image coordinates.
        map_shape: ``(N, H, W)`` of the feature maps.
        output_size: Bins per RoI, ``(rows, columns)``.
        spatial_scale: Map size over image size.
        sampling_ratio: Samples per bin along each axis; 0: ``ceil`` of the bin's size.
        aligned: Shift the boxes by half a pixel (mmcv's and Detectron2's ``aligned``).

    Returns:
        The ``(R * rows * columns, N * H * W)`` CSR matrix with its rows grouped by sampling grid,
        and for each of its rows the output row it computes (RoI-major, then the bins row-major).

    Raises:
        ValueError: a RoI with a coordinate that is no finite number
            (:func:`channels_last_roi_align` pools those to NaN instead), or an ``aligned`` RoI
            with a negative width or height (mmcv asserts there).
    """
    num_maps, height, width = map_shape
    pooled_h, pooled_w = output_size
    rois = rois.detach()
    not_finite = (~torch.isfinite(rois[:, 1:])).any(1).nonzero()
    if len(not_finite):
        index = int(not_finite[0])
        raise ValueError(f'RoIAlign needs finite box coordinates; RoI {index} is '
                         f'{rois[index].tolist()}')
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if aligned:
        bad = ((roi_w < 0) | (roi_h < 0)).nonzero()
        if len(bad):
            index = int(bad[0])
            raise ValueError(f'RoIAlign (aligned=True) needs x2 >= x1 and y2 >= y1; RoI {index} '
                             f'is {rois[index].tolist()}')
    else:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full(rois.shape[:1], sampling_ratio, dtype=torch.long)
    else:
        grid_h, grid_w = torch.ceil(bin_h).long(), torch.ceil(bin_w).long()
    batch = rois[:, 0].long()
    bins = pooled_h * pooled_w
    # RoIs with the same grid are sampled together: a point's weight is the product of its row
    # and column weights (mmcv's w1..w4), its pixel the sum of their offsets.
    key = grid_h * (int(grid_w.max()) + 1 if len(rois) else 1) + grid_w
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    columns, values, counts = [], [], []
    for group_key in torch.unique_consecutive(sorted_key).tolist():
        members = order[sorted_key == group_key]
        gh, gw = int(grid_h[members[0]]), int(grid_w[members[0]])
        if gh * gw == 0:  # no sample: the bins pool to 0, as mmcv's
            counts.append(torch.zeros(len(members) * bins, dtype=torch.long))
            continue
        rows, row_weights = _axis_samples(y1[members], bin_h[members], gh, pooled_h, height)
        cols, col_weights = _axis_samples(x1[members], bin_w[members], gw, pooled_w, width)
        row_weights = row_weights / (gh * gw)
        # (RoI, bin row, bin column, sample row, sample column, neighbour row, neighbour column)
        row_shape = (len(members), pooled_h, 1, gh, 1, 2, 1)
        col_shape = (len(members), 1, pooled_w, 1, gw, 1, 2)
        pixel = (batch[members].view(-1, 1, 1, 1, 1, 1, 1) * height + rows.view(row_shape)) * width
        columns.append((pixel + cols.view(col_shape)).reshape(-1))
        values.append((row_weights.view(row_shape) * col_weights.view(col_shape)).reshape(-1))
        counts.append(torch.full((len(members) * bins,), 4 * gh * gw, dtype=torch.long))
    crow = torch.zeros(len(rois) * bins + 1, dtype=torch.long)
    if counts:
        torch.cumsum(torch.cat(counts), 0, out=crow[1:])
    column = torch.cat(columns) if columns else torch.zeros(0, dtype=torch.long)
    value = torch.cat(values) if values else rois.new_zeros(0)
    matrix = _csr(crow, column, value, (len(rois) * bins, num_maps * height * width))
    output_rows = (order.view(-1, 1) * bins + torch.arange(bins)).view(-1)
    return matrix, output_rows


def transposed(matrix: torch.Tensor) -> torch.Tensor:
    """The CSR matrix's transpose as a CSR matrix (torch's own transpose is CSC, and its matmul
    converts that on every call)."""
    rows, columns = matrix.shape
    crow, column, value = matrix.crow_indices(), matrix.col_indices(), matrix.values()
    row = torch.repeat_interleave(torch.arange(rows), crow.diff(), output_size=len(column))
    # int32 keys sort twice as fast; pixel indices of a batch of maps stay far below 2**31.
    order = torch.sort(column.int() if columns < 2 ** 31 else column).indices
    new_crow = torch.zeros(columns + 1, dtype=torch.long)
    torch.cumsum(torch.bincount(column, minlength=columns), 0, out=new_crow[1:])
    return _csr(new_crow, row[order], value[order], (columns, rows))


def _csr(crow: torch.Tensor, column: torch.Tensor, value: torch.Tensor,
         size: Tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter('ignore', UserWarning)
        return torch.sparse_csr_tensor(crow, column, value, size=size)


class ChannelsLastRoIAlignFunction(torch.autograd.Function):
    """Average RoIAlign of a channels-last map; see the module docstring."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, rois: torch.Tensor, output_size: Tuple[int, int],
                spatial_scale: float, sampling_ratio: int, aligned: bool) -> torch.Tensor:
        num_maps, channels, height, width = features.shape
        # A model whose weights went NaN proposes NaN boxes: they pool to NaN, so the loss is
        # NaN and the NaN-loss check stops the run, as with mmcv's op.
        not_finite = ~torch.isfinite(rois[:, 1:]).all(1)
        any_not_finite = bool(not_finite.any())
        if any_not_finite:
            rois = rois.masked_fill(not_finite.unsqueeze(1) & (torch.arange(5) > 0), 0.0)
        matrix, output_rows = sampling_matrix(rois, (num_maps, height, width), output_size,
                                              spatial_scale, sampling_ratio, aligned)
        matrix = matrix.to(features.dtype)
        pixels = features.permute(0, 2, 3, 1).reshape(-1, channels)  # a view when channels-last
        pooled = features.new_empty(matrix.shape[0], channels)
        pooled[output_rows] = torch.sparse.mm(matrix, pixels)
        if any_not_finite:
            pooled.view(len(rois), -1, channels)[not_finite] = float('nan')
        ctx.save_for_backward(matrix, output_rows)
        ctx.map_shape = (num_maps, height, width, channels)
        # (R * bins, C) -> (R, C, rows, columns), channels-last
        return pooled.view(len(rois), *output_size, channels).permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        matrix, output_rows = ctx.saved_tensors
        num_maps, height, width, channels = ctx.map_shape
        grad_rows = grad.permute(0, 2, 3, 1).reshape(-1, channels)[output_rows]
        grad_pixels = torch.sparse.mm(transposed(matrix), grad_rows)
        # (N * H * W, C) -> (N, C, H, W), channels-last
        grad_features = grad_pixels.view(num_maps, height, width, channels).permute(0, 3, 1, 2)
        return grad_features, None, None, None, None, None


def channels_last_roi_align(features: torch.Tensor, rois: torch.Tensor,
                            output_size: Tuple[int, int], spatial_scale: float = 1.0,
                            sampling_ratio: int = 0, aligned: bool = True) -> torch.Tensor:
    """mmcv's ``roi_align(..., pool_mode='avg')`` computed on the channels-last layout.

    Args:
        features: ``(N, C, H, W)`` float32 or float64 maps on the CPU, best channels-last (any
            other layout is copied to it).
        rois: ``(R, 5)`` boxes, batch index then ``x1, y1, x2, y2``.
        output_size: Bins per RoI, ``(rows, columns)``.
        spatial_scale: Map size over image size.
        sampling_ratio: Samples per bin along each axis; 0: adaptive, as mmcv's.
        aligned: Shift the boxes by half a pixel, as mmcv's default.

    Returns:
        ``(R, C, rows, columns)`` pooled features, channels-last; NaN for RoIs with a coordinate
        that is no finite number.

    Raises:
        ValueError: maps or RoIs of another shape, dtype or device, or an ``aligned`` RoI with a
            negative width or height.
    """
    if features.dim() != 4 or features.device.type != 'cpu' or (
            features.dtype not in SUPPORTED_DTYPES):
        raise ValueError('channels_last_roi_align takes 4-D float32 or float64 CPU maps, got '
                         f'{tuple(features.shape)} {features.dtype} on {features.device}')
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f'rois must be (R, 5): batch index, x1, y1, x2, y2; got '
                         f'{tuple(rois.shape)}')
    features = features.contiguous(memory_format=torch.channels_last)
    return ChannelsLastRoIAlignFunction.apply(features, rois.to(features.dtype),
                                              tuple(output_size), float(spatial_scale),
                                              int(sampling_ratio), bool(aligned))


class ChannelsLastRoIAlign(RoIAlign):
    """mmcv's ``RoIAlign`` with average pooling, computing on channels-last CPU maps.

    Float32 / float64 CPU maps go through :func:`channels_last_roi_align` outside tracing and ONNX
    export (mmcv's op has the ONNX symbolic); anything else through mmcv's op, on a contiguous
    copy. Made by :func:`use_channels_last_roi_align`.
    """

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        if (input.dim() == 4 and input.device.type == 'cpu' and input.dtype in SUPPORTED_DTYPES
                and self.pool_mode == 'avg' and not self.use_torchvision
                and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()):
            return channels_last_roi_align(input, rois, self.output_size, self.spatial_scale,
                                           self.sampling_ratio, self.aligned)
        return super().forward(input.contiguous(), rois)


def use_channels_last_roi_align(layer: nn.Module) -> bool:
    """Make an mmcv ``RoIAlign`` module a :class:`ChannelsLastRoIAlign`, in place.

    Only the class changes (``isinstance(layer, RoIAlign)`` still holds; no state changes).

    Returns:
        False, with the layer unchanged, where it is no plain mmcv ``RoIAlign`` with average
        pooling (max pooling, torchvision's op or another subclass of mmcv's stay mmcv's).
    """
    if isinstance(layer, ChannelsLastRoIAlign):
        return True
    if type(layer) is not RoIAlign or layer.pool_mode != 'avg' or layer.use_torchvision:
        return False
    layer.__class__ = ChannelsLastRoIAlign
    return True
