"""The machine's achievable matrix-multiply rate, the yardstick for a model's GFLOP/s."""
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

# The block's two pointwise layers at 512x512 for ConvNeXt-B (M = H*W, K, N), plus a square.
DEFAULT_SHAPES = ((16384, 128, 512), (1024, 512, 2048), (1024, 2048, 512), (2048, 2048, 2048))


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype = torch.float32,
                  device: str = 'cpu', repeats: int = 5, sync=None,
                  clock: Callable[[], float] = time.perf_counter) -> float:
    """Median GFLOP/s (``2*m*k*n`` per product) of ``(m, k) @ (k, n)`` in ``dtype``."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    sync = sync or (lambda: None)
    torch.mm(a, b)
    sync()
    rates = []
    for _ in range(repeats):
        start = clock()
        torch.mm(a, b)
        sync()
        rates.append(2.0 * m * k * n / (clock() - start) / 1e9)
    return sorted(rates)[len(rates) // 2]


def matmul_peak(dtype: torch.dtype = torch.float32, device: str = 'cpu',
                shapes: Optional[Sequence[Tuple[int, int, int]]] = None, repeats: int = 5,
                sync=None, clock: Callable[[], float] = time.perf_counter) -> Dict:
    """Best median GFLOP/s over ``shapes``, with the rate of each shape.

    Returns:
        ``{'dtype': str, 'gflops': best, 'by_shape': {'MxKxN': gflops}}``.
    """
    shapes = DEFAULT_SHAPES if shapes is None else shapes
    by_shape = {f'{m}x{k}x{n}': matmul_gflops(m, k, n, dtype, device, repeats, sync, clock)
                for m, k, n in shapes}
    return {'dtype': str(dtype).replace('torch.', ''), 'gflops': max(by_shape.values()),
            'by_shape': by_shape}
