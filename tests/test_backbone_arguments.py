"""Bad arguments are refused with a message naming the argument, the value and what is allowed."""
import numpy as np
import pytest
import torch

from convnext_dense import ConvNeXt
from tiny import TINY_ARCH


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(arch='bsae'), ValueError, r"arch 'bsae'.*'base'.*'tiny'"),
    (dict(arch=3), TypeError, r'arch must be a str or a dict'),
    (dict(arch=dict(depths=(1, 1, 1, 1))), ValueError, r"lacks \['channels'\]"),
    (dict(arch=dict(depths=(1, 1, 1), channels=(8, 16, 32))), ValueError, r'depths must be 4'),
    (dict(arch=dict(depths=(1, 1, 1, 1), channels=(8, 16, 0, 32))), ValueError, r'channels must'),
    (dict(arch=dict(depths=(1, 1, 1, 1), channels=(8, 8, 8, 8), widths=1)), ValueError, 'widths'),
    (dict(out_indices=(0, 4)), ValueError, r'out_indices entry 4 is out of range \(-4 to 3\)'),
    (dict(out_indices=(-5,)), ValueError, r'out_indices entry -5 is out of range'),
    (dict(out_indices=(1, -3)), ValueError, r'same stage twice'),
    (dict(out_indices=()), ValueError, r'out_indices is empty'),
    (dict(out_indices=(1.0,)), TypeError, r'out_indices entries must be int'),
    (dict(frozen_stages=5), ValueError, r'frozen_stages 5 is out of range \(0 to 4\)'),
    (dict(frozen_stages=-1), ValueError, r'frozen_stages -1 is out of range'),
    (dict(drop_path_rate=1.5), ValueError, r'drop_path_rate 1.5 is out of range'),
    (dict(in_channels=0), ValueError, r'in_channels must be a positive int, got 0'),
    (dict(gap_before_final_norm=True), ValueError, r'gap_before_final_norm=False'),
    (dict(out_indices=None), TypeError, r'out_indices must be an int or a sequence of ints'),
    (dict(out_indices=1.0), TypeError, r'out_indices must be an int or a sequence'),
    (dict(out_indices=True), TypeError, r'out_indices must be an int or a sequence'),
    (dict(drop_path_rate='0.1'), ValueError, r"drop_path_rate '0.1' is out of range"),
    (dict(drop_path_rate=None), ValueError, r'drop_path_rate None is out of range'),
    (dict(layer_scale_init_value=None), ValueError, r'layer_scale_init_value must be a finite'),
    (dict(in_channels=True), ValueError, r'in_channels must be a positive int, got True'),
    (dict(frozen_stages=True), ValueError, r'frozen_stages must be an int \(0 to 4\), got True'),
    (dict(frozen_stages=1.0), ValueError, r'frozen_stages must be an int \(0 to 4\), got 1.0'),
    (dict(layer_scale_init_value=float('nan')), ValueError,
     r'layer_scale_init_value must be a finite number .*got nan'),
    (dict(layer_scale_init_value=float('inf')), ValueError, r'finite number .*got inf'),
    (dict(with_cp='no'), ValueError, r"with_cp must be True or False, got 'no'"),
    (dict(init_cfg=dict(type='Pretrained')), ValueError, r'names no checkpoint'),
    (dict(init_cfg=[dict(type='Pretrained', checkpoint='a.pth'),
                    dict(type='Pretrained', checkpoint='b.pth')]), ValueError,
     r'2 Pretrained entries'),
])
def test_bad_arguments(kwargs, error, message):
    kwargs.setdefault('arch', 'tiny')
    with pytest.raises(error, match=message):
        ConvNeXt(**kwargs)


def test_caller_lists_are_not_mutated():
    out_indices = [3, -4]
    arch = dict(depths=[1, 1, 2, 1], channels=[8, 16, 32, 64])
    backbone = ConvNeXt(arch=arch, out_indices=out_indices)
    assert out_indices == [3, -4]
    assert arch == dict(depths=[1, 1, 2, 1], channels=[8, 16, 32, 64])
    assert backbone.out_indices == (0, 3)


@pytest.mark.parametrize('images, error, message', [
    (np.zeros((1, 3, 64, 64), np.float32), TypeError,
     r'takes a \(N, C, H, W\) tensor, got ndarray'),
    (torch.rand(3, 64, 64), ValueError, r'takes \(N, 3, H, W\) images, got shape \(3, 64, 64\)'),
    (torch.rand(1, 1, 64, 64), ValueError, r'got shape \(1, 1, 64, 64\)'),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError, r'floating-point images, got '
                                                              r'torch\.uint8'),
    (torch.rand(1, 3, 64, 64, dtype=torch.float64), TypeError,
     r'images are torch\.float64 but the backbone is torch\.float32'),
    (torch.rand(1, 3, 31, 64), ValueError, r'images of 31x64 are smaller than the 32x32 the '
                                           r'output stages \(0, 1, 2, 3\) need; .*mmdet.*'
                                           r'pad_size_divisor=32; mmseg.*size_divisor=32'),
])
def test_bad_inputs_are_named(images, error, message):
    with pytest.raises(error, match=message):
        ConvNeXt(arch=TINY_ARCH)(images)


def test_inputs_at_the_limits_work():
    backbone = ConvNeXt(arch=TINY_ARCH, out_indices=(0, 1, 2)).eval()
    assert [o.shape[-1] for o in backbone(torch.rand(1, 3, 16, 16))] == [4, 2, 1]  # 16 px: 3 stages
    with torch.no_grad():  # an empty batch, also on the inference fast path
        assert [tuple(o.shape) for o in backbone(torch.rand(0, 3, 64, 64))] == [
            (0, 16, 16, 16), (0, 32, 8, 8), (0, 64, 4, 4)]
    with torch.autocast('cpu', dtype=torch.bfloat16):  # autocast casts: no dtype refusal
        assert len(backbone(torch.rand(1, 3, 32, 32))) == 3


def test_init_cfg_may_be_a_list_and_the_prefix_may_lack_its_dot(tmp_path):
    source = ConvNeXt(arch=TINY_ARCH)
    path = tmp_path / 'detector.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()}},
               path)
    backbone = ConvNeXt(arch=TINY_ARCH, init_cfg=[
        dict(type='Pretrained', checkpoint=str(path), prefix='backbone')])
    backbone.init_weights()
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in backbone.state_dict().items())
