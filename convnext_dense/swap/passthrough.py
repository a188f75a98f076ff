"""Heads that read backbone outputs a neck passes through unchanged (mmseg's JPU returns the
backbone maps next to its own output, and FastFCN's auxiliary head reads one of them)."""
import copy
import logging
from typing import Dict, List, Tuple

import torch
from mmengine.logging import print_log

from .consumers import NOT_CONSUMERS, Consumer, signature_defaults, typed_modules
from .errors import SwapRefused
from .probe import Feeds, run_module


def _run_neck(cfg: Dict, feeds: Feeds, scope: str) -> Tuple[Tuple[torch.Tensor, ...], tuple]:
    """The neck's outputs and the maps it was given: shapes only on the meta device where its
    ops allow, else on CPU with random maps of the backbone's shapes."""
    maps = tuple(feeds.maps)
    try:
        _, outputs = run_module(cfg, scope, maps[0].device.type, lambda _: maps)
    except Exception:  # some mmcv ops have no meta kernel (CARAFE, modulated deformable conv)
        if maps[0].device.type != 'meta':
            raise
        maps = tuple(torch.rand(m.shape) for m in maps)
        _, outputs = run_module(cfg, scope, 'cpu', lambda _: maps)
    return ((outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)), maps


def neck_passthrough(neck_cfg: Dict, feeds: Feeds, scope: str) -> Tuple[Dict[int, int], int]:
    """Build the neck and run it on the backbone outputs.

    Returns:
        ``{neck output: backbone output}`` for the outputs it returns unchanged, and the number
        of neck outputs. A neck that cannot run here (a GPU-only op) is assumed to pass nothing
        through, with a warning.
    """
    cfg = copy.deepcopy(dict(neck_cfg))
    cfg.pop('init_cfg', None)
    try:
        outputs, maps = _run_neck(cfg, feeds, scope)
    except Exception as error:  # any failure here only means we cannot look
        print_log(f'swap_backbone: could not run model.neck ({cfg.get("type")}) here to look '
                  f'for passed-through backbone outputs, assuming none: {error}',
                  logger='current', level=logging.WARNING)
        return {}, 0
    found = {}
    for index, output in enumerate(outputs):
        for position, feed in enumerate(maps):
            # Passing through returns the same tensor; meta tensors can only be compared so.
            if output is feed or (feed.device.type != 'meta' and output.shape == feed.shape
                                  and torch.equal(output, feed)):
                found[index] = position
    return found, len(outputs)


def passthrough_consumers(model: Dict, through: Dict[int, int], num_neck_outputs: int,
                          feeds: Feeds, scope: str) -> List[Consumer]:
    """Heads whose ``in_index`` picks neck outputs that are backbone outputs passed through.

    Raises:
        SwapRefused: a head reads neck outputs without ``in_index`` while some are passed
            through, or mixes passed-through and neck-made outputs in one list.
    """
    if not through:
        return []
    consumers = []
    for key, value in model.items():
        if key in NOT_CONSUMERS:
            continue
        for path, cfg in typed_modules(f'model.{key}', value):
            if 'in_channels' not in cfg:
                continue
            in_index = {**signature_defaults(cfg, scope), **cfg}.get('in_index')
            if in_index is None:
                raise SwapRefused(path, f'reads every output of model.neck, and the neck passes '
                                  f'backbone outputs {sorted(through.values())} through unchanged; '
                                  'cannot tell which in_channels follow the backbone')
            indices = [in_index] if isinstance(in_index, int) else list(in_index)
            indices = [i % num_neck_outputs for i in indices]
            passed = [i in through for i in indices]
            if not any(passed):
                continue
            if not all(passed):
                raise SwapRefused(f'{path}.in_index', 'mixes backbone outputs the neck passes '
                                  'through with outputs the neck makes; not supported')
            positions = tuple(through[i] for i in indices)
            expected = [feeds.channels[p] for p in positions]
            found = [cfg['in_channels']] if isinstance(cfg['in_channels'], int) \
                else list(cfg['in_channels'])
            if found != expected:
                raise SwapRefused(f'{path}.in_channels', f'is {cfg["in_channels"]!r} but the '
                                  f'backbone outputs it reads through the neck have {expected}')
            consumers.append(Consumer(path, cfg, 'through', positions, {}, in_index))
    return consumers
