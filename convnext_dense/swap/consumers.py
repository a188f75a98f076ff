"""Find the modules that read the backbone and which of its outputs each one reads.

A consumer is the first neck, or, in a model without a neck, each head with an ``in_channels``
field. How it picks its inputs comes from its arguments (config value, else the default in the
class signature), never from its type name:

* ``in_index`` (mmseg decode heads): the outputs at those positions;
* ``start_level`` (FPN-like necks): every output from ``start_level`` on;
* a list ``in_channels`` with neither: every output (ChannelMapper, Mask2Former heads);
* an int ``in_channels`` with neither: the last output (DilatedEncoder, CTResNetNeck).

Other ``*_in_channels`` fields (DeepLabV3+'s ``c1_in_channels``) are matched to an output by
its channel count and read it at a fixed position.
"""
import inspect
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .errors import SwapRefused
from ..runtime.config import task_registry
from .probe import Feeds

#: Model fields that hold no consumer of backbone features.
NOT_CONSUMERS = ('backbone', 'neck', 'data_preprocessor', 'train_cfg', 'test_cfg', 'init_cfg')


class Consumer(NamedTuple):
    """A module config that reads backbone outputs."""
    path: str                 # 'model.neck', 'model.decode_head[1]', ...
    cfg: Dict[str, Any]
    style: str                # 'index', 'levels', 'all', 'last' or 'through' (via the neck)
    positions: Tuple[int, ...]  # backbone outputs read through in_channels
    pinned: Dict[str, int]    # other *_in_channels field -> output position it reads
    in_index: Any = None      # effective in_index of 'index' consumers (config or default)


def signature_defaults(cfg: Dict, scope: str) -> Dict[str, Any]:
    """Constructor argument defaults of ``cfg['type']``, following ``**kwargs`` up the MRO."""
    module_type = cfg.get('type')
    cls = module_type if inspect.isclass(module_type) else task_registry(scope).get(module_type)
    defaults: Dict[str, Any] = {}
    if cls is None:
        return defaults
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        for name, param in inspect.signature(init).parameters.items():
            if param.default is not inspect.Parameter.empty:
                defaults.setdefault(name, param.default)
    return defaults


def _positions_of(value: Any, count: int, field: str) -> Tuple[int, ...]:
    indices = (value,) if isinstance(value, int) else tuple(value)
    for index in indices:
        if not -count <= index < count:
            raise SwapRefused(field, f'index {index} is out of range for a backbone with '
                              f'{count} outputs')
    return tuple(i % count for i in indices)


def _check_channels(field: str, value: Any, expected: Sequence[int]) -> None:
    found = [value] if isinstance(value, int) else list(value)
    if found != list(expected):
        raise SwapRefused(field, f'is {value!r} but the backbone outputs it reads have '
                          f'{list(expected)} channels')


def _classify(path: str, cfg: Dict, feeds: Feeds, scope: str) -> Consumer:
    count = len(feeds.channels)
    args = {**signature_defaults(cfg, scope), **cfg}
    in_channels = cfg['in_channels']
    if args.get('in_index') is not None:
        style = 'index'
        positions = _positions_of(args['in_index'], count, f'{path}.in_index')
        _check_channels(f'{path}.in_channels', in_channels, [feeds.channels[p] for p in positions])
    elif 'start_level' in args:
        style = 'levels'
        _check_channels(f'{path}.in_channels', in_channels, feeds.channels)
        start = _positions_of(args['start_level'], count, f'{path}.start_level')[0]
        # An explicit end_level keeps every later output: its meaning (inclusive or not)
        # differs between necks, and keeping extra outputs is always safe.
        positions = tuple(range(start, count))
    elif isinstance(in_channels, int):
        style = 'last'
        if in_channels != feeds.channels[-1]:
            raise SwapRefused(f'{path}.in_channels', f'is {in_channels} but the last backbone '
                              f'output has {feeds.channels[-1]} channels, and {path} has no '
                              'in_index or start_level saying which output it reads')
        positions = (count - 1,)
    else:
        style = 'all'
        _check_channels(f'{path}.in_channels', in_channels, feeds.channels)
        positions = tuple(range(count))
    pinned = {}
    for key, value in cfg.items():
        if key != 'in_channels' and key.endswith('in_channels') and isinstance(value, int) \
                and value in feeds.channels:
            matches = [p for p, c in enumerate(feeds.channels) if c == value]
            if len(matches) > 1:
                raise SwapRefused(f'{path}.{key}', f'{value} channels match backbone outputs '
                                  f'{matches}; cannot tell which one it reads')
            pinned[key] = matches[0]
    return Consumer(path, cfg, style, positions, pinned, args.get('in_index'))


def _nested_backbone(path: str, cfg: Any) -> Optional[str]:
    """Path of a dict below ``cfg`` whose key names a backbone (RFP's ``rfp_backbone``)."""
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            if 'backbone' in key and isinstance(value, dict):
                return f'{path}.{key}'
            found = _nested_backbone(f'{path}.{key}', value)
            if found:
                return found
    elif isinstance(cfg, (list, tuple)):
        for i, value in enumerate(cfg):
            found = _nested_backbone(f'{path}[{i}]', value)
            if found:
                return found
    return None


def _channel_field(path: str, cfg: Any, channels: Sequence[int]) -> Optional[str]:
    """Path of a ``*channels*`` field below ``cfg`` equal to a backbone output's channels, or a
    list of them (the pyramid in_channels of a head nested in another, as in K-Net)."""
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            if 'channels' in key and (isinstance(value, int) and value in channels or _all_of(
                    value, channels)):
                return f'{path}.{key}'
            found = _channel_field(f'{path}.{key}', value, channels)
            if found:
                return found
    elif isinstance(cfg, (list, tuple)):
        for i, value in enumerate(cfg):
            found = _channel_field(f'{path}[{i}]', value, channels)
            if found:
                return found
    return None


def _all_of(value: Any, channels: Sequence[int]) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(v, int) and v in channels for v in value)


def typed_modules(path: str, value: Any) -> List[Tuple[str, Dict]]:
    if isinstance(value, dict) and 'type' in value:
        return [(path, value)]
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, dict) and 'type' in v for v in value):
        return [(f'{path}[{i}]', v) for i, v in enumerate(value)]
    return []


def _candidates(model: Dict) -> List[Tuple[str, Dict]]:
    neck = model.get('neck')
    if neck:
        candidates = typed_modules('model.neck', neck)[:1]
        if not candidates:
            raise SwapRefused('model.neck', f'is {neck!r}, not a module config')
        return candidates
    # Without a neck every head may read the backbone; a teacher_backbone is a model of its own.
    return [item for key, value in model.items()
            if key not in NOT_CONSUMERS and 'backbone' not in key
            for item in typed_modules(f'model.{key}', value)]


def check_no_own_backbone(model: Dict) -> None:
    """Refuse a model whose backbone readers embed a backbone of their own (RFP's
    ``rfp_backbone``): they are built for one backbone family and cannot follow a swap."""
    for path, cfg in _candidates(model):
        nested = _nested_backbone(path, cfg)
        if nested:
            raise SwapRefused(nested, 'the module that reads the backbone embeds a backbone of '
                              'its own, so it only works with that backbone family')


def find_consumers(model: Dict, feeds: Feeds, scope: str) -> List[Consumer]:
    """Return the consumers of the backbone in ``model`` (the ``model`` dict of a config).

    Raises:
        SwapRefused: a consumer embeds a backbone of its own, reads backbone features through
            a field this function does not map, or nothing reads the backbone.
    """
    check_no_own_backbone(model)
    consumers = []
    for path, cfg in _candidates(model):
        if 'in_channels' in cfg:
            consumers.append(_classify(path, cfg, feeds, scope))
            continue
        field = _channel_field(path, cfg, feeds.channels)
        if field:
            raise SwapRefused(field, f'matches the channels of backbone outputs {feeds.channels}, '
                              'but swap_backbone only rewrites the in_channels fields of the '
                              f'modules that read the backbone, and {path} has none (it reads '
                              'the backbone directly, e.g. a two-stage detector without a neck)')
    if not consumers:
        raise SwapRefused('model.neck', 'is missing and no head has an in_channels field: '
                          'found no module that reads the backbone outputs')
    return consumers
