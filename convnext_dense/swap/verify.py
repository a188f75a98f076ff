"""Run the rewritten neck on maps shaped like ConvNeXt's outputs before trusting the mapping.

A neck may index its inputs by absolute position whatever its ``start_level`` says
(NASFCOS_FPN reads ``inputs[1..3]`` for their sizes), so fewer inputs break it; only running it
shows that.
"""
import copy
import logging
from typing import Dict, Optional

import torch
from mmengine.logging import print_log

from .consumers import typed_modules
from .mapping import Mapping
from .probe import run_module


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
    if all('implementation for device' in e for e in errors):
        print_log(f'swap_backbone: could not run {path} here to check it: {errors[-1]}',
                  logger='current', level=logging.WARNING)
        return None
    return errors[-1]
