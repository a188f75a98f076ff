"""The ConvNeXt block's optional CPU fast paths; the model reaches them only through this module.

Every path computes what the plain block computes (tests compare each with it to 1e-5):

* :mod:`.switch` — :func:`fast_paths` (``with fast_paths(False):`` runs the plain computation)
  and :func:`tracing` (traced / compiled code takes plain ops).
* :mod:`.cpu_support` — what this CPU and torch build can do, decided once per process (oneDNN
  bf16, native bf16 arithmetic, the inference MLP's route — oneDNN with GELU in its epilogue or
  apart (AVX2), or BLAS for wide blocks on Intel AVX2 CPUs — and the training steps' matmuls).
* :mod:`.fused_ops` — inference: two oneDNN matmuls with GELU and the residual add in their
  epilogues (GELU in place between them with AVX2 kernels), on cached packed weights;
  :mod:`.column_split` runs the second as two halves of its output columns at the shapes where
  oneDNN would leave cores idle; where BLAS matmuls run a block, its weights are packed by MKL
  once.
* :mod:`.fast_grads` — training: a faster depthwise-conv weight gradient, channels-last to
  channels-first without a copy in the forward, checkpointing that keeps pwconv2's input.
* :mod:`.train_matmuls` — training: the Linear layers (and the downsampling matmul) through
  oneDNN on CPUs where torch's BLAS runs its slow generic code (x86 CPUs not made by Intel).
* :mod:`.sample_skip` — training: drop path runs the residual branch on the kept samples only.
* :mod:`.patch_conv` — training: the 2x2 stride-2 downsampling convolutions as one matmul over
  the patches.
* :mod:`.float32_fallback` — bfloat16 requests run in float32 where the CPU only emulates bf16.
"""
from . import cpu_support, float32_fallback
from .fast_grads import channels_first, depthwise_conv, keep_pwconv2_context
from .fused_ops import (MKL_PACKED_LINEAR, ONEDNN_LINEAR, ColumnHalves, InferenceWeights,
                        MklPackedWeights, fused_mlp)
from .patch_conv import patch_matmul, patch_matmul_applies
from .sample_skip import kept_samples, put_samples, skips_dropped_samples, take_samples
from .switch import fast_paths, fast_paths_enabled, tracing
from .train_matmuls import train_matmul

__all__ = [
    'MKL_PACKED_LINEAR', 'ONEDNN_LINEAR', 'ColumnHalves', 'InferenceWeights', 'MklPackedWeights',
    'channels_first', 'cpu_support', 'depthwise_conv', 'fast_paths', 'fast_paths_enabled',
    'float32_fallback', 'fused_mlp', 'keep_pwconv2_context', 'kept_samples', 'patch_matmul',
    'patch_matmul_applies', 'put_samples', 'skips_dropped_samples', 'take_samples', 'tracing',
    'train_matmul'
]
