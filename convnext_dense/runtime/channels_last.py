"""Run a whole detector or segmenter in channels-last memory format: the neck and heads too.

The backbone always computes in channels-last and returns standard ``(N, C, H, W)`` maps. On a
CPU, oneDNN runs the convolutions of the UperNet and Mask R-CNN heads 1.7 to 2.8 times as fast
(forward and backward, one thread, Ice Lake Xeon) on channels-last tensors; converting a model's
4-D weights to channels-last makes every convolution compute and return channels-last. Wide
heads vary: the B configs' UperNet ran inference 1-14 % slower this way, their Cascade Mask R-CNN
(four 3x3 convolutions per box head on every proposal) 17 % faster on an AVX-512 EPYC (two
512x512 images, one thread); measure before using it on a wide model.

mmcv's compiled ops read raw ``(N, C, H, W)`` memory: mmcv 2.1's CPU ``RoIAlign`` given a
channels-last map returns wrong values without an error, and its deformable convolutions refuse
one. So mmcv's ``RoIAlign`` modules (average pooling) become
:class:`~.channels_last_roi_align.ChannelsLastRoIAlign`, which pools channels-last CPU maps
itself (a training step of the demo's Mask R-CNN 0.6 instead of 0.7 s, see
:mod:`.channels_last_roi_align`), and every other ``mmcv.ops`` module gets its tensor inputs made
contiguous first. A head that calls mmcv's functional ops on a feature map (TOOD's
``deform_conv2d``) is not covered: it raises. In a model with mmseg decode heads, two functions
they call on channels-last maps are swapped for faster ones with the same values
(:mod:`.channels_last_mmseg`).

In a config::

    custom_hooks = [dict(type='convnext_dense.ChannelsLastHook')]
"""
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from torch import nn

from ..registry import HOOKS
from .channels_last_mmseg import speed_up_mmseg_heads

_GUARD_ATTRIBUTE = '_convnext_dense_contiguous_inputs'


def is_mmcv_op(module: nn.Module) -> bool:
    """Whether ``module`` is (or derives from) one of mmcv's compiled-op modules."""
    return any(cls.__module__.startswith('mmcv.ops') for cls in type(module).__mro__)


def _contiguous(value):
    return value.contiguous() if isinstance(value, torch.Tensor) else value


def _contiguous_inputs(module, args, kwargs):
    return (tuple(_contiguous(a) for a in args),
            {name: _contiguous(value) for name, value in kwargs.items()})


def convert_to_channels_last(model: nn.Module) -> int:
    """Make ``model``'s 4-D weights channels-last, in place, and its mmcv ops safe for it.

    mmcv's ``RoIAlign`` modules (average pooling) pool channels-last maps themselves; other mmcv
    op modules get contiguous inputs; where the model has mmseg decode heads,
    :func:`~.channels_last_mmseg.speed_up_mmseg_heads` runs. Parameters keep their identity (an
    optimizer built before still steps them). Calling it again adds no second guard.

    Returns:
        How many mmcv op modules were made safe, either way.
    """
    model.to(memory_format=torch.channels_last)
    if any(type(m).__module__.startswith('mmseg.models.decode_heads') for m in model.modules()):
        speed_up_mmseg_heads()
    guarded = 0
    for module in model.modules():
        if not is_mmcv_op(module):
            continue
        guarded += 1
        if not _pools_channels_last(module) and not hasattr(module, _GUARD_ATTRIBUTE):
            handle = module.register_forward_pre_hook(_contiguous_inputs, with_kwargs=True)
            setattr(module, _GUARD_ATTRIBUTE, handle)
    return guarded


def _pools_channels_last(module: nn.Module) -> bool:
    from .channels_last_roi_align import use_channels_last_roi_align
    return use_channels_last_roi_align(module)


@HOOKS.register_module()
class ChannelsLastHook(Hook):
    """Convert the model to channels-last (:func:`convert_to_channels_last`) before the run.

    It runs in ``before_run`` of training, validation and testing, so the weights loaded or
    resumed afterwards are copied into the channels-last parameters; checkpoints store the same
    keys and values as without it.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        guarded = convert_to_channels_last(runner.model)
        print_log(f'ChannelsLastHook: model weights in channels-last memory format; {guarded} '
                  'mmcv op module(s) made safe for it (RoIAlign pooling channels-last maps, '
                  'the others given contiguous inputs).', logger='current')
