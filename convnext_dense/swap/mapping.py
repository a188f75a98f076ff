"""Map the backbone outputs a model reads onto ConvNeXt stages and rewrite its consumers."""
from typing import Any, Dict, List, NamedTuple, Tuple

from ..model.archs import declared_outputs
from .consumers import Consumer
from .errors import SwapRefused
from .probe import Feeds


class Mapping(NamedTuple):
    """The new backbone outputs and the consumer fields that change."""
    out_indices: Tuple[int, ...]       # ConvNeXt stages, one per new output
    out_channels: Tuple[int, ...]      # declared by ConvNeXt for those stages
    out_strides: Tuple[int, ...]
    updates: Dict[str, Dict[str, Any]]  # consumer path -> {field: new value}
    spatial: Tuple[Tuple[int, int], ...]  # (H, W) of each new output for the probe image
    unread: Tuple[int, ...] = ()       # stages output although no consumer reads them


def _read_positions(consumers: List[Consumer], count: int) -> List[int]:
    read = set()
    for consumer in consumers:
        read.update(consumer.positions)
        # A position read without an index field must not move: keep every output before it.
        for position in consumer.pinned.values():
            read.update(range(position + 1))
    return sorted(read)


def _same_kind(old: Any, values: List[int]) -> Any:
    if isinstance(old, int):
        return values[0]
    return type(old)(values)


def _index_value(old: Any, new_positions: List[int], new_count: int) -> Any:
    old_list = [old] if isinstance(old, int) else list(old)
    values = [p - new_count if o < 0 else p for o, p in zip(old_list, new_positions)]
    return _same_kind(old, values)


def map_outputs(consumers: List[Consumer], feeds: Feeds, arch, check_strides: bool,
                keep_all: bool = False) -> Mapping:
    """Choose the ConvNeXt out_indices the consumers need and compute their new fields.

    Args:
        consumers: From :func:`find_consumers`.
        feeds: What the old backbone outputs (from :func:`probe_backbone`).
        arch: ConvNeXt arch name or dict.
        check_strides: Refuse when a read output changes stride (detection heads place
            anchors and RoIs by stride; segmentation heads resize to the label size).
        keep_all: Output every stage the old backbone did, read or not, for a neck that
            indexes its inputs by absolute position (NASFCOS_FPN).

    Raises:
        SwapRefused: the outputs read cannot be produced by ConvNeXt in the same order or,
            with ``check_strides``, at the same strides.
    """
    needed = _read_positions(consumers, len(feeds.channels))
    read = list(range(len(feeds.channels))) if keep_all else needed
    through = [c.path for c in consumers if c.style == 'through']
    if through and read != list(range(len(feeds.channels))):
        raise SwapRefused(through[0], 'reads a backbone output the neck passes through, and the '
                          'neck would get fewer inputs after the swap, moving its outputs')
    stages = [feeds.stages[p] for p in read]
    if stages != sorted(set(stages)):
        raise SwapRefused('model.backbone.out_indices', f'the outputs read come from stages '
                          f'{stages} (strides {[feeds.strides[p] for p in read]}); ConvNeXt '
                          'returns one map per stage, in increasing order')
    out_channels, out_strides = declared_outputs(arch, tuple(stages))
    new_position = {old: new for new, old in enumerate(read)}
    new_channels = {old: out_channels[new] for new, old in enumerate(read)}
    if check_strides:
        for old in read:
            stride = out_strides[new_position[old]]
            if feeds.strides[old] != stride:
                raise SwapRefused('model.backbone', f'output {old} (stage {feeds.stages[old]}) '
                                  f'has stride {feeds.strides[old]} (dilated), ConvNeXt stage '
                                  f'{feeds.stages[old]} has stride {stride}; the detection heads '
                                  'would place anchors and RoIs at the wrong scale')
    updates = {}
    for consumer in consumers:
        cfg, fields = consumer.cfg, {}
        if consumer.style in ('levels', 'all'):  # these get every output ConvNeXt returns
            fields['in_channels'] = _same_kind(cfg['in_channels'], [new_channels[p] for p in read])
        else:
            fields['in_channels'] = _same_kind(
                cfg['in_channels'], [new_channels[p] for p in consumer.positions])
        if consumer.style == 'index':
            index = _index_value(consumer.in_index,
                                 [new_position[p] for p in consumer.positions], len(read))
            if index != consumer.in_index:
                fields['in_index'] = index
        if consumer.style == 'levels':
            start = consumer.positions[0]
            shift = start - new_position[start]
            if shift:
                fields['start_level'] = new_position[start]
                end = cfg.get('end_level', -1)
                if end != -1:
                    fields['end_level'] = end - shift
        for key, position in consumer.pinned.items():
            fields[key] = new_channels[position]
        updates[consumer.path] = {k: v for k, v in fields.items() if cfg.get(k) != v}
    spatial = tuple(tuple(feeds.maps[p].shape[2:]) for p in read) if feeds.maps else ()
    unread = tuple(feeds.stages[p] for p in read if p not in needed)
    return Mapping(tuple(stages), tuple(out_channels), tuple(out_strides), updates, spatial, unread)
