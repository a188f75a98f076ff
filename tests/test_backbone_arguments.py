"""Bad arguments are refused with a message naming the argument, the value and what is allowed."""
import pytest

from convnext_dense import ConvNeXt


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
