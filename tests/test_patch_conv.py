"""The downsampling convolution's training path (one matmul over patches) is the convolution."""
import pytest
import torch
import torch.nn.functional as F

import convnext_dense.model.layers as layers
from convnext_dense import ConvNeXt
from convnext_dense.cpu_fast_paths import fast_paths, patch_matmul, patch_matmul_applies
from convnext_dense.model.layers import PatchConv2d


@pytest.mark.parametrize('shape, size, bias, channels_last', [
    ((2, 3, 8, 8), 2, True, True),
    ((1, 4, 7, 9), 2, True, True),  # odd sizes: the last row and column are dropped
    ((2, 3, 9, 13), 4, False, False),
])
def test_patch_matmul_is_the_strided_convolution(shape, size, bias, channels_last):
    x = torch.randn(shape, dtype=torch.double)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(5, shape[1], size, size, dtype=torch.double, requires_grad=True)
    bias = torch.randn(5, dtype=torch.double, requires_grad=True) if bias else None
    out = patch_matmul(x, weight, bias)
    torch.testing.assert_close(out, F.conv2d(x, weight, bias, stride=size), rtol=1e-12, atol=1e-12)
    assert out.is_contiguous(memory_format=torch.channels_last)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    assert torch.autograd.gradcheck(patch_matmul, inputs, fast_mode=True)


@pytest.fixture
def matmul_calls(spy):
    """Every call of the downsampling layers' matmul path (it still runs)."""
    return spy(layers, 'patch_matmul')


def test_backbone_downsamples_by_matmul_only_in_float32_cpu_training(tiny_arch, matmul_calls):
    model = ConvNeXt(arch=tiny_arch, frozen_stages=1).train()
    x = torch.randn(2, 3, 64, 64)
    sum(o.sum() for o in model(x)).backward()
    # downsample_layers 1-3 (stage 1 is trainable although stage 0 is frozen)
    assert len(matmul_calls) == 3
    assert model.downsample_layers[1][1].weight.grad is not None
    for plain in (torch.no_grad, torch.inference_mode, lambda: fast_paths(False)):
        matmul_calls.clear()
        with plain():
            model(x)
        assert not matmul_calls, plain
    matmul_calls.clear()
    model.to(torch.double)(x.double())
    assert not matmul_calls  # float32 only


@pytest.mark.parametrize('conv, applies', [
    (PatchConv2d(4, 8, 2), True),
    (torch.nn.Conv2d(4, 8, 2, stride=2), True),
    (torch.nn.Conv2d(4, 8, 3, stride=2), False),  # overlapping patches
    (torch.nn.Conv2d(4, 8, 2, stride=2, padding=1), False),
    (torch.nn.Conv2d(4, 8, 2, stride=2, groups=2), False),
    (torch.nn.Conv2d(4, 8, 2, stride=2, dilation=2), False),
])
def test_patch_matmul_applies_to_non_overlapping_patches_only(conv, applies):
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    assert patch_matmul_applies(conv, x) == applies
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not patch_matmul_applies(conv, x)  # autocast's bf16 convolution instead
    conv.requires_grad_(False)
    assert not patch_matmul_applies(conv, x.detach())  # nothing needs a gradient


def test_patch_conv2d_keeps_the_convolution_parameters():
    conv = PatchConv2d(4, 8, 2)
    assert isinstance(conv, torch.nn.Conv2d)
    assert conv.kernel_size == conv.stride == (2, 2)
    assert sorted(conv.state_dict()) == ['bias', 'weight']
