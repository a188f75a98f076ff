"""What this CPU and torch build can run, and what runs fast, decided once per process.

The backbone's fast paths ask here rather than assume the machine they were written on. Two
questions about bfloat16:

* :func:`onednn_bf16`: can oneDNN run bf16 at all (torch's own check: x86 AVX-512 BW/VL/DQ or
  AVX-NE-CONVERT; aarch64 with its bf16 extension)? Where not (AVX2-only x86, such as many AMD
  EPYCs) its bf16 weight packing raises, and torch falls back to slow reference kernels.
* :func:`native_bf16`: is bf16 arithmetic in hardware (AVX512-BF16, AMX, AVX-NE-CONVERT)? Without
  it oneDNN converts in software: on an Ice Lake Xeon (AVX-512, no BF16) its bf16 matmul peak is
  32 GFLOP/s against 117 in float32.

Where bf16 is not native the backbone computes a bf16 request in float32 (:mod:`.float32_fallback`).
And two about float32: :func:`mlp_route`, how a block's inference MLP runs (whose matmuls, and
whether GELU rides in the first one's epilogue), and :func:`train_matmul_route`, which matmuls run
the blocks' Linear layers in a training step.
Tests monkeypatch these functions to force either answer.
"""
import contextlib
import functools
import logging
import os
import platform
from typing import Dict, FrozenSet, Iterator, NamedTuple, Optional, Tuple

import torch

logger = logging.getLogger(__name__)

# Block width from which, on Intel CPUs without AVX-512, torch's BLAS (MKL) matmul with an
# in-place GELU beats oneDNN's fused matmuls: oneDNN's AVX2 kernels are 7-10 % slower than MKL's
# on the wide layers and the fused epilogue saves less there (one pass per 4C multiply-adds); at
# 128 channels the epilogue wins by 20 % (ConvNeXt-B block MLPs at 512x512, one thread, an Ice
# Lake Xeon limited to AVX2 kernels). Not on other vendors' CPUs: MKL runs other code there (on
# qemu's EPYC-Rome model its generic branch, mkl_blas_def_sgemm_kernel_0_zen with generic packing,
# against mkl_blas_avx2_sgemm_kernel_0_b0 on an Intel AVX2 model), and a real AMD EPYC ran the
# backbone with oneDNN for every block at 0.86-0.95x HF's time (MKL matmuls), where the Intel
# CPU limited to AVX2 gave it 1.02x.
BLAS_MLP_MIN_CHANNELS = 256
BLAS_MLP_VENDORS = ('GenuineIntel',)
# Where torch dispatches to AVX2 (so oneDNN's kernels are AVX2 ones too), oneDNN's exact-GELU
# epilogue costs more than the matmul saves by fusing it: ConvNeXt-B's stage-3 first layer (1024
# rows, 512 -> 2048) took 21.6 ms with it, 17.6 ms without and 1.2 ms more for torch's in-place
# GELU over the result; with AVX-512 kernels the epilogue costs 0.4 ms (a Zen 5 EPYC limited to
# AVX2 kernels, one thread, CPU time). So the oneDNN route there runs the first matmul plain and
# GELU after it, 'onednn_separate_gelu': the backbone's inference pass took 0.94x the time.
MLP_ROUTES = ('onednn', 'onednn_separate_gelu', 'blas')
TRAIN_MATMUL_ROUTES = ('onednn', 'blas')
# Set to one of MLP_ROUTES, it runs every fused float32 block MLP of the process through that
# route: for a CPU where `tools/benchmark.py --variants mlp_routes` finds another one faster.
MLP_ROUTE_ENV = 'CONVNEXT_DENSE_MLP_ROUTE'
# The same for the float32 Linear layers of a training step (:func:`train_matmul_route`).
TRAIN_MATMUL_ROUTE_ENV = 'CONVNEXT_DENSE_TRAIN_MATMUL_ROUTE'
_X86 = ('x86_64', 'amd64', 'i386', 'i686', 'x86')
_forced_mlp_route: Optional[str] = None
_forced_train_matmul_route: Optional[str] = None


class CpuInfo(NamedTuple):
    """What /proc/cpuinfo says about the first CPU ('unknown' / empty where it says nothing)."""

    model: str
    vendor: str
    flags: FrozenSet[str]
    counts: Dict[str, int]  # 'siblings' and 'cpu cores', where listed


@functools.lru_cache(maxsize=None)
def cpu_capability() -> str:
    """The instruction set torch's own kernels dispatch to ('AVX2', 'AVX512', ...), asked once."""
    return torch.backends.cpu.get_cpu_capability()


def cpu_vendor() -> str:
    """The CPU's vendor string ('GenuineIntel', 'AuthenticAMD', ...; 'unknown' off Linux)."""
    return _cpu_info().vendor


def mlp_route(channels: int) -> str:
    """How a fused float32 block MLP of ``channels`` runs: one of :data:`MLP_ROUTES`.

    ``'blas'`` (MKL matmuls, in-place GELU) for blocks of :data:`BLAS_MLP_MIN_CHANNELS` or more
    on Intel CPUs whose best ISA is AVX2; ``'onednn_separate_gelu'`` (oneDNN matmuls, in-place
    GELU, the residual add in the second one's epilogue) for the other blocks where torch's ISA
    is AVX2; ``'onednn'`` (GELU and residual add in oneDNN's epilogues) everywhere else. Unless
    :func:`force_mlp_route` or the environment variable :data:`MLP_ROUTE_ENV` (in that order)
    says otherwise.
    """
    if _forced_mlp_route is not None:
        return _forced_mlp_route
    chosen = env_mlp_route()
    if chosen is not None:
        return chosen
    if cpu_capability() != 'AVX2':
        return 'onednn'
    wide_on_intel = channels >= BLAS_MLP_MIN_CHANNELS and cpu_vendor() in BLAS_MLP_VENDORS
    return 'blas' if wide_on_intel else 'onednn_separate_gelu'


@functools.lru_cache(maxsize=None)
def env_mlp_route() -> Optional[str]:
    """The route :data:`MLP_ROUTE_ENV` names (read once), or ``None`` where it is unset or empty."""
    return _route_from_env(MLP_ROUTE_ENV, MLP_ROUTES)


def train_matmul_route() -> str:
    """Which matmuls run the blocks' float32 Linear layers in a training step: ``'blas'``
    (torch's own, MKL on x86 builds) or ``'onednn'`` (:mod:`.train_matmuls`).

    ``'onednn'`` on x86 CPUs not made by Intel, where MKL runs its generic code branch: there
    oneDNN took 0.53x MKL's time for ConvNeXt-B's block matmuls with AVX-512 and 0.92x with AVX2
    kernels (a 2-core AMD EPYC, Zen 5, forward and both gradients, 512x512, one thread).
    ``'blas'`` on Intel CPUs, whose MKL branch is tuned (the training-step ratios measured there
    were with it), and off x86. :func:`force_train_matmul_route` or the environment variable
    :data:`TRAIN_MATMUL_ROUTE_ENV` (in that order) override it.
    """
    if _forced_train_matmul_route is not None:
        return _forced_train_matmul_route
    chosen = env_train_matmul_route()
    if chosen is not None:
        return chosen
    x86 = platform.machine().lower() in _X86
    return 'onednn' if x86 and cpu_vendor() not in BLAS_MLP_VENDORS else 'blas'


@functools.lru_cache(maxsize=None)
def env_train_matmul_route() -> Optional[str]:
    """The route :data:`TRAIN_MATMUL_ROUTE_ENV` names (read once), or ``None`` where unset."""
    return _route_from_env(TRAIN_MATMUL_ROUTE_ENV, TRAIN_MATMUL_ROUTES)


def _route_from_env(name: str, routes: Tuple[str, ...]) -> Optional[str]:
    value = os.environ.get(name, '').strip()
    if not value:
        return None
    if value not in routes:
        raise ValueError(f'{name}={value!r} is not one of {routes} (or unset: '
                         'the route this CPU gets by default)')
    return value


def onednn_mlp(channels: int) -> bool:
    """Whether a fused float32 block of ``channels`` runs oneDNN's matmuls (else BLAS)."""
    return mlp_route(channels) != 'blas'


@contextlib.contextmanager
def force_mlp_route(route: Optional[str]) -> Iterator[None]:
    """Run every fused float32 block MLP through ``route`` inside the ``with`` body.

    One of :data:`MLP_ROUTES`; ``None`` restores :func:`mlp_route`'s own choice. All routes
    compute the same result (to float32 rounding); ``tools/benchmark.py --variants mlp_routes``
    times them side by side on this machine.
    """
    with _forcing('_forced_mlp_route', 'MLP route', route, MLP_ROUTES):
        yield


@contextlib.contextmanager
def force_train_matmul_route(route: Optional[str]) -> Iterator[None]:
    """Run the blocks' float32 training matmuls through ``route`` inside the ``with`` body.

    ``'onednn'`` or ``'blas'``; ``None`` restores :func:`train_matmul_route`'s own choice. Both
    compute the same gradients (to float32 rounding); ``tools/benchmark.py --variants
    train_routes`` times them side by side on this machine.
    """
    with _forcing('_forced_train_matmul_route', 'training matmul route', route,
                  TRAIN_MATMUL_ROUTES):
        yield


@contextlib.contextmanager
def _forcing(variable: str, what: str, route: Optional[str],
             routes: Tuple[str, ...]) -> Iterator[None]:
    if route is not None and route not in routes:
        raise ValueError(f'{what} {route!r} is not one of {routes} (or None)')
    previous = globals()[variable]
    globals()[variable] = route
    try:
        yield
    finally:
        globals()[variable] = previous


@functools.lru_cache(maxsize=None)
def onednn_bf16() -> bool:
    """Whether oneDNN runs bfloat16 on this CPU at all (torch's own check, asked once)."""
    check = getattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', None)
    return bool(torch.backends.mkldnn.is_available() and check is not None and check())


@functools.lru_cache(maxsize=None)
def native_bf16() -> bool:
    """Whether bfloat16 runs in hardware here, so that it is faster than float32 (asked once)."""
    if not onednn_bf16():
        return False
    if platform.machine().lower() not in _X86:
        return True  # aarch64: torch's check already asks for the bf16 extension
    cpu = torch.cpu
    return bool(getattr(cpu, '_is_avx512_bf16_supported', lambda: False)()
                or getattr(cpu, '_is_amx_tile_supported', lambda: False)()
                or 'avx_ne_convert' in _cpu_info().flags)


@functools.lru_cache(maxsize=None)
def _cpu_info() -> CpuInfo:
    """:class:`CpuInfo` from /proc/cpuinfo, read once."""
    flags, model, vendor, counts = frozenset(), 'unknown', 'unknown', {}
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'model name' and model == 'unknown':
                    model = value.strip()
                elif key == 'vendor_id' and vendor == 'unknown':
                    vendor = value.strip()
                elif key in ('flags', 'Features') and not flags:
                    flags = frozenset(value.split())
                elif key in ('siblings', 'cpu cores') and key not in counts:
                    counts[key] = int(value)
    except (OSError, ValueError):  # not Linux: the model, vendor and flags stay unknown
        pass
    return CpuInfo(model, vendor, flags, counts)


def describe() -> Dict[str, object]:
    """The facts a benchmark records: CPU model and vendor, ISA torch dispatches to, bf16
    support and the flags behind it, the wide blocks' MLP route and the training matmuls' route,
    torch and hardware threads."""
    info = _cpu_info()
    counts = info.counts
    return dict(
        cpu_model=info.model,
        cpu_vendor=info.vendor,
        cpu_capability=cpu_capability(),
        onednn_bf16=onednn_bf16(),
        native_bf16=native_bf16(),
        flags=sorted(info.flags & {'avx2', 'avx512f', 'avx512bw', 'avx512vl', 'avx512dq',
                                   'avx512_bf16', 'avx_ne_convert', 'amx_bf16', 'amx_tile',
                                   'bf16'}),
        wide_mlp_route=mlp_route(BLAS_MLP_MIN_CHANNELS),
        train_matmul_route=train_matmul_route(),
        threads=torch.get_num_threads(),
        # 2 where the logical CPUs are hyper-threads sharing cores (None where unknown).
        threads_per_core=(counts['siblings'] // counts['cpu cores']
                          if counts.get('cpu cores') and 'siblings' in counts else None),
    )


@functools.lru_cache(maxsize=None)
def warn_bf16_emulated() -> None:
    """Say once per process that bfloat16 was asked for where the CPU has no bf16 arithmetic."""
    missing = ('AVX512-BF16, AMX or AVX-NE-CONVERT' if platform.machine().lower() in _X86
               else 'bf16 extension')
    logger.warning(
        'bfloat16 is emulated on this CPU (%s, %s, torch capability %s: no %s), and float32 is '
        'faster here: the ConvNeXt backbone computes in float32 and returns the dtype its plain '
        'path would (bfloat16 for a model cast to bf16).',
        _cpu_info().model, platform.machine(), cpu_capability(), missing)
