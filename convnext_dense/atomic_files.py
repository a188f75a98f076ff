"""Write files and folders so that nobody ever sees a half-written one: write under a temporary
name beside the target, then rename (one atomic step on the same file system)."""
import glob
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Union

PathLike = Union[str, os.PathLike]
# What a write in progress is called; a killed write leaves such a file behind.
TMP_PREFIX = '.tmp-'
TMP_SUFFIX = '.part'


@contextmanager
def atomic_path(dst: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dst`` to write; it becomes ``dst`` when the block ends.

    If the block raises, the temporary file is removed and ``dst`` is left as it was. A ``dst``
    that is a symbolic link is written where it points (the link stays).

    Raises:
        IsADirectoryError: ``dst`` is a folder (checked before the block runs).
        NotADirectoryError: a folder on the way to ``dst`` is a file.
        PermissionError: the folder of ``dst`` cannot be written (found before the block runs,
            not by the writer inside it, whose libraries name it in their own ways).
    """
    dst = _followed(dst)
    if dst.is_dir():
        raise IsADirectoryError(f'{dst} is a folder: the output must be a file name')
    _make_parent(dst)
    tmp = dst.with_name(f'{TMP_PREFIX}{dst.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}')
    try:
        open(tmp, 'xb').close()
        yield tmp
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(dst: PathLike, data: bytes) -> None:
    """Write ``data`` to ``dst`` atomically, flushed to disk before the rename."""
    with atomic_path(dst) as tmp, open(tmp, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def atomic_dir(target: PathLike, replaceable: Callable[[str], bool] = lambda name: False
               ) -> Iterator[Path]:
    """Yield a new empty folder beside ``target``; it replaces ``target`` when the block ends.

    An existing ``target`` is replaced only when it is empty or every entry in it is
    ``replaceable`` (by name: what an earlier write of the same kind left there); it is moved
    aside first and deleted after the rename. If the block raises, the new folder is deleted
    and ``target`` is left as it was. A ``target`` that is a symbolic link is replaced where it
    points (the link stays).

    Raises:
        FileExistsError: ``target`` is a file, the current folder or one holding it, or holds
            entries that are not ``replaceable`` (checked before anything is written).
    """
    check_replaceable(target, replaceable)
    target = _followed(target)
    _make_parent(target)
    work = Path(tempfile.mkdtemp(prefix=f'{TMP_PREFIX}{target.name}-', dir=target.parent))
    try:
        yield work
        work.chmod(0o755)  # mkdtemp makes it private
        if target.exists():
            old = target.with_name(f'{TMP_PREFIX}{target.name}-old-{uuid.uuid4().hex[:8]}')
            os.rename(target, old)
            os.rename(work, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_replaceable(target: PathLike, replaceable: Callable[[str], bool]) -> None:
    """Raise what :func:`atomic_dir` would, before any work, if it may not replace ``target``.

    Raises:
        FileExistsError: ``target`` is a file, the current folder or one holding it (replacing
            it would leave this process and the user's shell in a deleted folder), or holds
            entries that are not ``replaceable``.
    """
    given, target = target, _followed(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f'{target} is a file: the output must be a folder')
    cwd = Path.cwd().resolve()
    if target.is_dir() and (target == cwd or target in cwd.parents):
        raise FileExistsError(f"'{os.fspath(given)}' is the current folder or holds it: the "
                              'output folder is replaced as a whole; name a folder inside it, '
                              "e.g. 'export'")
    if not target.is_dir():
        return
    others = sorted(entry.name for entry in target.iterdir() if not replaceable(entry.name))
    if others:
        listed = ', '.join(others[:5]) + (f' and {len(others) - 5} more' if len(others) > 5 else '')
        raise FileExistsError(
            f'{target} already holds {listed}: writing there would delete it. Choose a new or '
            'empty folder, or one that holds only an earlier output of this kind.')


def _make_parent(path: Path) -> None:
    """Create the folder of ``path``, or name the file that stands where a folder should."""
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(f'{folder} is a file, so {path} cannot be written '
                                         'under it: give another output path')
            break
    path.parent.mkdir(parents=True, exist_ok=True)


def _followed(path: PathLike) -> Path:
    """``path`` made absolute, symbolic links followed: what a write there really replaces."""
    return Path(path).resolve()


def remove_interrupted_writes(directory: PathLike) -> List[str]:
    """Delete the temporary files of writes killed midway (``.tmp-*.part``); return their names.

    Only leftovers can be there when a run starts: every write renames or removes its own file
    unless the process dies first.
    """
    removed = []
    pattern = os.path.join(glob.escape(os.fspath(directory)), f'{TMP_PREFIX}*{TMP_SUFFIX}')
    for path in sorted(glob.glob(pattern)):
        os.remove(path)
        removed.append(os.path.basename(path))
    return removed
