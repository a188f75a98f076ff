"""Autograd pieces that make the block's training step and ``with_cp`` cheap on CPU.

* :class:`DepthwiseConv2d`: oneDNN's weight gradient for a 7x7 depthwise conv is several times
  slower than the forward pass on CPU; here it is computed as forward convolutions.
* :func:`channels_first`: on one image's large map, torch's 4-D permute copy from channels-last to
  the standard layout is slower than a 2-D transpose copy (1.4-3.9x on one thread at
  ConvNeXt-B's 512 px maps); on small maps the per-image copies' overhead loses.
* :func:`keep_pwconv2_context`: selective checkpointing that keeps pwconv2's output, so the
  recomputation in the backward pass skips that matmul.
"""
import functools
import os
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .switch import tracing

_MIN_TILE_ROWS = 4
_DEFAULT_L2_BYTES = 1 << 20


def l2_cache_bytes() -> int:
    """Size of one core's L2 cache (1 MiB where the system does not say)."""
    try:
        size = os.sysconf('SC_LEVEL2_CACHE_SIZE')
        if size > 0:
            return size
    except (AttributeError, ValueError, OSError):
        pass
    try:
        for index in range(8):
            folder = f'/sys/devices/system/cpu/cpu0/cache/index{index}'
            with open(f'{folder}/level') as level:
                if level.read().strip() != '2':
                    continue
            with open(f'{folder}/size') as size_file:
                text = size_file.read().strip().upper()
            scale = {'K': 1 << 10, 'M': 1 << 20}.get(text[-1:], 1)
            return int(text.rstrip('KM')) * scale
    except (OSError, ValueError):
        pass
    return _DEFAULT_L2_BYTES


# Floats of (W, C) rows per weight-gradient tile: a tile of the input and one of the gradient
# (float32) together fill half the core's L2 cache. With a fixed 128k floats (1 MiB for both),
# right for a 1.25 MiB Ice Lake L2, the tiles spill out of a 512 KiB AMD EPYC L2; on both, a
# quarter to a half of that size ran fastest or within noise of it.
_TILE_FLOATS = max(16 * 1024, l2_cache_bytes() // 16)
# Floats of one image's (C, H, W) map up to which a batch's weight gradient is one grouped
# convolution (see :func:`_batched_weight_grad`). Measured on Ice Lake with AVX-512 and with
# AVX2-only kernels, 1 and 2 threads, batches of 2-64: at up to ~18k floats per image it took
# 0.35-0.95x the time of the row tiles, whose per-call overhead dominates on small maps; from
# ~32k on it lost as often as it won, and at 128k it took up to 2x.
_BATCHED_MAX_IMAGE_FLOATS = 24 * 1024
# Floats of one image's map up to which :func:`channels_first` leaves the copy to torch (see
# :func:`transposes_per_image`); between 64k and 128k the two took about the same time.
_PER_IMAGE_MIN_FLOATS = 64 * 1024


def depthwise_weight_grad(x: torch.Tensor, grad: torch.Tensor, padding: int) -> torch.Tensor:
    """Weight gradient of a stride-1 depthwise conv with 'same' ``padding``, as forward convs.

    Per channel the gradient is the cross-correlation of the padded input with the output
    gradient: a depthwise *forward* convolution whose kernel is the gradient. Run over tiles of
    rows, one after the other on all of torch's threads, and summed in float32, it is several
    times faster than oneDNN's backward-weights kernel and at least as precise. A batch
    of small maps runs as one convolution instead (:func:`_batched_weight_grad`).

    Args:
        x: Input ``(N, C, H, W)``, ideally channels-last.
        grad: Gradient of the output, same shape.
        padding: The convolution's padding (kernel size ``2 * padding + 1``).

    Returns:
        The ``(C, 1, k, k)`` weight gradient.
    """
    batch, channels, height, width = x.shape
    size = 2 * padding + 1
    if batch == 0:  # drop path dropped every sample (see .sample_skip)
        return x.new_zeros((channels, 1, size, size))
    if batch > 1 and channels * height * width <= _BATCHED_MAX_IMAGE_FLOATS:
        return _batched_weight_grad(x, grad, padding)
    padded = F.pad(x, (padding,) * 4).contiguous(memory_format=torch.channels_last)
    rows = max(_MIN_TILE_ROWS, _TILE_FLOATS // max(1, width * channels))
    # Tiles in turn, each convolution on all threads: with 2 threads a ConvNeXt-B training step
    # was 2-5 % faster than with single-threaded workers sharing the tiles out (AVX-512 and
    # AVX2 kernels).
    total = None
    for n in range(batch):
        for top in range(0, height, rows):
            bottom = min(top + rows, height)
            kernel = grad[n:n + 1, :, top:bottom].permute(1, 0, 2, 3)  # (C, 1, rows, W)
            part = F.conv2d(padded[n:n + 1, :, top:bottom + 2 * padding], kernel,
                            groups=channels)
            total = part.float() if total is None else total.add_(part)
    return total.reshape(channels, 1, size, size).to(x.dtype)


def _batched_weight_grad(x: torch.Tensor, grad: torch.Tensor, padding: int) -> torch.Tensor:
    """:func:`depthwise_weight_grad` of a batch of small maps in one convolution.

    Every (image, channel) pair is a group of its own: the padded input as ``(1, N * C, H', W')``
    correlated with the gradient as ``(N * C, 1, H, W)`` kernels, then summed over the images in
    float32.
    """
    batch, channels, height, width = x.shape
    groups = batch * channels
    padded = F.pad(x.contiguous(), (padding,) * 4)
    per_image = F.conv2d(padded.view(1, groups, *padded.shape[2:]),
                         grad.contiguous().view(groups, 1, height, width), groups=groups)
    size = 2 * padding + 1
    return per_image.view(batch, channels, size, size).float().sum(0).unsqueeze(1).to(x.dtype)


class DepthwiseConv2d(torch.autograd.Function):
    """Stride-1 depthwise conv with 'same' padding and a fast backward on CPU.

    Forward and input gradient are oneDNN's, the same numbers as ``nn.Conv2d``; the weight
    gradient comes from :func:`depthwise_weight_grad`, the bias gradient from a sum.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, 1, padding, 1, x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        padding = ctx.padding
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, (1, 1), (padding, padding), (1, 1), False, (0, 0),
                x.shape[1], (True, False, False))[0]
        if ctx.needs_input_grad[1]:
            grad_weight = _strided_like(depthwise_weight_grad(x, grad, padding), weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias, None


def _strided_like(grad: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``grad`` with ``param``'s strides exactly (a copy of C x k x k floats where they differ).

    Autograd accepts a ``(C, 1, k, k)`` gradient whose size-1 dim has another stride than the
    channels-last weight's, but DDP's reducer compares all strides and warned "Grad strides do
    not match bucket view strides" on every rank of every distributed run.
    """
    if grad.stride() == param.stride():
        return grad
    return torch.empty_like(param, dtype=grad.dtype).copy_(grad)


def depthwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for the block's 7x7 depthwise conv, with :class:`DepthwiseConv2d` on CPU."""
    if x.device.type != 'cpu' or not torch.is_grad_enabled() or tracing():
        return conv(x)
    weight, bias = conv.weight, conv.bias
    if torch.is_autocast_enabled('cpu'):
        # What autocast does to conv2d: inputs in its dtype (the casts are differentiable).
        dtype = torch.get_autocast_dtype('cpu')
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        with torch.autocast('cpu', enabled=False):
            return DepthwiseConv2d.apply(x, weight, bias, conv.padding[0])
    return DepthwiseConv2d.apply(x, weight, bias, conv.padding[0])


def _last_to_first(x: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = x.shape
    out = x.new_empty((batch, channels, height, width))
    for n in range(batch):
        out[n].view(channels, height * width).copy_(
            x[n].permute(1, 2, 0).reshape(height * width, channels).t())
    return out


def _first_to_last(x: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = x.shape
    out = torch.empty_like(x, memory_format=torch.channels_last)
    for n in range(batch):
        out[n].permute(1, 2, 0).view(height * width, channels).copy_(
            x[n].reshape(channels, height * width).t())
    return out


class ChannelsFirst(torch.autograd.Function):
    """``x.contiguous()`` of a channels-last ``(N, C, H, W)`` tensor as 2-D transpose copies."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return _last_to_first(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _first_to_last(grad.contiguous())


def only_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 4-D channels-last tensor that is not also contiguous the standard way."""
    return (x.ndim == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))


def transposes_per_image(x: torch.Tensor) -> bool:
    """Whether :func:`channels_first` copies ``x`` image by image (2-D transposes).

    Only for maps of more than :data:`_PER_IMAGE_MIN_FLOATS` floats per image. Below that, on an
    AMD EPYC (Zen 3, AVX2) with batches of 8-64 maps of 2-32 px as the demo trains, torch's own
    copy took 0.06-0.75x the time of the per-image transposes, both ways and on 1 and 2 threads,
    with one exception: back to channels-last, 32 channels of 32 x 32 px on one thread, 1.9-2.2x
    (about 0.4 ms a step in the demo's fine-tuning, against 4-9 ms saved in a pre-training step).
    """
    return x[0].numel() > _PER_IMAGE_MIN_FLOATS if x.shape[0] else False


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the standard contiguous layout; fast for a channels-last tensor on CPU."""
    if (x.device.type != 'cpu' or tracing() or not only_channels_last(x)
            or not transposes_per_image(x)):
        return x.contiguous()
    return ChannelsFirst.apply(x)


def _keep_matmuls_with(weight: torch.Tensor, ctx, op, *args, **kwargs):
    from torch.utils.checkpoint import CheckpointPolicy
    if op in _MATMUL_OPS and any(
            isinstance(arg, torch.Tensor) and arg.data_ptr() == weight.data_ptr() for arg in args):
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


# torch's matmuls, and oneDNN's that :mod:`.train_matmuls` runs in their place on some CPUs.
_MATMUL_OPS = (torch.ops.aten.addmm.default, torch.ops.aten.mm.default,
               *((torch.ops.mkldnn._linear_pointwise.default,)
                 if hasattr(torch.ops.mkldnn, '_linear_pointwise') else ()))


def keep_pwconv2_context(pwconv2: nn.Linear) -> Optional[Callable]:
    """``context_fn`` for ``torch.utils.checkpoint`` that saves the matmul with pwconv2's weight.

    The backward pass then recomputes dwconv, LayerNorm, pwconv1 and GELU but not the second
    matmul, whose output only gamma's gradient needs: one matmul less per block for one more
    ``C``-channel map kept. ``None`` on torch versions without selective checkpointing.
    """
    try:
        from torch.utils.checkpoint import create_selective_checkpoint_contexts
    except ImportError:
        return None
    policy = functools.partial(_keep_matmuls_with, pwconv2.weight)
    return functools.partial(create_selective_checkpoint_contexts, policy)
