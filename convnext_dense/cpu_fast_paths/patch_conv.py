"""Training path of the downsampling layers: a patch convolution as one matmul.

ConvNeXt downsamples with 2x2 convolutions of stride 2, which see each input pixel once. oneDNN's
CPU backward pass for them is slow: a forward and backward of ConvNeXt-B's three downsampling
convolutions (1x3x512x512, one thread, Ice Lake Xeon) took 0.33-0.48x the time with AVX2 kernels
and 0.47-0.80x with AVX-512 as a matmul of the map's non-overlapping patches (flattened to rows
of ``k * k * C``) with the flattened weight; 0.35-0.79x for two 800x800 images and 0.37-0.99x at
the demo's small batched maps (1 and 2 threads, both ISA classes; two of them first measured at
1.2x took 0.69x and 0.90x over 21 interleaved rounds). The forward pass alone gains nothing, so
inference keeps the convolution.
"""
from typing import Optional

import torch
from torch import nn

from .switch import fast_paths_enabled, tracing
from .train_matmuls import train_matmul


def patch_matmul_applies(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether :func:`patch_matmul` computes ``conv(x)`` here: a float32 training step on CPU
    (something needs a gradient, no autocast, not traced) of a convolution over non-overlapping
    patches (kernel size equal to the stride, no padding or dilation, one group)."""
    if not (fast_paths_enabled() and torch.is_grad_enabled() and x.device.type == 'cpu'
            and x.dim() == 4 and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
            and not torch.is_autocast_enabled('cpu') and not tracing()):
        return False
    if not (x.requires_grad or any(p.requires_grad for p in conv.parameters())):
        return False
    return (tuple(conv.kernel_size) == tuple(conv.stride) and conv.groups == 1
            and tuple(conv.dilation) == (1, 1) and conv.padding in ((0, 0), 'valid'))


def patch_matmul(x: torch.Tensor, weight: torch.Tensor,
                 bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``conv2d(x, weight, bias, stride=k)`` for a ``(O, C, k, k)`` weight, as one matmul.

    Rows and columns that do not fill a whole patch are dropped, as the convolution drops them.
    Differentiable through autograd (two matmuls and the copy back in the backward pass); the
    matmuls are :func:`.train_matmuls.train_matmul`'s.

    Args:
        x: ``(N, C, H, W)``, ideally channels-last (then only the patches are copied).
        weight: ``(O, C, k, k)``.
        bias: ``(O,)`` or ``None``.

    Returns:
        ``(N, O, H // k, W // k)`` in channels-last memory format.
    """
    batch, channels, height, width = x.shape
    out_channels, _, size, _ = weight.shape
    rows, cols = height // size, width // size
    pixels = x.permute(0, 2, 3, 1)[:, :rows * size, :cols * size]  # (N, H, W, C)
    patches = (pixels.reshape(batch, rows, size, cols, size, channels)
               .permute(0, 1, 3, 2, 4, 5).reshape(batch * rows * cols, size * size * channels))
    flat_weight = weight.permute(0, 2, 3, 1).reshape(out_channels, size * size * channels)
    out = train_matmul(patches, flat_weight, bias)  # oneDNN's where torch's BLAS is slow
    return out.view(batch, rows, cols, out_channels).permute(0, 3, 1, 2)
