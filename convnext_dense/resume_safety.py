"""Resume mmengine training checkpoints on torch >= 2.6 without unpickling arbitrary objects.

torch >= 2.6 loads with ``weights_only=True`` by default, which refuses the few non-tensor objects
mmengine 0.10.7 writes into a training checkpoint (its ``HistoryBuffer`` logs with their numpy
arrays), so ``--resume`` fails with UnpicklingError. :func:`allow_mmengine_checkpoints` allows
exactly those objects, and ``getattr`` only for the statistics methods a ``HistoryBuffer`` pickles.
Anything else still fails, and :func:`load_local_checkpoint` turns that failure into an error that
says the file would run code and nothing was loaded.

Checkpoint files are also written atomically (temporary file, then rename), so a run killed while
saving never leaves a truncated file behind the ``last_checkpoint`` pointer.
"""
import os
import pickle
import tempfile
from typing import Any

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader


# Registered by every HistoryBuffer's __init__; the class-level dict is empty until one exists.
_BUILTIN_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_method(obj: Any, name: str) -> Any:
    """``getattr`` restricted to what HistoryBuffer pickles: its registered statistics methods."""
    # HistoryBuffer keeps its statistics as plain functions: pickled as getattr(HistoryBuffer, name).
    is_buffer = obj is HistoryBuffer or isinstance(obj, HistoryBuffer)
    if is_buffer and name in _BUILTIN_STATISTICS + tuple(HistoryBuffer._statistics_methods):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'refused getattr({type(obj).__name__}, {name!r}): only HistoryBuffer statistics are allowed')


def _mmengine_globals():
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    allowed = [
        HistoryBuffer,
        (_history_buffer_method, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
    ]
    for core in ('numpy.core', 'numpy._core'):
        allowed += [(multiarray._reconstruct, f'{core}.multiarray._reconstruct'),
                    (multiarray.scalar, f'{core}.multiarray.scalar')]
    # numpy >= 1.25 pickles dtypes of arrays as numpy.dtypes.<Kind>DType classes.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith('DType')]
    return allowed


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read what mmengine writes into training checkpoints."""
    torch.serialization.add_safe_globals(_mmengine_globals())


def load_local_checkpoint(filename: str, map_location=None) -> Any:
    """mmengine's loader for local files, with ``weights_only=True`` and a clear refusal."""
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f'refusing to load {filename}: it holds objects that are neither tensors nor what '
            f'mmengine writes into checkpoints, and unpickling them could run code; nothing of '
            f'it was run. Convert trusted weights with tools/convert_checkpoint.py. '
            f'(torch said: {str(err).splitlines()[0]})') from None
    except (RuntimeError, EOFError) as err:
        raise RuntimeError(f'checkpoint {filename} is truncated or corrupt ({err}); resume from '
                           'an earlier checkpoint of the work dir') from None


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, writing each file to a temporary name then renaming it."""

    def put(self, obj: bytes, filepath) -> None:
        self._atomic_write(obj, str(filepath), 'wb')

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        self._atomic_write(obj.encode(encoding), str(filepath), 'wb')

    @staticmethod
    def _atomic_write(data: bytes, filepath: str, mode: str) -> None:
        directory = os.path.dirname(os.path.abspath(filepath))
        os.makedirs(directory, exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(dir=directory, prefix='.tmp-', suffix='.part')
        try:
            with os.fdopen(fd, mode) as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_path, filepath)
        except BaseException:
            if os.path.exists(tmp_path):
                os.remove(tmp_path)
            raise


def install() -> None:
    """Allowlist mmengine's checkpoint objects, load local checkpoints safely, write atomically."""
    allow_mmengine_checkpoints()
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
