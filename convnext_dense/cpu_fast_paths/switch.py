"""The switch between the backbone's CPU fast paths and the plain computation.

:func:`fast_paths` turns every optimisation of the backbone off, which is how the tests compare
each fast path with the plain reference; :func:`tracing` sends traced and compiled code to plain
ops.
"""
import contextlib
from typing import Iterator

import torch

_enabled = True


@contextlib.contextmanager
def fast_paths(enabled: bool) -> Iterator[None]:
    """Use (``True``, the default) or bypass the backbone's fast paths inside the ``with`` body.

    Example:
        >>> with fast_paths(False):
        ...     reference = backbone(images)  # the plain, unfused computation
    """
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f'fast_paths takes True or False, got {enabled!r}')
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous


def fast_paths_enabled() -> bool:
    """Whether the backbone's fast paths are in use (see :func:`fast_paths`)."""
    return _enabled


def tracing() -> bool:
    """True under ``torch.jit.trace`` (FLOP counters) or ``torch.compile``: use plain ops there."""
    compiling = getattr(torch.compiler, 'is_compiling', lambda: False)
    return torch.jit.is_tracing() or compiling()
