"""Read a checkpoint file without running any code it might carry.

safetensors files hold only tensors. Pickled PyTorch files are read with
``torch.load(weights_only=True)``: tensors, plain containers and numbers only. mmengine training
checkpoints also pickle their logs (numpy arrays and scalars, ``HistoryBuffer``), and the
official ConvNeXt repo's and timm's training scripts their command line (``argparse.Namespace``);
exactly those classes are allowed, and ``getattr`` only for a ``HistoryBuffer``'s statistics
methods. Any other global makes the load fail before anything from the file is executed.
"""
import argparse
import _compat_pickle
import contextlib
import inspect
import io
import json
import os
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator, List, Mapping, Optional, Tuple, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import CheckpointError

_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
# How a torch.save file of the legacy (non-zip) format starts: its magic number, pickled.
# How pickle.dump stores a tensor's storage: torch.save bytes, which it loads with
# weights_only=False.
_PICKLED_STORAGE = 'torch.storage._load_from_bytes'
_LEGACY_TORCH_MAGIC = b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.'
# Phrases of torch's weights-only unpickler (and of _history_buffer_statistic) when a pickle asks
# for a global or a call it does not allow.
_ASKS_FOR_CODE = re.compile(r'GLOBAL|unrecognized function|refused getattr|Can only (create|build)')


def _history_buffer_statistic(obj: Any, name: str) -> Any:
    """``getattr`` as HistoryBuffer pickles its statistics (``getattr(HistoryBuffer, 'mean')``).

    Only public functions defined on the HistoryBuffer class are returned; anything else is
    refused.
    """
    from mmengine.logging import HistoryBuffer
    is_buffer = obj is HistoryBuffer or isinstance(obj, HistoryBuffer)
    member = vars(HistoryBuffer).get(name)
    if is_buffer and not name.startswith('_') and inspect.isfunction(member):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'refused getattr({type(obj).__name__}, {name!r}): only '
                                 'HistoryBuffer statistics methods are allowed')


def training_log_allowlist() -> List[Tuple[Any, str]]:
    """(object, pickled name) of the data-only objects training scripts write beside the weights.

    For ``torch.serialization.safe_globals``: numpy arrays, scalars and dtypes, mmengine's
    ``HistoryBuffer`` and a ``getattr`` limited to its statistics methods, and the
    ``argparse.Namespace`` of the official ConvNeXt repo's and timm's checkpoints (``'args'``;
    unpickled, it only sets attributes).
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    allowed = [(HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
               (_history_buffer_statistic, 'builtins.getattr'),
               (np.ndarray, 'numpy.ndarray'), (np.dtype, 'numpy.dtype'),
               (argparse.Namespace, 'argparse.Namespace')]
    for core in ('numpy.core', 'numpy._core'):  # files written by numpy 1 and numpy 2
        allowed += [(multiarray._reconstruct, f'{core}.multiarray._reconstruct'),
                    (multiarray.scalar, f'{core}.multiarray.scalar')]
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25 may pickle dtypes by their class
    if dtypes is not None:
        allowed += [(getattr(dtypes, name), f'numpy.dtypes.{name}')
                    for name in dir(dtypes) if name.endswith('DType')]
    return allowed


def _entry_name(entry: Any) -> str:
    return entry[1] if isinstance(entry, tuple) else f'{entry.__module__}.{entry.__qualname__}'


@contextlib.contextmanager
def _training_logs_allowed() -> Iterator[None]:
    """Allow :func:`training_log_allowlist` for one load, over same-named entries of others.

    torch keeps one object per name and picks among duplicates arbitrarily, so same-named
    entries added elsewhere in the process are set aside for the load and restored after it.
    """
    saved = torch.serialization.get_safe_globals()
    ours = training_log_allowlist()
    names = {name for _, name in ours}
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals([e for e in saved if _entry_name(e) not in names] + ours)
    try:
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)


def _plain_global_names() -> set:
    """Globals a weights-only load accepts here: torch's defaults and the training-log names."""
    try:  # private, but only used to word the refusal message
        from torch._weights_only_unpickler import _get_allowed_globals
        defaults = set(_get_allowed_globals())
    except (ImportError, AttributeError):
        defaults = set()
    return defaults | {name for _, name in training_log_allowlist()}


def load_state_file(path: Union[str, os.PathLike], map_location: Any = 'cpu') -> Mapping[str, Any]:
    """Load a ``.safetensors`` file (onto the CPU) or a pickled PyTorch checkpoint, safely.

    The format is told from the file's first bytes, not its name; a Hugging Face shard index
    (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``) loads the shards it
    names, from its folder.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a pickle that would run code (nothing of it ran), or a truncated, corrupt or
            non-checkpoint file.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f'checkpoint file {path} is a folder, not a file')
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint file {path} does not exist')
    if path.name.endswith('.index.json'):
        return _load_shards(path, map_location)
    size = path.stat().st_size
    with open(path, 'rb') as f:
        head = f.read(16)
    try:
        if _is_safetensors(head, size):
            return load_file(str(path), device='cpu')
        # A file object: torch.load would take a path ending in .safetensors for safetensors.
        with _training_logs_allowed(), open(path, 'rb') as f:
            return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        names = _pickled_globals(path)
        foreign = [name for name in names or () if name not in _plain_global_names()]
        if set(foreign) == {_PICKLED_STORAGE} and not head.startswith(_LEGACY_TORCH_MAGIC):
            raise CheckpointError(_pickle_dump_message(path, size)) from None
        if foreign or _ASKS_FOR_CODE.search(str(err)):
            raise CheckpointError(_refusal_message(path, foreign, err)) from None
        raise CheckpointError(_corrupt_message(path, size, head, err)) from None
    except (RuntimeError, OSError, EOFError, ValueError, IndexError, KeyError, TypeError,
            AttributeError, AssertionError, SafetensorError) as err:
        # What torch's unpickler raises on damaged bytes: a flipped byte can turn an argument
        # count or a tensor's rebuild call into nonsense as well as break the pickle itself.
        raise CheckpointError(_corrupt_message(path, size, head, err)) from None


def shard_names(index: Path) -> List[str]:
    """The shard files a sharded ``save_pretrained``'s ``*.index.json`` names, each once."""
    return sorted(set(_weight_map(index).values()))


def _weight_map(index: Path) -> Mapping[str, str]:
    """An index's ``weight_map`` (tensor name -> shard file), its shard names checked."""
    try:
        weight_map = json.loads(index.read_text())['weight_map']
        names = set(weight_map.values())
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f'{index} is not a Hugging Face shard index (a JSON object with a '
                              f'"weight_map" of tensor name -> shard file): {err!r}') from None
    for name in names:
        if not isinstance(name, str) or Path(name).name != name:
            raise CheckpointError(f'{index} names the shard {name!r}: shards are file names in '
                                  'its own folder')
    return weight_map


def _load_shards(index: Path, map_location: Any) -> Mapping[str, Any]:
    """Every tensor of a sharded ``save_pretrained``: the index maps each name to its shard."""
    weight_map = _weight_map(index)
    merged: dict = {}
    for shard in sorted(set(weight_map.values())):
        merged.update(load_state_file(index.parent / shard, map_location))
    lacking = sorted(set(weight_map) - set(merged))
    if lacking:
        raise CheckpointError(f'the shards of {index} lack {len(lacking)} of the tensors it '
                              f'lists, e.g. {lacking[:3]}')
    return merged


def _is_safetensors(head: bytes, size: int) -> bool:
    # safetensors: an 8-byte little-endian header length, then a JSON header.
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], 'little')
    return head[8:9] == b'{' and header_len <= _SAFETENSORS_MAX_HEADER


def _pickled_globals(path: Path) -> Optional[List[str]]:
    """Names of the globals a pickle refers to, read with pickletools (nothing is executed).

    Looks into ``data.pkl`` of a zip-format torch file, else at the pickles at the start of the
    file (a legacy torch file continues with raw storage bytes). None if no pickle can be read.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = archive.read(next(n for n in archive.namelist() if n.endswith('data.pkl')))
        else:
            data = path.read_bytes()
    except (OSError, StopIteration, zipfile.BadZipFile):
        return None
    stream, names, complete = io.BytesIO(data), [], 0
    while stream.tell() < len(data):
        try:
            names += _globals_of_one_pickle(stream)
        except Exception:  # noqa: BLE001  (garbage or raw bytes after the pickles)
            break
        complete += 1
    return names if complete else None


# Opcodes that store the top of the stack in the memo without pushing anything.
_MEMO_PUTS = ('MEMOIZE', 'PUT', 'BINPUT', 'LONG_BINPUT')
_MEMO_GETS = ('GET', 'BINGET', 'LONG_BINGET')
_NOT_PUSHING = ('PROTO', 'FRAME', 'STOP', 'MARK')


def _globals_of_one_pickle(stream: io.BytesIO) -> List[str]:
    """The globals of the pickle at ``stream``'s position (read up to its STOP).

    ``STACK_GLOBAL`` takes module and name from the stack; a pickle pushes each string once and
    fetches it from the memo after that (numpy arrays: ``numpy`` for ``numpy.dtype`` comes from
    the memo), so the memo is followed.
    """
    names: List[str] = []
    pushed: List[Optional[str]] = []  # what each pushing opcode pushed (None: not a string)
    memo: dict = {}
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name == 'GLOBAL':
            names.append(_modern_name(*arg.split(' ', 1)))
            pushed.append(None)
        elif opcode.name == 'STACK_GLOBAL':
            if len(pushed) >= 2 and None not in pushed[-2:]:
                names.append(_modern_name(pushed[-2], pushed[-1]))
            pushed.append(None)
        elif opcode.name in _MEMO_PUTS:
            memo[len(memo) if opcode.name == 'MEMOIZE' else arg] = pushed[-1] if pushed else None
        elif opcode.name in _MEMO_GETS:
            pushed.append(memo.get(arg))
        elif opcode.name not in _NOT_PUSHING:
            pushed.append(arg if isinstance(arg, str) else None)
    return names


def _modern_name(module: str, name: str) -> str:
    # Protocol-2 pickles name Python 2 modules (__builtin__); map them as unpickling does.
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f'{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}'


def _refusal_message(path: Path, foreign: List[str], err: Exception) -> str:
    if foreign:
        what = 'asks for ' + ', '.join(f'`{name}`' for name in dict.fromkeys(foreign[:3]))
    else:
        what = f'makes a call torch refuses ({_torch_detail(err)})'
    return (f'refused to load {path}: it is a pickle that {what}, which could run arbitrary '
            'code; nothing from the file was executed. Only tensors, plain containers, numbers and '
            "mmengine's training logs are accepted (torch.load(weights_only=True)). If you trust "
            'the file, re-save just its state dict (torch.save(model.state_dict(), ...)) or '
            'convert it to safetensors.')


def _pickle_dump_message(path: Path, size: int) -> str:
    return (f'checkpoint {path} ({size} bytes) is a plain pickle of tensors (pickle.dump), not a '
            f'torch.save or safetensors file: pickle stores each tensor as torch.save bytes that '
            f'torch reads back unsafely (`{_PICKLED_STORAGE}`), so it is refused; nothing from '
            'the file was executed. If you trust the file, load it with pickle.load and save the '
            'weights with torch.save(state_dict, ...) or safetensors.torch.save_file.')


def _torch_detail(err: Exception) -> str:
    text = str(err).split('WeightsUnpickler error:')[-1]  # skip torch's weights_only preamble
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else type(err).__name__


def _corrupt_message(path: Path, size: int, head: bytes, err: Exception) -> str:
    detail = _torch_detail(err)
    if head.startswith(b'\x80') and not head.startswith(_LEGACY_TORCH_MAGIC):
        return (f'checkpoint {path} ({size} bytes) is a plain pickle, not a torch.save or '
                f'safetensors file: {detail}. Save the weights with torch.save(state_dict, ...) '
                'or safetensors.torch.save_file.')
    if head.startswith(b'PK') or _is_safetensors(head, size) or head.startswith(b'\x80'):
        kind = 'is truncated or corrupt'
    else:
        kind = f'is not a PyTorch or safetensors checkpoint (it starts with {head[:16]!r})'
    return (f'checkpoint {path} ({size} bytes) {kind}: {detail}. A download or copy: fetch it '
            'again; a training checkpoint: resume from an earlier checkpoint of its work dir '
            '(tools/train.py --resume PATH).')
