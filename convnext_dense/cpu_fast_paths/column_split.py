"""The block MLP's second matmul as two halves of its output columns, where that is faster.

oneDNN runs a matmul on one thread when its blocking leaves a single unit of parallel work. On a
CPU with AMX that happens to the bf16 second layer of ConvNeXt-B's stage 3 at 512x512 (1024 rows,
2048 -> 512): 2.3 ms on two threads as on one, where two 256-column halves take 1.5 ms. At other
shapes the halves are slower (up to 2.9x). oneDNN's choice cannot be read in advance, so each
shape is timed the first time it is seen, both ways, and the faster kept (as
``torch.backends.cudnn.benchmark`` does), for low-precision inference on more than one thread
only: float32 and single-threaded calls never gain. The halves compute the same sums (each output
column from the same weight row; ConvNeXt-B's outputs were bit-identical on the AMX Xeon measured),
though a kernel that blocks the sums differently could round them differently.
"""
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch

# Forms are kept per (rows, in, out, dtype, threads, with residual); beyond this many shapes new
# ones take the whole matmul untimed (inputs of ever-changing size must not grow the table).
MAX_SHAPES = 256
# The halves must take less than this fraction of the whole matmul's time to be chosen.
MARGIN = 0.85
_ROUNDS = 3
_MIN_HALF = 64  # columns; narrower halves only add calls

_forced: Optional[bool] = None


@contextmanager
def force_column_split(split: Optional[bool]) -> Iterator[None]:
    """Within the block: always (True, float32 and one thread too) or never (False) split;
    None: each shape takes the form timed for it."""
    global _forced
    previous, _forced = _forced, split
    try:
        yield
    finally:
        _forced = previous


class SplitChoices:
    """Which form, whole or halves, each shape takes; timed on first sight.

    Args:
        clock: Seconds, for the timing (wall clock: the gain is a second thread doing work).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.choices: Dict[Tuple, bool] = {}

    def run(self, key: Tuple, whole: Callable[[], torch.Tensor],
            halves: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The result of the form ``key`` takes, timing both the first time."""
        if _forced is not None:
            return halves() if _forced else whole()
        choice = self.choices.get(key)
        if choice is not None:
            return halves() if choice else whole()
        if len(self.choices) >= MAX_SHAPES:
            return whole()
        results = whole(), halves()  # the first calls build oneDNN's kernels and the halves
        times = {False: float('inf'), True: float('inf')}
        for _ in range(_ROUNDS):
            for split, form in ((False, whole), (True, halves)):
                start = self.clock()
                form()
                times[split] = min(times[split], self.clock() - start)
        choice = times[True] < MARGIN * times[False]
        self.choices[key] = choice
        return results[choice]


CHOICES = SplitChoices()


def applies(hidden: torch.Tensor, out_channels: int) -> bool:
    """Whether the split is worth timing: a low-precision matmul on more than one thread, into
    enough columns to halve (:func:`force_column_split` decides alone, columns aside)."""
    if out_channels % 2 or out_channels // 2 < _MIN_HALF:
        return False
    if _forced is not None:
        return _forced
    return hidden.dtype != torch.float32 and torch.get_num_threads() > 1


def second_layer(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 shortcut: Optional[torch.Tensor],
                 halves: Callable[[], Tuple[torch.Tensor, ...]],
                 matmul: Callable) -> torch.Tensor:
    """``hidden @ weight.T + bias (+ shortcut)``, whole or as two column halves (faster form).

    Args:
        hidden: ``(rows, in)``.
        weight, bias: The packed layer and its bias.
        shortcut: ``(rows, out)`` added to the result, or None.
        halves: Returns ``(weight_a, bias_a, weight_b, bias_b)``: the layer's two column halves,
            packed (called only when the halves run).
        matmul: ``matmul(hidden, weight, bias, shortcut)``, oneDNN's
            (:func:`~convnext_dense.cpu_fast_paths.fused_ops.second_matmul`).
    """
    def whole() -> torch.Tensor:
        return matmul(hidden, weight, bias, shortcut)

    def split() -> torch.Tensor:
        weight_a, bias_a, weight_b, bias_b = halves()
        cut = bias_a.numel()
        shortcut_a, shortcut_b = ((None, None) if shortcut is None else
                                  (shortcut[:, :cut].contiguous(), shortcut[:, cut:].contiguous()))
        return torch.cat((matmul(hidden, weight_a, bias_a, shortcut_a),
                          matmul(hidden, weight_b, bias_b, shortcut_b)), dim=1)

    key = (hidden.shape[0], hidden.shape[1], bias.numel(), hidden.dtype,
           torch.get_num_threads(), shortcut is None)
    return CHOICES.run(key, whole, split)
