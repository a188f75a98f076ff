"""Build a config's backbone and measure what it feeds the rest of the model."""
import copy
from typing import NamedTuple, Tuple

import torch
from mmengine.registry import DefaultScope

from ..runtime.config import task_registry
from .errors import SwapRefused

# Large enough that every ResNet stage (even dilated ones) keeps a spatial extent above 1.
PROBE_SIZE = 128
_STAGE_OF_STRIDE = {4: 0, 8: 1, 16: 2, 32: 3}


class Feeds(NamedTuple):
    """One entry per backbone output, in output order."""
    channels: Tuple[int, ...]
    strides: Tuple[int, ...]
    stages: Tuple[int, ...]  # stage index 0..3 each output comes from
    maps: Tuple[torch.Tensor, ...] = ()  # the outputs themselves, for probing the neck


def run_module(cfg: dict, scope: str, device: str, inputs):
    """Build ``cfg`` on ``device`` ('meta' computes shapes only) and call it in eval mode."""
    with torch.device(device), torch.no_grad(), DefaultScope.overwrite_default_scope(scope):
        module = task_registry(scope).build(cfg)
        module.eval()
        return module, module(inputs(device))


def _run_backbone(cfg: dict, scope: str, device: str):
    def image(device):
        return torch.rand(1, cfg.get('in_channels', 3), PROBE_SIZE, PROBE_SIZE, device=device)
    backbone, outputs = run_module(cfg, scope, device, image)
    return outputs, getattr(backbone, 'out_indices', None)


def probe_backbone(backbone_cfg: dict, scope: str, field: str = 'model.backbone') -> Feeds:
    """Build ``backbone_cfg`` (without its weights) and run a forward to read its outputs.

    The forward runs on the meta device (shapes without arithmetic) where every op allows it.

    The stage of each output comes from the built module's ``out_indices`` when it has one
    entry per output, otherwise from the stride (4, 8, 16, 32 are stages 0..3).

    Raises:
        SwapRefused: the backbone cannot be built or run, or its outputs are not feature maps
            that can be tied to stages.
    """
    cfg = copy.deepcopy(dict(backbone_cfg))
    cfg.pop('init_cfg', None)
    cfg.pop('pretrained', None)
    try:
        outputs, out_indices = _run_backbone(cfg, scope, 'meta')  # shapes only, no compute
    except Exception:  # some ops (mmcv's CPU/CUDA kernels) have no meta version: run for real
        try:
            outputs, out_indices = _run_backbone(cfg, scope, 'cpu')
        except Exception as error:  # the registry wraps any constructor error; report it whole
            raise SwapRefused(f'{field}.type', f'{cfg.get("type")!r} could not be built and run '
                              f'to read its output channels: {error}') from error
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    if not all(isinstance(o, torch.Tensor) and o.dim() == 4 for o in outputs):
        raise SwapRefused(field, f'{cfg.get("type")!r} does not return a tuple of (N, C, H, W) '
                          'feature maps')
    channels = tuple(int(o.shape[1]) for o in outputs)
    strides = tuple(PROBE_SIZE // int(o.shape[2]) for o in outputs)
    if out_indices is not None and len(tuple(out_indices)) == len(outputs):
        stages = tuple(int(i) for i in out_indices)
    elif all(s in _STAGE_OF_STRIDE for s in strides):
        stages = tuple(_STAGE_OF_STRIDE[s] for s in strides)
    else:
        raise SwapRefused(field, f'{cfg.get("type")!r} returns {len(outputs)} maps with strides '
                          f'{list(strides)}, which do not match its out_indices {out_indices} nor '
                          'the ConvNeXt stage strides 4, 8, 16, 32; cannot tell which stage each '
                          'output comes from')
    if any(not 0 <= s <= 3 for s in stages):
        raise SwapRefused(f'{field}.out_indices', f'stages {list(stages)} are outside 0..3, the '
                          'stages ConvNeXt has')
    return Feeds(channels, strides, stages, tuple(outputs))
