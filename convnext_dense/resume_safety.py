"""Resume mmengine training checkpoints on torch >= 2.6 without unpickling arbitrary objects.

torch >= 2.6 loads with ``weights_only=True`` by default, which refuses the few non-tensor objects
mmengine 0.10.7 writes into a training checkpoint (its ``HistoryBuffer`` logs with their numpy
arrays), so ``--resume`` fails with UnpicklingError. :func:`allow_mmengine_checkpoints` allows
exactly those objects (``convnext_dense.weights.safe_load.training_log_allowlist``), and
:func:`load_local_checkpoint` makes mmengine read local checkpoints that way: anything else still
fails, with an error that says the file would run code and nothing of it ran.

Checkpoint files are also written atomically (temporary file, then rename), so a run killed while
saving never leaves a truncated file behind the ``last_checkpoint`` pointer.
"""
import glob
import os
import tempfile
from typing import Any, List

import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.runner import CheckpointLoader

from .weights.safe_load import load_state_file, training_log_allowlist

# Name of a write in progress (written, then renamed); what a killed write leaves behind.
_TMP_PREFIX = '.tmp-'
_TMP_SUFFIX = '.part'


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read what mmengine writes into training checkpoints."""
    torch.serialization.add_safe_globals(training_log_allowlist())


def load_local_checkpoint(filename: str, map_location=None) -> Any:
    """mmengine's loader for local files: ``weights_only`` loading and errors that say what to do.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file would run code (nothing of it ran), or it is truncated or corrupt.
    """
    try:
        return load_state_file(os.path.expanduser(filename), map_location=map_location)
    except ValueError as err:
        raise ValueError(f'{err} To resume, use an earlier checkpoint of the work dir '
                         '(tools/train.py --resume PATH).') from None


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
        fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX)
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


def remove_interrupted_writes(directory: str) -> List[str]:
    """Delete the temporary files of writes that were killed midway (``.tmp-*.part``).

    Only leftovers can be there when a run starts: every write renames or removes its own file
    unless the process dies first. Returns the names removed.
    """
    removed = []
    for path in sorted(glob.glob(os.path.join(glob.escape(directory), f'{_TMP_PREFIX}*{_TMP_SUFFIX}'))):
        os.remove(path)
        removed.append(os.path.basename(path))
    return removed


def install() -> None:
    """Allowlist mmengine's checkpoint objects, load local checkpoints safely, write atomically."""
    allow_mmengine_checkpoints()
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
