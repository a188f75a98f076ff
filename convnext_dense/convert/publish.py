"""Publish a trained checkpoint as mmdet's and mmseg's ``publish_model.py`` do, on today's torch.

Their scripts read a training checkpoint with a plain ``torch.load``, which torch >= 2.6 refuses
(the ``HistoryBuffer`` logs in ``message_hub``). Here the checkpoint is read safely
(:func:`~convnext_dense.weights.safe_load.load_state_file`), only ``meta`` and ``state_dict`` are
kept (the optimizer, schedulers and logs are dropped), numpy scalars in the meta become Python
numbers, and the file is checked to load with a plain ``torch.load(weights_only=True)`` before
it gets its final name, ``OUT_YYYYMMDD-<first 8 hex digits of its sha256>.pth`` (mmdet's naming).
"""
import datetime
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

from ..atomic_files import write_bytes
from ..weights.safe_load import load_state_file

PathLike = Union[str, os.PathLike]
DEFAULT_SAVE_KEYS = ('meta', 'state_dict')


@dataclass(frozen=True)
class Published:
    """What :func:`publish_checkpoint` wrote.

    Attributes:
        path: The published file, ``OUT_YYYYMMDD-<sha256[:8]>.pth``.
        sha256: Its full sha256 (hex).
        kept, removed: The checkpoint's top-level keys kept and dropped.
        size_in, size_out: File sizes in bytes, before and after.
    """

    path: Path
    sha256: str
    kept: Tuple[str, ...]
    removed: Tuple[str, ...]
    size_in: int
    size_out: int


def plain_values(value: Any) -> Any:
    """``value`` with numpy scalars turned into Python numbers, inside dicts, lists and tuples."""
    import numpy as np
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return type(value)((k, plain_values(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)) and not hasattr(value, '_fields'):
        return type(value)(plain_values(v) for v in value)
    return value


def published_name(out: PathLike, sha256: str, date: Optional[datetime.date] = None) -> Path:
    """``out`` without ``.pth``, then ``_YYYYMMDD-<sha256[:8]>.pth``, as mmdet names it."""
    out = Path(out)
    stem = out.name[:-len('.pth')] if out.name.endswith('.pth') else out.name
    day = (date or datetime.date.today()).strftime('%Y%m%d')
    return out.with_name(f'{stem}_{day}-{sha256[:8]}.pth')


def publish_checkpoint(src: PathLike, out: PathLike,
                       save_keys: Sequence[str] = DEFAULT_SAVE_KEYS,
                       date: Optional[datetime.date] = None) -> Published:
    """Write the parts of checkpoint ``src`` named in ``save_keys`` as a published file.

    Args:
        src: A checkpoint written by mmengine's Runner (or any ``{'state_dict': ...}`` file).
        out: The name to publish under; the date and hash are appended (see module docstring).
        save_keys: Top-level keys to keep; ``state_dict`` must be one of them.
        date: The date in the name (default: today).

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: ``out`` is a folder; ``src`` is unsafe or not a checkpoint dict with a
            ``state_dict``; a key of ``save_keys`` it lacks; or kept values a plain weights-only
            load cannot read.
    """
    if 'state_dict' not in save_keys:
        raise ValueError(f"save_keys {list(save_keys)} must include 'state_dict'")
    if Path(out).is_dir() or str(out).endswith(('/', os.sep)):
        raise ValueError(f'{out} is a folder: give the name to publish under, e.g. '
                         f'{Path(out) / "upernet_b.pth"} (the date and hash are appended)')
    checkpoint = load_state_file(src)
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        keys = list(checkpoint)[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{src} holds no 'state_dict' (its keys: {keys}): not a training "
                         'checkpoint; a bare state dict or backbone file needs no publishing')
    absent = [k for k in save_keys if k not in checkpoint]
    if absent:
        raise ValueError(f'{src} has no {absent}; its keys are {list(checkpoint)}')
    kept: Dict[str, Any] = {k: plain_values(checkpoint[k]) for k in save_keys}
    removed = tuple(k for k in checkpoint if k not in save_keys)
    buffer = io.BytesIO()
    torch.save(kept, buffer)
    data = buffer.getvalue()
    _check_plain_load(data, save_keys)
    sha256 = hashlib.sha256(data).hexdigest()
    final = published_name(out, sha256, date)
    write_bytes(final, data)
    return Published(final, sha256, tuple(save_keys), removed, Path(src).stat().st_size,
                     len(data))


def _check_plain_load(data: bytes, save_keys: Sequence[str]) -> None:
    try:
        torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except Exception as err:  # whatever torch refuses: name the keys kept
        raise ValueError(f'the kept keys {list(save_keys)} hold objects a plain '
                         f'torch.load(weights_only=True) refuses ({err.__class__.__name__}: '
                         f'{str(err).splitlines()[0]}); keep fewer keys') from None
