"""Check that converted weights fit a backbone exactly, and say what is wrong when they do not."""
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..model.archs import ARCH_SETTINGS, NUM_STAGES
from .errors import CheckpointError
from .layouts import OUTPUT_NORM

_BLOCK = re.compile(r'stages\.([0-3])\.(\d+)\.')
_LIST_LIMIT = 10


@dataclass(frozen=True)
class LoadPlan:
    """What to load into a backbone.

    Attributes:
        state_dict: The tensors to load (all backbone keys but the fresh output norms).
        fresh_norms: Output norm keys the checkpoint does not hold: they start at weight 1, bias 0.
        unused_norms: Checkpoint output norms of stages the backbone does not output.
    """

    state_dict: Dict[str, torch.Tensor]
    fresh_norms: Tuple[str, ...]
    unused_norms: Tuple[str, ...]


def infer_arch(state_dict: Mapping[str, torch.Tensor]
               ) -> Tuple[Tuple[Optional[int], ...], Tuple[Optional[int], ...]]:
    """``(depths, channels)`` of backbone-layout weights; None where the keys do not show it."""
    depths: List[Optional[int]] = [None] * NUM_STAGES
    channels: List[Optional[int]] = [None] * NUM_STAGES
    for key, value in state_dict.items():
        match = _BLOCK.match(key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            depths[stage] = max(depths[stage] or 0, block + 1)
            if key.endswith('.dwconv.weight'):
                channels[stage] = int(value.shape[0])
    for stage in range(NUM_STAGES):
        conv = state_dict.get(f'downsample_layers.{stage}.{0 if stage == 0 else 1}.weight')
        if channels[stage] is None and conv is not None:
            channels[stage] = int(conv.shape[0])
    return tuple(depths), tuple(channels)


def describe_arch(depths: Sequence[Optional[int]], channels: Sequence[Optional[int]]) -> str:
    """``"'base' (depths 3,3,27,3, channels 128,...)"``; the name only when the table has it."""
    text = f'depths {_join(depths)}, channels {_join(channels)}'
    held = (tuple(depths), tuple(channels))
    for name, setting in ARCH_SETTINGS.items():
        if (tuple(setting['depths']), tuple(setting['channels'])) == held:
            return f"'{name}' ({text})"
    return text


def plan_load(expected: Mapping[str, torch.Size], weights: Mapping[str, torch.Tensor],
              configured: Tuple[Sequence[int], Sequence[int]],
              unmapped: Sequence[str] = (), source: str = 'checkpoint') -> LoadPlan:
    """Match converted weights against a backbone's parameter shapes, strictly.

    Every expected key except output norms ``norm{i}`` must be present with the expected shape, and
    no other key may be left over. Output norms the checkpoint lacks start fresh.

    Args:
        expected: Backbone key -> shape (from ``backbone.state_dict()``).
        weights: Converted weights (:attr:`Conversion.state_dict`).
        configured: The backbone's ``(depths, channels)``, for the error message.
        unmapped: Checkpoint keys the conversion could not map; they count as unexpected.
        source: What the weights came from, for the error message.

    Raises:
        ValueError: listing missing, unexpected and mis-shaped keys, and the architecture the
            checkpoint holds versus the configured one when they differ.
    """
    missing = [k for k in expected if k not in weights and not OUTPUT_NORM.fullmatch(k)]
    unused_norms = tuple(k for k in weights if k not in expected and OUTPUT_NORM.fullmatch(k))
    unexpected = [k for k in weights if k not in expected and not OUTPUT_NORM.fullmatch(k)]
    unexpected += list(unmapped)
    mismatched = [(k, tuple(weights[k].shape), tuple(expected[k])) for k in expected
                  if k in weights and tuple(weights[k].shape) != tuple(expected[k])]
    if missing or unexpected or mismatched:
        raise CheckpointError(_mismatch_message(source, expected, weights, configured, missing,
                                                unexpected, mismatched))
    fresh = tuple(k for k in expected if OUTPUT_NORM.fullmatch(k) and k not in weights)
    to_load = {k: v for k, v in weights.items() if k in expected}
    return LoadPlan(to_load, fresh, unused_norms)


def _mismatch_message(source: str, expected: Mapping[str, torch.Size],
                      weights: Mapping[str, torch.Tensor],
                      configured: Tuple[Sequence[int], Sequence[int]], missing: List[str],
                      unexpected: List[str], mismatched: List[Tuple[str, tuple, tuple]]) -> str:
    lines = [f'{source} does not fit this ConvNeXt backbone:']
    held = infer_arch(weights)
    if held != (tuple(configured[0]), tuple(configured[1])) and any(v is not None for v in held[1]):
        lines.append(f'  the checkpoint holds a ConvNeXt with {describe_arch(*held)}; the backbone '
                     f'is configured as {describe_arch(*configured)} (set arch= to match)')
    for title, items in (('missing', missing), ('unexpected', unexpected)):
        if items:
            lines.append(f'  {title} keys ({len(items)}): {_short_list(items)}')
    if mismatched:
        shown = [f'{k}: checkpoint {list(a)} vs backbone {list(b)}' for k, a, b in mismatched]
        lines.append(f'  mis-shaped keys ({len(shown)}): {_short_list(shown)}')
    # Compare the whole key sets: a depth mismatch alone also leaves gamma keys of the extra
    # blocks in missing/unexpected, which says nothing about the layer scale setting.
    backbone_gamma, checkpoint_gamma = _has_gamma(expected), _has_gamma(weights)
    if backbone_gamma and not checkpoint_gamma:
        lines.append('  the checkpoint has no layer scale gamma: build the backbone with '
                     'layer_scale_init_value=0')
    if checkpoint_gamma and not backbone_gamma:
        lines.append('  the checkpoint has layer scale gamma: build the backbone with '
                     'layer_scale_init_value > 0')
    if any('.grn.' in k for k in unexpected):
        lines.append('  keys with ".grn." are ConvNeXt V2 weights; this backbone is ConvNeXt V1')
    return '\n'.join(lines)


def _short_list(items: Sequence[str]) -> str:
    more = len(items) - _LIST_LIMIT
    return ', '.join(items[:_LIST_LIMIT]) + (f', ... and {more} more' if more > 0 else '')


def _has_gamma(keys) -> bool:
    return any(k.endswith('.gamma') for k in keys)


def _join(values: Sequence[Optional[int]]) -> str:
    return ','.join('?' if v is None else str(v) for v in values)
