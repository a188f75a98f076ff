"""Read mmengine checkpoints without unpickling arbitrary objects; write them atomically.

torch >= 2.6 loads with ``weights_only=True`` by default, which refuses the few non-tensor objects
mmengine 0.10.7 writes into a training checkpoint (its ``HistoryBuffer`` logs with their numpy
arrays), so ``--resume`` fails with UnpicklingError. :func:`allow_mmengine_checkpoints` allows
exactly those objects (``convnext_dense.weights.safe_load.training_log_allowlist``), and
:func:`load_local_checkpoint` makes mmengine read local checkpoints that way: anything else still
fails, with an error that says the file would run code and nothing of it ran.

Checkpoint files are also written atomically (temporary file, then rename), so a run killed while
saving never leaves a truncated file behind the ``last_checkpoint`` pointer, and the checkpoint
``max_keep_ckpts`` drops is removed only once the new one and the pointer are written
(:func:`remove_old_checkpoints_after_saving`): mmengine removes it first, so a run killed during
the save had no checkpoint left.

Nothing here is installed on import: :mod:`convnext_dense.model_checkpoints` is the switch.
"""
import functools
import os
import re
from typing import Any, Callable, Optional, Tuple

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


def remove_old_checkpoints_after_saving(save_with_step: Callable) -> Callable:
    """Wrap ``CheckpointHook._save_checkpoint_with_step``: the files ``max_keep_ckpts`` drops are
    removed after the new checkpoint and ``last_checkpoint`` are written, not before (a save that
    fails keeps them)."""
    if getattr(save_with_step, 'removes_after_saving', False):
        return save_with_step

    @functools.wraps(save_with_step)
    def save(self, runner, step, meta):
        backend, dropped = self.file_backend, []
        backend.remove = dropped.append  # an instance attribute, shadowing the method meanwhile
        try:
            save_with_step(self, runner, step, meta)
        finally:
            del backend.remove
        for path in dropped:
            backend.remove(path)

    save.removes_after_saving = True
    return save


_SAVED_CHECKPOINT = re.compile(r'(?:iter|epoch)_(\d+)\.pth')


def point_at_a_saved_checkpoint(work_dir: str) -> Optional[Tuple[str, str]]:
    """Before resuming from the work dir's latest: make ``last_checkpoint`` name a file that is
    there.

    A run killed while writing that pointer, or one whose old checkpoint mmengine removed before
    the save the kill cut short (see :func:`remove_old_checkpoints_after_saving`), leaves it
    naming nothing. It is then pointed at the newest ``iter_N.pth`` / ``epoch_N.pth`` of the work
    dir (complete files: each is written under a temporary name, then renamed).

    Returns:
        None if the pointer was absent or fine; else what it named and what it names now.

    Raises:
        FileNotFoundError: the pointer names a missing file and the work dir holds no checkpoint.
    """
    pointer = os.path.join(work_dir, 'last_checkpoint')
    if not os.path.isfile(pointer):
        return None
    with open(pointer, encoding='utf-8') as f:
        named = f.read().strip()
    if named and os.path.isfile(named):
        return None
    saved = sorted((int(match[1]), name) for name in os.listdir(work_dir)
                   for match in [_SAVED_CHECKPOINT.fullmatch(name)] if match)
    if not saved:
        raise FileNotFoundError(
            f"{pointer} names {named or 'nothing'!r}, which is not there, and {work_dir} holds "
            'no other checkpoint (iter_N.pth / epoch_N.pth): nothing to resume. Pass --restart '
            'to start over there, or --resume PATH with a checkpoint of this run')
    newest = os.path.join(work_dir, saved[-1][1])
    write_bytes(pointer, newest.encode('utf-8'))
    return named, newest
