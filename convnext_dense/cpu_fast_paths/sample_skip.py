"""Drop path that runs the residual branch on the kept samples only (the block's training path).

Stochastic depth multiplies a block's residual branch by zero for a random part of the batch;
the plain computation still runs the whole branch for those samples, forward and backward. The
published recipes train with high rates (the B configs: 0.4 and 0.6 at the last block, rising
linearly from 0), so on average a fifth to a third of the backbone's branch work is multiplied by
zero. Here the branch runs on the kept samples and its result is written back into a copy of the
input: the same function, with the same random masks, for less work.

When every sample of a batch is dropped the branch still runs, on an empty batch: every parameter
then gets a zero gradient as in the plain computation (not none, which would skip it in the
optimizer and leave DistributedDataParallel waiting for it).

Only on CPU (a GPU would have to synchronise to learn which samples were kept), and not in traced
or compiled code (data-dependent shapes).
"""
import torch

from .fast_grads import only_channels_last
from .switch import tracing


def skips_dropped_samples(x: torch.Tensor) -> bool:
    """Whether a drop-path block fed ``x`` runs its branch on the kept samples only."""
    return x.device.type == 'cpu' and not tracing()


def kept_samples(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the samples whose drop-path ``mask`` (``(N, 1, 1, 1)``) is not zero."""
    return mask.reshape(-1).nonzero().reshape(-1)


def take_samples(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` along the batch, channels-last where ``x`` is (one copy, no layout change)."""
    if only_channels_last(x):
        return x.permute(0, 2, 3, 1).index_select(0, index).permute(0, 3, 1, 2)
    return x.index_select(0, index)


def put_samples(x: torch.Tensor, index: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` whose samples ``index`` are ``samples``, in ``x``'s memory format."""
    if only_channels_last(x):
        return x.permute(0, 2, 3, 1).index_copy(
            0, index, samples.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return x.index_copy(0, index, samples)
