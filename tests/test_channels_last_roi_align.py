"""Channels-last RoIAlign: mmcv's CPU op is the reference, forward and backward."""
import pytest
import torch
from mmcv.ops import RoIAlign, roi_align

from convnext_dense.runtime.channels_last import convert_to_channels_last
from convnext_dense.runtime.channels_last_roi_align import (ChannelsLastRoIAlign,
                                                            channels_last_roi_align,
                                                            use_channels_last_roi_align)


def _rois(count, batch, height, width, scale, seed=0):
    """Boxes of 0.2-40 map pixels, some reaching past the map's edges by several pixels."""
    g = torch.Generator().manual_seed(seed)
    size = (torch.rand(count, 2, generator=g) * 40 + 0.2) / scale
    x1 = (torch.rand(count, generator=g) * (width + 8) - 6) / scale
    y1 = (torch.rand(count, generator=g) * (height + 8) - 6) / scale
    index = torch.randint(0, batch, (count,), generator=g).float()
    return torch.stack([index, x1, y1, x1 + size[:, 0], y1 + size[:, 1]], 1)


def _both(features, rois, output_size, scale, sampling_ratio, aligned):
    """(mmcv's result, its input gradient), (ours, its input gradient) for one random gradient."""
    reference_input = features.detach().contiguous().requires_grad_()
    our_input = features.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    expected = roi_align(reference_input, rois, output_size, scale, sampling_ratio, 'avg', aligned)
    got = channels_last_roi_align(our_input, rois, output_size, scale, sampling_ratio, aligned)
    grad = torch.randn_like(expected)
    expected_grad, = torch.autograd.grad(expected, reference_input, grad)
    got_grad, = torch.autograd.grad(got, our_input, grad)
    return (expected, expected_grad), (got, got_grad)


@pytest.mark.parametrize('output_size, scale, sampling_ratio, aligned', [
    ((7, 7), 0.25, 0, True),
    ((14, 14), 0.125, 0, True),
    ((3, 5), 1.0, 2, True),
    ((7, 7), 0.25, 0, False),
    ((7, 7), 0.0625, 3, False),
])
def test_matches_mmcv_forward_and_backward(output_size, scale, sampling_ratio, aligned):
    torch.manual_seed(0)
    features = torch.randn(3, 16, 20, 28)
    rois = _rois(60, 3, 20, 28, scale)
    (expected, expected_grad), (got, got_grad) = _both(features, rois, output_size, scale,
                                                       sampling_ratio, aligned)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert got_grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-5, atol=1e-5)


def test_float64_and_empty_bins_and_no_rois():
    torch.manual_seed(0)
    features = torch.randn(2, 4, 9, 11, dtype=torch.float64)
    # A zero-size box (no sample: its bins pool to 0), one far outside the map, one inside.
    rois = torch.tensor([[0, 8., 8., 8., 8.], [1, -60., -60., -30., -40.], [1, 1., 2., 7., 9.]],
                        dtype=torch.float64)
    (expected, expected_grad), (got, got_grad) = _both(features, rois, (2, 3), 1.0, 0, True)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_grad, expected_grad)
    assert not got[:2].any() and got[2].abs().sum() > 0
    empty = channels_last_roi_align(features, rois[:0], (7, 7), 1.0)
    assert empty.shape == (0, 4, 7, 7)


def test_boxes_that_are_no_numbers_pool_to_nan():
    from convnext_dense.runtime.channels_last_roi_align import sampling_matrix
    torch.manual_seed(0)
    features = torch.randn(1, 4, 16, 16)
    rois = torch.tensor([[0, 1., 1., 9., 9.], [0, 1., float('nan'), 4., 4.],
                         [0, 2., 2., float('inf'), 5.]])
    got = channels_last_roi_align(features, rois, (3, 3), 1.0)
    assert torch.isnan(got[1:]).all()
    torch.testing.assert_close(got[:1], roi_align(features, rois[:1], (3, 3), 1.0, 0, 'avg', True))
    with pytest.raises(ValueError, match='needs finite box coordinates; RoI 1 is'):
        sampling_matrix(rois, (1, 16, 16), (3, 3), 1.0, 0, True)


def test_same_result_on_one_and_two_threads():
    torch.manual_seed(0)
    features = torch.randn(2, 32, 24, 24).contiguous(memory_format=torch.channels_last)
    rois = _rois(100, 2, 24, 24, 0.25)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = channels_last_roi_align(features, rois, (7, 7), 0.25)
        torch.set_num_threads(2)
        two = channels_last_roi_align(features, rois, (7, 7), 0.25)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(one, two)


@pytest.mark.parametrize('bad, message', [
    (dict(rois=torch.tensor([[0, 5., 5., 4., 9.]])), 'needs x2 >= x1 and y2 >= y1; RoI 0 is'),
    (dict(rois=torch.zeros(2, 4)), r'rois must be \(R, 5\)'),
    (dict(features=torch.zeros(1, 2, 8, 8, dtype=torch.bfloat16)), 'float32 or float64'),
])
def test_bad_input_is_refused_by_name(bad, message):
    args = dict(features=torch.zeros(1, 2, 8, 8), rois=torch.tensor([[0, 1., 1., 4., 4.]]))
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        channels_last_roi_align(args['features'], args['rois'], (2, 2))


def test_layers_made_channels_last_or_guarded():
    torch.manual_seed(0)
    features = torch.randn(2, 8, 24, 24)
    rois = torch.tensor([[0, 2., 3., 15., 20.], [1, 0., 0., 23., 11.]])
    channels_last = features.contiguous(memory_format=torch.channels_last)
    average, maximum = RoIAlign(7, sampling_ratio=0), RoIAlign(7, pool_mode='max')
    expected_average, expected_maximum = average(features, rois), maximum(features, rois)
    # mmcv 2.1 reads the raw memory as (N, C, H, W): wrong values, no error.
    assert not torch.allclose(average(channels_last, rois), expected_average)
    assert not use_channels_last_roi_align(maximum)  # max pooling stays mmcv's
    assert convert_to_channels_last(average) == convert_to_channels_last(maximum) == 1
    assert type(average) is ChannelsLastRoIAlign and isinstance(average, RoIAlign)
    assert not average._forward_pre_hooks
    torch.testing.assert_close(average(channels_last, rois), expected_average)
    torch.testing.assert_close(maximum(channels_last, rois), expected_maximum)
    assert convert_to_channels_last(maximum) == 1
    assert len(maximum._forward_pre_hooks) == 1  # converting twice guards once


def test_traced_layer_runs_mmcv_op(monkeypatch):
    import convnext_dense.runtime.channels_last_roi_align as module
    layer = RoIAlign(7)
    use_channels_last_roi_align(layer)
    calls = []
    monkeypatch.setattr(module, 'channels_last_roi_align',
                        lambda *a: calls.append(1) or torch.zeros(1, 2, 7, 7))
    features, rois = torch.randn(1, 2, 16, 16), torch.tensor([[0, 1., 1., 9., 9.]])
    layer(features, rois)
    assert calls == [1]
    torch.jit.trace(layer, (features, rois), check_trace=False)
    assert calls == [1]  # tracing took mmcv's op (it has the ONNX symbolic)
