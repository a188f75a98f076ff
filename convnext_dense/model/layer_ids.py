"""Layer ids of backbone parameters for learning-rate decay (the official ConvNeXt rule)."""
import math
from typing import Sequence

DECAY_TYPES = ('layer_wise', 'stage_wise')


def default_num_layers(depths: Sequence[int]) -> int:
    """``num_layers`` the official configs use: stage 2 in groups of 3 blocks, plus 3 (12 for 27)."""
    return 3 + math.ceil(depths[2] / 3)


def layer_id(name: str, decay_type: str, num_layers: int) -> int:
    """Layer id of a parameter named relative to the backbone.

    ``layer_wise``: stem 0, stage 0 -> 1, stage 1 and its downsample -> 2, stage 2 in groups of
    three blocks from 3, stage 3 and its downsample -> ``num_layers``. ``stage_wise``: every
    downsample layer 0, stage i -> i + 1. Anything else (output norms) -> ``num_layers + 1``.
    """
    if decay_type not in DECAY_TYPES:
        raise ValueError(f"decay_type '{decay_type}' is not one of {DECAY_TYPES}")
    parts = name.split('.')
    if parts[0] == 'downsample_layers':
        if decay_type == 'stage_wise':
            return 0
        stage = int(parts[1])
        return {0: 0, 1: 2, 2: 3, 3: num_layers}[stage]  # the stem is downsample_layers.0
    if parts[0] == 'stages':
        stage = int(parts[1])
        if decay_type == 'stage_wise':
            return stage + 1
        if stage == 2:
            return 3 + int(parts[2]) // 3  # groups of three blocks
        return {0: 1, 1: 2, 3: num_layers}[stage]
    return num_layers + 1
