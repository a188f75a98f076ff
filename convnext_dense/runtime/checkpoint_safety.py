"""Read mmengine checkpoints without unpickling arbitrary objects; write them atomically.

torch >= 2.6 loads with ``weights_only=True`` by default, which refuses the few non-tensor objects
mmengine 0.10.7 writes into a training checkpoint (its ``HistoryBuffer`` logs with their numpy
arrays), so ``--resume`` fails with UnpicklingError. :func:`allow_mmengine_checkpoints` allows
exactly those objects (``convnext_dense.weights.safe_load.training_log_allowlist``), and
:func:`load_local_checkpoint` makes mmengine read local checkpoints that way: anything else still
fails, with an error that says the file would run code and nothing of it ran.

Checkpoint files are also written atomically (temporary file, then rename), so a run killed while
saving never leaves a truncated file behind the ``last_checkpoint`` pointer.

Nothing here is installed on import: :mod:`convnext_dense.model_checkpoints` is the switch.
"""
import os
from typing import Any

import torch
from mmengine.fileio import LocalBackend

from ..atomic_files import write_bytes
from ..weights.safe_load import load_state_file, training_log_allowlist


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read what mmengine writes into training checkpoints."""
    torch.serialization.add_safe_globals(training_log_allowlist())


def load_local_checkpoint(filename: str, map_location=None) -> Any:
    """mmengine's loader for local files: ``weights_only`` loading and errors that say what to do.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file would run code (nothing of it ran), or it is truncated or corrupt.
    """
    return load_state_file(os.path.expanduser(filename), map_location=map_location)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, writing each file to a temporary name then renaming it."""

    def put(self, obj: bytes, filepath) -> None:
        write_bytes(filepath, obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        write_bytes(filepath, obj.encode(encoding))
