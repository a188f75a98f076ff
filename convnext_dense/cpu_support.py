"""What this CPU and torch build can run natively, decided once per process.

The backbone's fast paths ask here rather than assume the machine they were written on:
oneDNN's packed bfloat16 matmuls exist only where the CPU has bf16 instructions (x86:
AVX-512 BW/VL/DQ, AVX-NE-CONVERT or AMX; aarch64: its bf16 extension). Elsewhere (AVX2-only x86,
such as many AMD EPYCs) torch emulates bfloat16 with slow reference kernels and oneDNN's
bf16 weight packing raises, so the backbone computes in float32 there. Tests monkeypatch
:func:`native_bf16` to force either answer.
"""
import functools
import logging
from typing import Dict

import torch

logger = logging.getLogger(__name__)


# Block width from which, on x86 CPUs without AVX-512, torch's BLAS (MKL) matmul with an in-place
# GELU beats oneDNN's fused matmuls: oneDNN's AVX2 kernels are 7-10 % slower on the wide layers
# and the fused epilogue saves less there (one pass per 4C multiply-adds); at 128 channels the
# epilogue wins by 20 % (ConvNeXt-B block MLPs at 512x512, one thread, with AVX2 kernels only).
BLAS_MLP_MIN_CHANNELS = 256


@functools.lru_cache(maxsize=None)
def cpu_capability() -> str:
    """The instruction set torch's own kernels dispatch to ('AVX2', 'AVX512', ...), asked once."""
    return torch.backends.cpu.get_cpu_capability()


def onednn_mlp(channels: int) -> bool:
    """Whether a fused float32 block of ``channels`` runs oneDNN's fused matmuls (else BLAS)."""
    return not (cpu_capability() == 'AVX2' and channels >= BLAS_MLP_MIN_CHANNELS)


@functools.lru_cache(maxsize=None)
def native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (torch's own check, asked once)."""
    check = getattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', None)
    return bool(torch.backends.mkldnn.is_available() and check is not None and check())


def describe() -> Dict[str, object]:
    """The facts a benchmark records: CPU model, ISA torch dispatches to, bf16/AMX flags, torch
    threads, hardware threads per core."""
    flags = set()
    model = 'unknown'
    counts = {}
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'model name' and model == 'unknown':
                    model = value.strip()
                elif key in ('flags', 'Features') and not flags:
                    flags = set(value.split())
                elif key in ('siblings', 'cpu cores') and key not in counts:
                    counts[key] = int(value)
    except (OSError, ValueError):  # not Linux: the model and flags stay unknown
        pass
    return dict(
        cpu_model=model,
        cpu_capability=cpu_capability(),
        native_bf16=native_bf16(),
        flags=sorted(flags & {'avx2', 'avx512f', 'avx512bw', 'avx512vl', 'avx512dq',
                              'avx512_bf16', 'avx_ne_convert', 'amx_bf16', 'amx_tile', 'bf16'}),
        threads=torch.get_num_threads(),
        # 2 where the logical CPUs are hyper-threads sharing cores (None where unknown).
        threads_per_core=(counts['siblings'] // counts['cpu cores']
                          if counts.get('cpu cores') and 'siblings' in counts else None),
    )


@functools.lru_cache(maxsize=None)
def warn_bf16_emulated() -> None:
    """Say once per process that bfloat16 was asked for where the CPU has no bf16 kernels."""
    logger.warning(
        'bfloat16 is emulated on this CPU (%s, torch capability %s: oneDNN needs AVX-512 BW/VL/DQ, '
        'AVX-NE-CONVERT or AMX for bf16), and float32 is faster here: the ConvNeXt backbone '
        'computes in float32 and returns the dtype asked for.',
        describe()['cpu_model'], torch.backends.cpu.get_cpu_capability())
