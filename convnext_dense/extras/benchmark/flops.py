"""Multiply-accumulate counts from mmengine's FLOP analyzer (``mmengine.analysis``)."""
from typing import Sequence

import torch
from torch import nn

from ...cpu_fast_paths import fast_paths


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on a zero tensor of ``input_shape``.

    mmengine counts one fused multiply-add as one "flop" (convolutions, linears, norms); achieved
    FLOP/s therefore use ``2 * macs``. The model is traced on the plain path, since the tracer
    cannot count the fused oneDNN operators.
    """
    from mmengine.analysis import FlopAnalyzer
    was_training = model.training
    model.eval()
    try:
        with fast_paths(False), torch.no_grad():
            analyzer = FlopAnalyzer(model, (torch.zeros(tuple(input_shape)),))
            # GELU, adds and multiplies are not counted (mmengine's convention); say nothing.
            analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            total = analyzer.total()
    finally:
        model.train(was_training)
    return int(total)
