"""The swapped mmseg functions give mmseg's values; the upsampling gets channels-last gradients."""
import importlib

import pytest
import torch

from convnext_dense.runtime import channels_last_mmseg

mmseg_accuracy = importlib.import_module('mmseg.models.losses.accuracy').accuracy
mmseg_resize = importlib.import_module('mmseg.models.utils').resize


@pytest.mark.parametrize('channels_last', [True, False])
@pytest.mark.parametrize('ignore_index', [None, 255])
def test_accuracy_is_mmseg_s_to_the_bit(channels_last, ignore_index):
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 32, 40)
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 5, (4, 32, 40))
    labels[0, :7] = 255 if ignore_index is not None else 0
    labels[1] = logits[1].argmax(0)  # one image all right, so the count is not near chance
    expected = mmseg_accuracy(logits, labels, ignore_index=ignore_index)
    got = channels_last_mmseg.accuracy(logits, labels, ignore_index=ignore_index)
    assert got.shape == expected.shape == (1,)
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected)


def test_accuracy_leaves_other_cases_to_mmseg():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 8, 8), torch.randint(0, 5, (2, 8, 8))
    for kwargs in (dict(topk=(1, 3)), dict(topk=2)):  # (mmseg's own `thresh` fails on 4-D)
        expected = mmseg_accuracy(logits, labels, **kwargs)
        got = channels_last_mmseg.accuracy(logits, labels, **kwargs)
        assert [float(v) for v in torch.atleast_1d(*got if isinstance(got, list) else [got])] \
            == [float(v) for v in torch.atleast_1d(*expected if isinstance(expected, list)
                                                   else [expected])]


def _upsample_and_concatenate(resize):
    torch.manual_seed(0)
    low = torch.randn(2, 8, 4, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    high = torch.randn(2, 8, 8, 10).contiguous(memory_format=torch.channels_last)
    upsampled = resize(low, size=(8, 10), mode='bilinear', align_corners=False)
    joined = torch.cat([high, upsampled], 1)
    joined.backward(torch.randn(joined.shape).contiguous(memory_format=torch.channels_last))
    return upsampled, joined, low.grad


def test_resize_passes_a_channels_last_gradient():
    _, expected, expected_grad = _upsample_and_concatenate(mmseg_resize)
    upsampled, got, got_grad = _upsample_and_concatenate(channels_last_mmseg.resize)
    assert torch.equal(got, expected)
    torch.testing.assert_close(got_grad, expected_grad)
    # The concatenation's backward hands each input a channel slice of its gradient; the
    # upsampling's backward gets it through the wrapper's node, made channels-last-contiguous.
    node = upsampled.grad_fn
    assert type(node).__name__ == '_ChannelsLastGradientBackward'
    assert 'UpsampleBilinear2D' in type(node.next_functions[0][0]).__name__
    grad = torch.randn(2, 16, 8, 10).contiguous(memory_format=torch.channels_last)[:, 8:]
    assert not grad.is_contiguous(memory_format=torch.channels_last)
    assert channels_last_mmseg._ChannelsLastGradient.backward(None, grad).is_contiguous(
        memory_format=torch.channels_last)
    # Maps that are not channels-last, or need no gradient, pass unwrapped.
    plain = torch.randn(2, 8, 4, 5, requires_grad=True)
    assert 'Upsample' in type(channels_last_mmseg.resize(plain, size=(8, 10)).grad_fn).__name__
    assert channels_last_mmseg.resize(plain.detach(), size=(8, 10)).grad_fn is None


def test_swap_is_idempotent_and_reaches_the_heads():
    from mmseg.models.decode_heads import decode_head, uper_head
    assert channels_last_mmseg.speed_up_mmseg_heads()
    assert channels_last_mmseg.speed_up_mmseg_heads()
    assert uper_head.resize is channels_last_mmseg.resize
    assert decode_head.accuracy is channels_last_mmseg.accuracy
    assert channels_last_mmseg._mmseg_resize() is mmseg_resize
    assert channels_last_mmseg._mmseg_accuracy() is mmseg_accuracy
