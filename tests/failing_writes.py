"""Writes that die halfway (a transformers ``save_pretrained``, a file whose data never reaches the
disk) and the checks that they cost nothing."""
import os
from pathlib import Path

import pytest


def _dies_midway(self, save_directory, **kwargs):
    (Path(save_directory) / 'config.json').write_text('{"half": ')
    raise OSError('disk full')


def assert_a_dying_save_keeps(dst: Path, model_class, write, monkeypatch) -> None:
    """``write()`` with ``model_class.save_pretrained`` dying halfway leaves the folder ``dst``
    as it was, and nothing else beside it."""
    before = {p.name: p.read_bytes() for p in dst.iterdir()}
    monkeypatch.setattr(model_class, 'save_pretrained', _dies_midway)
    with pytest.raises(OSError, match='disk full'):
        write()
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == before
    assert [p.name for p in dst.parent.iterdir()] == [dst.name]


def _disk_full(fd):
    raise OSError('disk full')


def assert_a_dying_write_keeps(path: Path, write, monkeypatch) -> None:
    """``write()`` with the flush to disk failing (``os.fsync``) leaves the file ``path`` as it
    was."""
    before = path.read_bytes()
    monkeypatch.setattr(os, 'fsync', _disk_full)
    with pytest.raises(OSError, match='disk full'):
        write()
    assert path.read_bytes() == before
