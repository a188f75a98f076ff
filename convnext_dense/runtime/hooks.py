"""Training hooks the convnext_dense tools add to every run."""
import math
from typing import Optional

import torch
from mmengine.hooks import Hook

from ..registry import HOOKS


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at the first non-finite loss, naming the iteration and the loss terms.

    It runs before the checkpoint hook, so no checkpoint of the broken model is written and the
    last good checkpoint stays the one ``--resume`` picks.
    """

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs:
            return
        values = {name: _as_float(value) for name, value in outputs.items()}
        values = {name: value for name, value in values.items() if value is not None}
        bad = sorted(name for name, value in values.items() if not math.isfinite(value))
        if not bad:
            return
        terms = ', '.join(f'{name}={value:.4g}' for name, value in sorted(values.items()))
        last = runner.message_hub.get_info('last_ckpt') or 'none saved yet'
        raise FloatingPointError(
            f'non-finite loss at iteration {runner.iter + 1} (non-finite: {", ".join(bad)}; '
            f'all terms: {terms}). Training stopped before saving; last good checkpoint: {last}. '
            'Lower the learning rate, add gradient clipping (optim_wrapper.clip_grad) or check '
            'the annotations of this batch, then resume with tools/train.py --resume.')


def _as_float(value) -> Optional[float]:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach())
    if isinstance(value, (int, float)):
        return float(value)
    return None
