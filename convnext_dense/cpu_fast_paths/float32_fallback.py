"""bfloat16 asked for on a CPU without bf16 arithmetic: compute in float32, return bfloat16.

Where the CPU has no bf16 arithmetic (see :mod:`.cpu_support`), oneDNN converts bf16 in software
(AVX-512 without BF16: about 3x slower than float32) or, with AVX2 only, has no bf16 kernels and
torch runs reference kernels (about 8x slower; a grouped 7x7 convolution one group at a time).
The backbone then computes in float32 and returns what the plain path would have returned:

* under ``torch.autocast('cpu', dtype=torch.bfloat16)`` the parameters are float32 already:
  autocast is switched off inside the backbone (training too, gradients included);
* for a model cast to bfloat16 (inference only) a float32 copy of it runs instead; the copy
  is kept, as much memory as the float32 model, until a parameter changes.
"""
import copy
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from . import cpu_support
from .fused_ops import ParameterCache
from .switch import fast_paths_enabled, tracing

AUTOCAST, CAST = 'autocast', 'cast'


def bf16_request(module: nn.Module, x: torch.Tensor) -> Optional[str]:
    """:data:`CAST` for bfloat16 parameters or input, :data:`AUTOCAST` under CPU bf16 autocast."""
    param = next(module.parameters(), None)
    if x.dtype == torch.bfloat16 or (param is not None and param.dtype == torch.bfloat16):
        return CAST
    if torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16:
        return AUTOCAST
    return None


def emulated_bf16_request(module: nn.Module, x: torch.Tensor) -> Optional[str]:
    """The bf16 request that this CPU would emulate and float32 serves better, else ``None``.

    ``None`` too on other devices, with the fast paths off (the plain reference), under tracing,
    and when training a bfloat16-cast model (the plain path handles it, slowly).
    """
    # Tracing first: torch's tracer cannot record the capability check's first (uncached) call.
    if (x.device.type != 'cpu' or not fast_paths_enabled() or tracing()
            or cpu_support.native_bf16()):
        return None
    request = bf16_request(module, x)
    if request is None:
        return None
    if request == CAST and torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in module.parameters())):
        return None
    cpu_support.warn_bf16_emulated()
    return request


def autocast_output_dtype(layer_scale: bool) -> torch.dtype:
    """The plain path's output dtype under bf16 autocast: the float32 layer scale promotes it."""
    return torch.float32 if layer_scale else torch.bfloat16


class Float32Copy(ParameterCache):
    """A float32 copy of a module, rebuilt when a parameter of the original changes.

    Copies and pickles of the owner start empty.
    """

    def get(self, module: nn.Module) -> nn.Module:
        """The float32 copy of ``module``, in its train/eval mode."""
        params = tuple(module.parameters())
        key, copied = self.cached(params)
        if copied is None:
            with torch.no_grad():
                copied = copy.deepcopy(module).float()
            self.keep(key, params, copied)
        if copied.training != module.training:
            copied.train(module.training)
        return copied


def run(module: nn.Module, x: torch.Tensor, request: str, forward: Callable,
        float32_copy: Float32Copy, layer_scale: bool) -> Tuple[torch.Tensor, ...]:
    """``forward`` of ``module`` (or of its float32 copy) in float32, outputs in the asked dtype.

    Args:
        module: The module whose parameters ``forward`` reads.
        x: The input.
        request: What :func:`emulated_bf16_request` returned.
        forward: Takes ``(module, x)`` and returns a tuple of tensors.
        float32_copy: Where the float32 copy of a bfloat16 module is kept.
        layer_scale: Whether the blocks have a layer scale (decides autocast's output dtype).
    """
    if request == AUTOCAST:
        with torch.autocast('cpu', enabled=False):
            outs = forward(module, x.float())
        dtype = autocast_output_dtype(layer_scale)
    else:
        outs = forward(float32_copy.get(module), x.float())
        dtype = torch.bfloat16
    return tuple(out.to(dtype) for out in outs)
