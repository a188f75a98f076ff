"""The machine's achievable matrix-multiply rate, the yardstick for a model's GFLOP/s.

On CPU the rate is the better of torch's own matmul (MKL on x86) and oneDNN's, which the backbone
runs where it is faster: on an AMD EPYC MKL's generic code branch reached 113 GFLOP/s in float32
where oneDNN reached about twice that, so a peak from ``torch.mm`` alone put our cases at 200 %.
"""
import functools
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from ...cpu_fast_paths import cpu_support
from ...cpu_fast_paths.fused_ops import ONEDNN_LINEAR, linear

# The block's two pointwise layers at 512x512 for ConvNeXt-B (M = H*W, K, N), plus a square.
DEFAULT_SHAPES = ((16384, 128, 512), (1024, 512, 2048), (1024, 2048, 512), (2048, 2048, 2048))


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype = torch.float32,
                  device: str = 'cpu', repeats: int = 5, sync=None,
                  clock: Callable[[], float] = time.perf_counter, library: str = 'torch') -> float:
    """Median GFLOP/s (``2*m*k*n`` per product) of ``(m, k) @ (k, n)`` in ``dtype``, through
    ``torch.mm`` (``library='torch'``) or oneDNN's linear (``'onednn'``, CPU)."""
    a = torch.randn(m, k, device=device).to(dtype)
    if library == 'onednn':
        weight = torch.randn(n, k, device=device).to(dtype)
        product = functools.partial(linear, a, weight, None)
    elif library == 'torch':
        b = torch.randn(k, n, device=device).to(dtype)
        product = functools.partial(torch.mm, a, b)
    else:
        raise ValueError(f"library {library!r} is not one of ('torch', 'onednn')")
    sync = sync or (lambda: None)
    product()
    sync()
    rates = []
    for _ in range(repeats):
        start = clock()
        product()
        sync()
        rates.append(2.0 * m * k * n / (clock() - start) / 1e9)
    return sorted(rates)[len(rates) // 2]


def matmul_libraries(device: str, dtype: torch.dtype = torch.float32) -> Tuple[str, ...]:
    """The matmul libraries :func:`matmul_peak` compares on ``device`` in ``dtype``: oneDNN's
    too on CPU, in bfloat16 only where oneDNN runs bf16 (without, its linear raises)."""
    onednn = (device == 'cpu' and ONEDNN_LINEAR
              and (dtype != torch.bfloat16 or cpu_support.onednn_bf16()))
    return ('torch', 'onednn') if onednn else ('torch',)


def matmul_peak(dtype: torch.dtype = torch.float32, device: str = 'cpu',
                shapes: Optional[Sequence[Tuple[int, int, int]]] = None, repeats: int = 5,
                sync=None, clock: Callable[[], float] = time.perf_counter) -> Dict:
    """Best median GFLOP/s over ``shapes`` and :func:`matmul_libraries`, with each one's rate.

    Returns:
        ``{'dtype': str, 'gflops': best, 'library': the best one's,
        'by_shape': {'MxKxN': best of the libraries}, 'by_library': {library: best}}``.
    """
    shapes = DEFAULT_SHAPES if shapes is None else shapes
    rates = {library: {f'{m}x{k}x{n}': matmul_gflops(m, k, n, dtype, device, repeats, sync,
                                                     clock, library)
                       for m, k, n in shapes}
             for library in matmul_libraries(device, dtype)}
    by_library = {library: max(by_shape.values()) for library, by_shape in rates.items()}
    best = max(by_library, key=by_library.get)
    by_shape = {shape: max(r[shape] for r in rates.values()) for shape in rates['torch']}
    return {'dtype': str(dtype).replace('torch.', ''), 'gflops': by_library[best],
            'library': best, 'by_shape': by_shape, 'by_library': by_library}
