"""Training path of the blocks' Linear layers: oneDNN matmuls where torch's BLAS runs slowly.

torch computes a float32 ``nn.Linear`` and both its gradients with its BLAS, MKL on x86 builds.
On CPUs not made by Intel MKL runs its generic code branch (``MKL_VERBOSE=1`` names "Intel(R)
Architecture processors"): on a 2-core AMD EPYC with AVX-512 (Zen 5) it reached 113 GFLOP/s on
ConvNeXt-B's block matmuls where oneDNN's JIT kernels reached about twice that, and with both
limited to AVX2 oneDNN still took 0.82-0.91x MKL's time. There
(:func:`~.cpu_support.train_matmul_route`) the blocks' ``PointwiseLinear`` layers and the
downsampling matmul run as :class:`OnednnLinear`: the forward pass, the input gradient and the
weight gradient as oneDNN matmuls, the last reading its transposed operands in place (oneDNN
takes strided inputs; copying them first cost more than the matmul saved on stage 1).
"""
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from . import cpu_support
from .fused_ops import ONEDNN_LINEAR, linear
from .switch import fast_paths_enabled, tracing

# Input features from which oneDNN computes the weight gradient (``grad.T @ x``); narrower layers
# keep torch's matmul. ConvNeXt-B's stage-1 pwconv1 (128 -> 512, 16384 rows at 512x512) took 1.37x
# MKL's time through oneDNN with AVX-512 and 1.68x with AVX2 kernels; from 256 inputs on
# 0.44-0.65x and 0.85-1.01x (the AMD EPYC above, one thread).
GRAD_WEIGHT_MIN_IN_FEATURES = 256
# Multiply-adds per matmul from which oneDNN runs it: below, its per-call cost outweighs the
# faster kernel (forward and both gradients, 32-256 channels, 64-16384 rows: even at about 1 M
# with AVX-512 and 4-8 M with AVX2 kernels; 1.8-2x MKL's time at 0.26 M).
MIN_MULTIPLY_ADDS = 1 << 23


class OnednnLinear(torch.autograd.Function):
    """``x @ weight.T + bias`` for 2-D ``x``, forward and backward as oneDNN matmuls.

    The same numbers as ``F.linear`` to float32 rounding (the sums are blocked differently).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = linear(grad, weight.t(), None)
        if ctx.needs_input_grad[1]:
            grad_weight = (linear(grad.t(), x.t(), None)
                           if x.shape[1] >= GRAD_WEIGHT_MIN_IN_FEATURES else grad.t().mm(x))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias


def onednn_training_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`train_matmul` runs ``x @ weight.T`` through :class:`OnednnLinear`: a float32
    training step on CPU (something needs a gradient, no autocast, not traced) with at least
    :data:`MIN_MULTIPLY_ADDS`, where :func:`~.cpu_support.train_matmul_route` says
    ``'onednn'``."""
    return (ONEDNN_LINEAR and fast_paths_enabled() and torch.is_grad_enabled()
            and x.device.type == 'cpu' and x.dtype == torch.float32
            and weight.dtype == torch.float32
            and x.numel() * weight.shape[0] >= MIN_MULTIPLY_ADDS
            and (x.requires_grad or weight.requires_grad)
            and not torch.is_autocast_enabled('cpu') and not tracing()
            and cpu_support.train_matmul_route() == 'onednn')


def train_matmul(x: torch.Tensor, weight: torch.Tensor,
                 bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` over the last dim of ``x``, through oneDNN where
    :func:`onednn_training_applies`, else ``F.linear`` itself."""
    if not onednn_training_applies(x, weight):
        return torch.nn.functional.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    out = OnednnLinear.apply(rows, weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])
