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


def _image(cfg: dict, device: str, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, cfg.get('in_channels', 3), PROBE_SIZE, PROBE_SIZE, device=device)


def _run_backbone(cfg: dict, scope: str, device: str):
    return run_module(cfg, scope, device, lambda device: _image(cfg, device))


def _output_count(outputs) -> int:
    return 1 if isinstance(outputs, torch.Tensor) else len(outputs)


def _check_train_mode_outputs(backbone: torch.nn.Module, cfg: dict, device: str,
                              eval_count: int, field: str) -> None:
    """Refuse a backbone that returns other maps in training (PIDNet's and DDRNet's extra
    maps feed their heads' training losses only): ConvNeXt returns the same maps in both."""
    try:
        with torch.device(device), torch.no_grad():
            backbone.train()
            # two images: BatchNorm in training needs more than one value per channel
            outputs = backbone(_image(cfg, device, batch=2))
    except Exception:  # noqa: BLE001  (the eval-mode probe is what the swap maps)
        return
    if _output_count(outputs) != eval_count:
        raise SwapRefused(field, f'{cfg.get("type")!r} returns {_output_count(outputs)} maps in '
                          f'training and {eval_count} in evaluation: its heads read maps '
                          'ConvNeXt does not have (ConvNeXt returns the same maps in both)')


def _indices_are_stages(out_indices, strides: Tuple[int, ...]) -> bool:
    if out_indices is None or len(tuple(out_indices)) != len(strides):
        return False
    return all(isinstance(i, int) and 0 <= i <= 3 and stride <= 4 * 2 ** i
               for i, stride in zip(out_indices, strides))


def probe_backbone(backbone_cfg: dict, scope: str, field: str = 'model.backbone') -> Feeds:
    """Build ``backbone_cfg`` (without its weights) and run a forward to read its outputs.

    The forward runs on the meta device (shapes without arithmetic) where every op allows it.

    The stage of each output comes from the built module's ``out_indices`` when they can be
    ConvNeXt stages (one per output, 0..3, each output's stride at most that stage's: a dilated
    ResNet's stages keep their numbers), otherwise from the stride (4, 8, 16, 32 are stages
    0..3): EfficientNet, CSPDarknet or MobileNet count their own layers in ``out_indices``.

    Raises:
        SwapRefused: the backbone cannot be built or run, or its outputs are not feature maps
            that can be tied to stages.
    """
    cfg = copy.deepcopy(dict(backbone_cfg))
    cfg.pop('init_cfg', None)
    cfg.pop('pretrained', None)
    device = 'meta'  # shapes only, no compute
    try:
        backbone, outputs = _run_backbone(cfg, scope, device)
    except Exception:  # some ops (mmcv's CPU/CUDA kernels) have no meta version: run for real
        device = 'cpu'
        try:
            backbone, outputs = _run_backbone(cfg, scope, device)
        except Exception as error:  # the registry wraps any constructor error; report it whole
            raise SwapRefused(f'{field}.type', f'{cfg.get("type")!r} could not be built and run '
                              f'to read its output channels: {error}') from error
    out_indices = getattr(backbone, 'out_indices', None)
    _check_train_mode_outputs(backbone, cfg, device, _output_count(outputs), field)
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    if not all(isinstance(o, torch.Tensor) and o.dim() == 4 for o in outputs):
        raise SwapRefused(field, f'{cfg.get("type")!r} does not return a tuple of (N, C, H, W) '
                          'feature maps')
    channels = tuple(int(o.shape[1]) for o in outputs)
    strides = tuple(PROBE_SIZE // int(o.shape[2]) for o in outputs)
    if _indices_are_stages(out_indices, strides):
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
