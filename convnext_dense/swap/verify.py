"""Run rewritten modules on maps shaped like ConvNeXt's outputs before trusting the mapping.

A neck may index its inputs by absolute position whatever its ``start_level`` says
(NASFCOS_FPN reads ``inputs[1..3]`` for their sizes), so fewer inputs break it; a cascade of
decode heads may combine the previous head's output with its own input position by position
(OCRNet's OCRHead), which holds only where both stages had one stride (a dilated ResNet). Only
running them shows that.
"""
import copy
import inspect
import logging
from typing import Dict, Optional, Tuple

import torch
from mmengine.logging import print_log
from mmengine.registry import DefaultScope

from ..runtime.config import task_registry
from .consumers import typed_modules
from .mapping import Mapping
from .probe import PROBE_SIZE, run_module

# mmcv's words for an op without a kernel on this device (GPU-only ops on a CPU machine).
_NO_KERNEL = 'implementation for device'


def neck_error(model: Dict, mapping: Mapping, scope: str) -> Optional[str]:
    """Why the first neck, with its rewritten fields, fails on the new backbone outputs, or
    None if it runs (or there is no neck, or it cannot run here: GPU-only ops)."""
    necks = typed_modules('model.neck', model.get('neck'))
    if not necks or not mapping.spatial:
        return None
    path, cfg = necks[0]
    cfg = copy.deepcopy(dict(cfg))
    cfg.update(mapping.updates.get(path, {}))
    cfg.pop('init_cfg', None)
    shapes = [(1, c, h, w) for c, (h, w) in zip(mapping.out_channels, mapping.spatial)]
    errors = []
    for device in ('meta', 'cpu'):
        try:
            run_module(cfg, scope, device,
                       lambda d: tuple(torch.rand(shape, device=d) for shape in shapes))
            return None
        except Exception as error:  # the neck's own exception is the finding
            errors.append(f'{type(error).__name__}: {error}')
    if all(_NO_KERNEL in e for e in errors):
        _warn_unchecked(path, errors[-1])
        return None
    return errors[-1]


def _warn_unchecked(path: str, error: str) -> None:
    print_log(f'swap_backbone: could not run {path} here to check it: {error}',
              logger='current', level=logging.WARNING)


def cascade_error(model: Dict, mapping: Mapping, scope: str) -> Optional[Tuple[str, str]]:
    """``(path, why)`` for the first head of a cascade of mmseg decode heads that fails on
    ConvNeXt-shaped maps (each head after the first also gets the previous head's output), or
    None if they run (or there is no cascade, or a head cannot run here: GPU-only ops)."""
    heads = typed_modules('model.decode_head', model.get('decode_head'))
    if scope != 'mmseg' or len(heads) < 2 or model.get('neck'):
        return None
    maps = [torch.rand(1, c, PROBE_SIZE // s, PROBE_SIZE // s)
            for c, s in zip(mapping.out_channels, mapping.out_strides)]
    previous = None
    for path, cfg in heads:
        cfg = copy.deepcopy(dict(cfg))
        cfg.update(mapping.updates.get(path, {}))
        cfg.pop('init_cfg', None)
        try:
            with torch.no_grad(), DefaultScope.overwrite_default_scope(scope):
                head = task_registry(scope).build(cfg).eval()
                if previous is not None and len(inspect.signature(head.forward).parameters) < 2:
                    return None  # not a cascade head (no previous output to combine)
                previous = head(maps) if previous is None else head(maps, previous)
        except Exception as error:  # the head's own exception is the finding
            why = f'{type(error).__name__}: {error}'
            if _NO_KERNEL in why:
                _warn_unchecked(path, why)
                return None
            return path, why
    return None
