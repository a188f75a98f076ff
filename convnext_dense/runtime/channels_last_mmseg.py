"""Two CPU costs of mmseg's decode heads on channels-last maps, removed without changing a value.

- ``UPerHead`` upsamples three FPN levels and concatenates them with the fourth. In the backward
  pass each upsampling receives a channel slice of the concatenation's channels-last gradient,
  which torch's bilinear upsampling backward copies to ``(N, C, H, W)`` and runs on its slow
  path: 3-4 ms against 0.3 ms on a channels-last gradient at 8 x 64 x 32 x 32 (one thread). The
  upsampled maps here pass their gradient on channels-last.
- ``BaseDecodeHead.loss_by_feat`` logs ``acc_seg`` through mmseg's ``accuracy()``: a ``topk``
  across the channels of the channels-last logits and boolean-mask gathers, about 12 ms of a 210
  ms step of the demo's UperNet. For ``topk=1`` without ``thresh`` an ``argmax`` comparison counts
  the same pixels (ties between classes aside) and gives the same number.

Together a step of the demo's UperNet took 0.185-0.189 instead of 0.193-0.211 s (one thread,
Xeon with AMX, two rounds each on a noisy host).
:func:`speed_up_mmseg_heads` swaps the two functions those mmseg modules call (``resize`` in
``mmseg.models.decode_heads.uper_head``, ``accuracy`` in ``...decode_head``) for these wrappers,
which call mmseg's own for every case they do not cover. The swap is process-wide and changes
no value, also for models not in channels-last.
"""
import importlib

import torch


def _mmseg_resize():
    return importlib.import_module('mmseg.models.utils').resize


def _mmseg_accuracy():
    # mmseg.models.losses exports the function under its module's name.
    return importlib.import_module('mmseg.models.losses.accuracy').accuracy


class _ChannelsLastGradient(torch.autograd.Function):
    """Identity whose backward makes the gradient channels-last-contiguous."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def resize(input: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """mmseg's ``resize``; a channels-last result passes its gradient on channels-last."""
    out = _mmseg_resize()(input, *args, **kwargs)
    if (out.dim() == 4 and out.requires_grad and not torch.jit.is_tracing()
            and out.is_contiguous(memory_format=torch.channels_last)):
        out = _ChannelsLastGradient.apply(out)
    return out


def accuracy(pred: torch.Tensor, target: torch.Tensor, topk=1, thresh=None, ignore_index=None):
    """mmseg's ``accuracy``, the top-1 case without ``thresh`` counted by ``argmax``."""
    if (topk != 1 or thresh is not None or pred.size(0) == 0 or pred.dim() != target.dim() + 1
            or pred.shape[:1] + pred.shape[2:] != target.shape):
        return _mmseg_accuracy()(pred, target, topk, thresh, ignore_index)
    with torch.no_grad():
        hits = pred.argmax(1) == target
        if ignore_index is None:
            total = target.numel()
        else:
            valid = target != ignore_index
            hits &= valid
            total = int(valid.sum())
        # mmseg's arithmetic, eps included, so the value is the same to the last bit.
        eps = torch.finfo(torch.float32).eps
        correct = hits.sum().float().reshape(1) + eps
        return correct.mul_(100.0 / (total + eps))


def speed_up_mmseg_heads() -> bool:
    """Swap in :func:`resize` and :func:`accuracy` for mmseg's decode heads (idempotent).

    Returns:
        False where mmseg is not installed (nothing to do).
    """
    try:
        from mmseg.models.decode_heads import decode_head, uper_head
    except ImportError:
        return False
    uper_head.resize = resize
    decode_head.accuracy = accuracy
    return True
