"""glibc's malloc told to keep freed memory for the next training step (CPU runs).

A CPU training step frees and allocates the same large activations every step. glibc hands
blocks above its mmap threshold (at most 32 MiB, raised only by what was freed before) back to
the kernel at once, and trims the top of its heap above twice that, so the next step's tensors
come as fresh pages: each 4 KiB page faults and is zeroed by the kernel on first touch.
ConvNeXt-B, two 512x512 images, one thread, AVX2 kernels: 112k page faults and 0.87 s of system
time per step; none to a few thousand with the settings here once the heap has settled (see
docs/benchmarks.md). PyTorch's CPU launcher (``torch.backends.xeon.run_cpu``) preloads jemalloc
or tcmalloc where it finds them for the same reason; this needs nothing installed.

The memory a step used stays with the process (it is needed again next step); a process that
must give memory back while it runs can opt out with ``CONVNEXT_DENSE_MALLOC=glibc``.
"""
import ctypes
import ctypes.util
import os
import platform
from typing import Mapping, Optional

OPT_OUT_VARIABLE = 'CONVNEXT_DENSE_MALLOC'
OPT_OUT_VALUES = ('glibc', 'default')
# Blocks up to 1 GiB from the heap (a detector's largest activation at 2x800x1344 is ~280 MiB);
# keep up to 2 GiB free at its top (mallopt takes an int).
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1
_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_OTHER_ALLOCATORS = ('jemalloc', 'tcmalloc', 'mimalloc')
_GLIBC_VARIABLES = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'MALLOC_TOP_PAD_')


class MallocSettingError(ValueError):
    """``CONVNEXT_DENSE_MALLOC`` has a value other than those allowed (the message lists them)."""


def reason_to_leave_alone(environ: Mapping[str, str] = os.environ,
                          libc_version: Optional[str] = None) -> Optional[str]:
    """Why the allocator should be left as it is, or None when :func:`keep_freed_memory` applies.

    Args:
        environ: The process environment.
        libc_version: ``platform.libc_ver()``'s ``(name, version)`` joined, e.g. ``'glibc 2.36'``
            (read from the running process when None).
    """
    choice = environ.get(OPT_OUT_VARIABLE, '').strip().lower()
    if choice in OPT_OUT_VALUES:
        return f'{OPT_OUT_VARIABLE}={environ[OPT_OUT_VARIABLE]}'
    if choice not in ('', 'keep'):
        raise MallocSettingError(
            f"{OPT_OUT_VARIABLE}={environ[OPT_OUT_VARIABLE]!r} is not one of 'keep' (the default) "
            f"or {' / '.join(map(repr, OPT_OUT_VALUES))}")
    if libc_version is None:
        libc_version = ' '.join(platform.libc_ver()).strip()
    if not libc_version.startswith('glibc'):
        return f'not glibc ({platform.system()} {libc_version or "unknown libc"})'
    preloaded = environ.get('LD_PRELOAD', '')
    other = next((name for name in _OTHER_ALLOCATORS if name in preloaded), None)
    if other:
        return f'{other} preloaded (LD_PRELOAD)'
    tuned = [name for name in _GLIBC_VARIABLES if name in environ]
    if 'glibc.malloc.' in environ.get('GLIBC_TUNABLES', ''):
        tuned.append('GLIBC_TUNABLES')
    if tuned:
        return f'set by the environment ({", ".join(tuned)})'
    return None


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> str:
    """Set glibc's mmap and trim thresholds so freed tensors are reused, unless told not to.

    Returns:
        One line saying what was done, for the run's log.
    """
    reason = reason_to_leave_alone(environ)
    if reason is not None:
        return f'malloc left as it is: {reason}'
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    # Setting the mmap threshold fixes it (no more dynamic raising): set the trim threshold first
    # so the heap is never trimmed at glibc's 128 KiB default in between.
    if not libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(TRIM_THRESHOLD)):
        return 'malloc left as it is: glibc refused the trim threshold'
    if not libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD)):
        return (f'glibc malloc trims its heap only above {TRIM_THRESHOLD >> 20} MiB free; it '
                f'refused an mmap threshold of {MMAP_THRESHOLD >> 20} MiB')
    return (f'glibc malloc keeps freed memory for reuse (mmap threshold {MMAP_THRESHOLD >> 20} '
            f'MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB; {OPT_OUT_VARIABLE}=glibc leaves it '
            'alone)')
