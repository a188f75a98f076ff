"""The ConvNeXt building blocks: a channels-first LayerNorm, the downsampling convolution and the
inverted-bottleneck block."""
import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..cpu_fast_paths import (MKL_PACKED_LINEAR, ONEDNN_LINEAR, ColumnHalves, InferenceWeights,
                              MklPackedWeights, cpu_support, depthwise_conv, fast_paths_enabled,
                              fused_mlp, keep_pwconv2_context, kept_samples, patch_matmul,
                              patch_matmul_applies, put_samples, skips_dropped_samples,
                              take_samples, tracing, train_matmul)


# torch's hooks on every module (nn.modules.module.register_module_forward_hook and the like).
_GLOBAL_HOOKS = ('_global_forward_hooks', '_global_forward_pre_hooks', '_global_backward_hooks',
                 '_global_backward_pre_hooks')


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of an ``(N, C, H, W)`` tensor.

    On a channels-last tensor both permutes are views, so no copy is made.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class PatchConv2d(nn.Conv2d):
    """A convolution over non-overlapping ``patch_size`` x ``patch_size`` patches (the stride).

    An ``nn.Conv2d`` with the same parameters and results; in a float32 training step on CPU it
    runs as one matmul over the patches: forward and backward took 0.33-0.99x oneDNN's time (15
    shapes, 1 and 2 threads, AVX-512 and AVX2; see
    :mod:`convnext_dense.cpu_fast_paths.patch_conv`).
    """

    def __init__(self, in_channels: int, out_channels: int, patch_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if patch_matmul_applies(self, x):
            return patch_matmul(x, self.weight, self.bias)
        return super().forward(x)


class PointwiseLinear(nn.Linear):
    """The block's pointwise (1x1) convolutions, an ``nn.Linear`` over the channels-last dim.

    The same parameters and results; in a float32 training step on CPUs where torch's BLAS runs
    slowly (x86 CPUs not made by Intel) the matmuls are oneDNN's
    (:mod:`convnext_dense.cpu_fast_paths.train_matmuls`). Hooks on the layer run as on any module.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return train_matmul(x, self.weight, self.bias)


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``drop_prob``."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
    return x * mask.div_(keep_prob)


class ConvNeXtBlock(nn.Module):
    """dwconv 7x7 -> LayerNorm -> Linear C->4C -> GELU -> Linear 4C->C -> gamma -> DropPath -> +x.

    Three paths compute the same function; ``with convnext_dense.cpu_fast_paths.fast_paths(False):``
    forces the first. The plain path reads as the paper's figure. The training path folds gamma and
    drop path into one multiply-add with the residual; on CPU it uses a fast depthwise-conv
    backward, oneDNN matmuls where torch's BLAS is slow (:class:`PointwiseLinear`), and runs
    the branch on the samples drop path keeps only (:mod:`.sample_skip` of
    :mod:`convnext_dense.cpu_fast_paths`); with ``with_cp`` it recomputes all but pwconv2 in the
    backward pass. On CPU, when nothing needs a gradient, the fused path runs two oneDNN matmuls
    with GELU and the residual add in their epilogues (see :mod:`convnext_dense.cpu_fast_paths`;
    in bfloat16 only where oneDNN runs bf16 on this CPU, and for wide blocks on Intel CPUs with
    AVX2 only BLAS matmuls instead). Hooks on the block's layers (or on every module) make it run
    the plain path, so they see every layer called.

    Args:
        channels: Input and output channels.
        drop_path_rate: Probability of dropping the residual branch in training.
        layer_scale_init_value: Initial value of ``gamma``; ``<= 0`` disables layer scale.
        with_cp: Recompute the block in the backward pass instead of storing its activations.
    """

    def __init__(self, channels: int, drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6, with_cp: bool = False) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, kernel_size=7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pwconv1 = PointwiseLinear(channels, 4 * channels)
        self.act = nn.GELU()
        self.pwconv2 = PointwiseLinear(4 * channels, channels)
        self.gamma: Optional[nn.Parameter] = (
            nn.Parameter(torch.full((channels,), float(layer_scale_init_value)))
            if layer_scale_init_value > 0 else None)
        self.drop_path_rate = drop_path_rate
        self.with_cp = with_cp
        self._inference_weights = InferenceWeights()
        self._column_halves = ColumnHalves()
        self._mkl_packed = MklPackedWeights()

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch, before drop path (plain path)."""
        x = self.dwconv(x).permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        if self.gamma is not None:
            x = x * self.gamma
        return x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checkpointed = self.with_cp and self.training and x.requires_grad
        if not fast_paths_enabled() or self._layers_hooked():
            branch = (checkpoint(self.residual, x, use_reentrant=False) if checkpointed
                      else self.residual(x))
            return x + drop_path(branch, self.drop_path_rate, self.training)
        if self._can_fuse(x):
            return self._fused_forward(x)
        if checkpointed:
            context = keep_pwconv2_context(self.pwconv2)
            kwargs = {} if context is None else {'context_fn': context}
            return checkpoint(self._train_forward, x, use_reentrant=False, **kwargs)
        return self._train_forward(x)

    def _layers_hooked(self) -> bool:
        """Whether a hook waits on one of the block's layers (or on every module): the fast paths
        compute some layers without calling them, so the plain path runs for the hooks' sake
        (feature extraction, FLOP counters, pruning)."""
        if any(getattr(nn.modules.module, name, None) for name in _GLOBAL_HOOKS):
            return True
        return any(layer._forward_hooks or layer._forward_pre_hooks or layer._backward_hooks
                   or layer._backward_pre_hooks
                   for layer in (self.dwconv, self.norm, self.pwconv1, self.act, self.pwconv2))

    def _train_forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = None if self.gamma is None else self.gamma.view(-1, 1, 1)
        if self.training and self.drop_path_rate > 0:
            keep = 1.0 - self.drop_path_rate
            mask = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(keep).div_(keep)
            scale = mask if scale is None else scale * mask
            if skips_dropped_samples(x):
                kept = kept_samples(mask)
                if kept.numel() < x.shape[0]:  # the dropped samples' branch would be zeroed
                    shortcut = take_samples(x, kept)
                    out = torch.addcmul(shortcut, self._train_branch(shortcut),
                                        scale.index_select(0, kept))
                    return put_samples(x, kept, out)
        y = self._train_branch(x)
        # One pass for layer scale, drop path and residual instead of three.
        return x + y if scale is None else torch.addcmul(x, y, scale)

    def _train_branch(self, x: torch.Tensor) -> torch.Tensor:
        y = depthwise_conv(self.dwconv, x).permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        return self.pwconv2(self.act(self.pwconv1(self.norm(y)))).permute(0, 3, 1, 2)

    def _can_fuse(self, x: torch.Tensor) -> bool:
        if (x.device.type != 'cpu' or tracing() or not ONEDNN_LINEAR
                or (self.training and self.drop_path_rate > 0)):
            return False
        if torch.is_grad_enabled() and (
                x.requires_grad or any(p.requires_grad for p in self.parameters())):
            return False
        dtype = self._compute_dtype(x)
        # oneDNN packs bf16 weights only where it can run bf16 on this CPU.
        return dtype == torch.float32 or (dtype == torch.bfloat16 and cpu_support.onednn_bf16())

    @staticmethod
    def _compute_dtype(x: torch.Tensor) -> torch.dtype:
        if torch.is_autocast_enabled('cpu'):
            return torch.get_autocast_dtype('cpu')
        return x.dtype

    def _fused_forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self._compute_dtype(x)
        route = 'onednn' if dtype != torch.float32 else cpu_support.mlp_route(x.shape[1])
        onednn = route != 'blas'
        weights = self._inference_weights.get(self.pwconv1, self.pwconv2, self.gamma, dtype,
                                              onednn)
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))  # (N, C, H, W) -> (N, H, W, C)
        y = y.to(dtype)
        # The plain path's dtype: under autocast, bf16 branch times float32 gamma is float32.
        out_dtype = (x.dtype if self.gamma is None
                     else torch.promote_types(x.dtype, self.gamma.dtype))
        halves = ((lambda: self._column_halves.get(self.pwconv2, self.gamma, dtype)) if onednn
                  else None)
        packed = (None if onednn or not MKL_PACKED_LINEAR else lambda rows: self._mkl_packed.get(
            self.pwconv1, self.pwconv2, self.gamma, weights, rows))
        shortcut = x.permute(0, 2, 3, 1)
        run = functools.partial(fused_mlp, y, *weights, onednn=onednn, column_halves=halves,
                                mkl_packed=packed, separate_gelu=route == 'onednn_separate_gelu')
        if out_dtype == dtype and shortcut.is_contiguous():
            return run(shortcut=shortcut).permute(0, 3, 1, 2)
        mlp = run(shortcut=None)
        return x.to(out_dtype) + mlp.permute(0, 3, 1, 2)

    def train(self, mode: bool = True) -> 'ConvNeXtBlock':
        """Switch mode; entering training drops the cached inference weights."""
        if mode:
            self._inference_weights.clear()
            self._column_halves.clear()
            self._mkl_packed.clear()
        return super().train(mode)

    def extra_repr(self) -> str:
        return f'drop_path_rate={self.drop_path_rate}, with_cp={self.with_cp}'
