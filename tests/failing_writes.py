"""A transformers ``save_pretrained`` that dies halfway, and the check that it cost nothing."""
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
