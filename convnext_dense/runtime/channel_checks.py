"""Check, before a model is built, that the backbone's output channels are what its first reader
(the neck, else the decode and auxiliary heads) expects.

Without this check a wrong ``arch`` or ``out_indices`` shows up at the first forward, as an
``IndexError`` deep in mmseg's decode head or a convolution's channel error.
"""
import inspect
from typing import Any, List, Optional, Sequence, Tuple

from mmengine.config import Config

from ..model.archs import declared_outputs, is_int
from ..model.backbone import ConvNeXt

BACKBONE_TYPE = 'convnext_dense.ConvNeXt'


class ChannelMismatchError(ValueError):
    """The backbone's output channels do not match the ``in_channels`` of what reads them."""


def check_backbone_channels(cfg: Config) -> None:
    """Compare the channels this package's ConvNeXt will output with their first consumer.

    The consumer is ``model.neck`` (the first one when it is a list), whose list ``in_channels``
    must name every backbone output; without a neck, each ``model.decode_head`` and
    ``model.auxiliary_head`` whose ``in_index`` picks outputs for its ``in_channels`` (both ints
    or both lists). Configs this cannot read with confidence (another backbone type, no
    consumer, ``in_channels`` or ``in_index`` of another form) are left alone.

    Args:
        cfg: The full config (``cfg.model`` is read, never changed).

    Raises:
        ChannelMismatchError: naming the backbone's arch, out_indices and channels, and the
            consumer field with its ``in_channels`` (and ``in_index``).
        BackboneArgumentError: the backbone's ``arch`` or ``out_indices`` is not valid (found
            here, before the data is checked or anything is downloaded).
    """
    model = cfg.get('model')
    backbone = model.get('backbone') if isinstance(model, dict) else None
    if not isinstance(backbone, dict) or not _is_this_convnext(backbone.get('type'),
                                                               cfg.get('default_scope')):
        return
    defaults = inspect.signature(ConvNeXt).parameters
    arch = backbone.get('arch', defaults['arch'].default)
    out_indices = backbone.get('out_indices', defaults['out_indices'].default)
    channels, _ = declared_outputs(arch, out_indices)
    described = (f'model.backbone (arch {arch!r}, out_indices {_show(out_indices)}) outputs '
                 f'{len(channels)} feature maps with channels {list(channels)}')
    neck, neck_path = model.get('neck'), 'model.neck'
    if neck:
        if isinstance(neck, (list, tuple)):
            neck, neck_path = neck[0], 'model.neck[0]'
        problem = _neck_problem(neck, channels) if isinstance(neck, dict) else None
        if problem:
            raise ChannelMismatchError(f'{described}, but {neck_path}.{problem}')
        return
    for path, head in _heads(model):
        problem = _head_problem(head, channels)
        if problem:
            raise ChannelMismatchError(f'{described}, but {path}.{problem}')


def _is_this_convnext(backbone_type: Any, scope: Optional[str]) -> bool:
    return (backbone_type is ConvNeXt or backbone_type == BACKBONE_TYPE
            or (backbone_type == 'ConvNeXt' and scope == 'convnext_dense'))


def _neck_problem(neck: dict, channels: Tuple[int, ...]) -> Optional[str]:
    in_channels = neck.get('in_channels')
    if not isinstance(in_channels, (list, tuple)):
        return None
    # Some necks (mmdet's YOLOV3Neck) list their inputs deepest first.
    if list(in_channels) in (list(channels), list(channels)[::-1]):
        return None
    return (f'in_channels is {list(in_channels)}; set it to {list(channels)} or change the '
            "backbone's arch / out_indices")


def _heads(model: dict) -> List[Tuple[str, dict]]:
    heads = []
    for key in ('decode_head', 'auxiliary_head'):
        value = model.get(key)
        if isinstance(value, dict):
            heads.append((f'model.{key}', value))
        elif isinstance(value, (list, tuple)):
            heads += [(f'model.{key}[{i}]', v) for i, v in enumerate(value) if isinstance(v, dict)]
    return heads


def _head_problem(head: dict, channels: Tuple[int, ...]) -> Optional[str]:
    in_channels, in_index = head.get('in_channels'), head.get('in_index')
    if is_int(in_channels) and is_int(in_index):
        in_channels, in_index = [in_channels], [in_index]
    elif not (isinstance(in_channels, (list, tuple)) and isinstance(in_index, (list, tuple))
              and all(is_int(i) for i in in_index) and len(in_channels) == len(in_index)):
        return None
    shown = f"in_index {_show(head['in_index'])} with in_channels {_show(head['in_channels'])}"
    outside = [i for i in in_index if not -len(channels) <= i < len(channels)]
    if outside:
        return (f'{shown} reads output {outside[0]}, out of range for {len(channels)} outputs '
                f'(0 to {len(channels) - 1}); change in_index or the backbone\'s out_indices')
    read = [channels[i] for i in in_index]
    if list(in_channels) != read:
        expected, found = ((in_channels[0], read[0]) if is_int(head['in_index'])
                           else (list(in_channels), read))
        return (f'{shown} expects {expected} channels where the backbone gives {found}; '
                "set in_channels to match or change the backbone's arch / out_indices")
    return None


def _show(value: Sequence) -> str:
    return str(list(value)) if isinstance(value, (list, tuple)) else repr(value)
