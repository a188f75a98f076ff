"""Hooks the convnext_dense tools add to runs: a non-finite loss check (training) and a limit on
the test images ``--show-dir`` draws (testing)."""
import math
from typing import Optional, Sequence

import torch
from mmengine.hooks import Hook

from ..model.archs import is_int
from ..registry import HOOKS


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN / inf loss; the message names the iteration, the terms and the
    last good checkpoint (``tools/train.py`` prints it as one ``error:`` line)."""


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
        raise NonFiniteLossError(
            f'non-finite loss at iteration {runner.iter + 1} (non-finite: {", ".join(bad)}; '
            f'all terms: {terms}). Training stopped before saving; last good checkpoint: {last}. '
            'Lower the learning rate, add gradient clipping (optim_wrapper.clip_grad) or check '
            'the annotations of this batch, then resume with tools/train.py --resume.')


@HOOKS.register_module()
class ShowLimitHook(Hook):
    """Let the visualization hook draw only the first ``limit`` test images (``--show-limit``).

    mmdet's and mmseg's visualization hooks draw every test image into ``--show-dir``; that can
    take longer than the inference (on a 2-core EPYC, about 0.26 s an image against 0.13 s for the
    demo models' inference). This hook runs after them (priority ``LOW``) and turns their
    ``draw`` off once ``limit`` images have gone through the test loop, so whole batches are drawn:
    with a batch size above 1, up to a batch less one image more than ``limit``.

    Args:
        limit: Test images to draw, >= 1.
    """

    priority = 'LOW'

    def __init__(self, limit: int) -> None:
        if not is_int(limit) or limit < 1:
            raise ValueError(f'limit must be an int >= 1 (test images to draw), got {limit!r}')
        self.limit = limit
        self.seen = 0

    def before_test(self, runner) -> None:
        self.seen = 0

    def after_test_iter(self, runner, batch_idx: int, data_batch=None,
                        outputs: Optional[Sequence] = None) -> None:
        self.seen += len(outputs or ())
        if self.seen < self.limit:
            return
        for hook in runner.hooks:
            if hook is not self and 'VisualizationHook' in type(hook).__name__:
                hook.draw = False


def _as_float(value) -> Optional[float]:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach())
    if isinstance(value, (int, float)):
        return float(value)
    return None
