"""Name the config entry behind "got an unexpected keyword argument" when the Runner builds.

A misspelt key (``--cfg-options model.backbon.arch=tiny``, or a typo in a config file) reaches
the class the registry builds as an argument it does not take, and Python's ``TypeError`` names
neither the config entry nor what was meant. :func:`explain_unexpected_arguments` finds the entry
(the dict that holds the key and whose ``type`` is that class or a subclass: a dataset's
unknown key reaches ``BaseDataset``) and re-raises the error as
:class:`ConfigArgumentError` naming its path and the closest arguments the class does take.
"""
import difflib
import inspect
import re
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Tuple

from mmengine.config import Config

# The registries a config's ``type`` entries are built from.
_REGISTRIES = ('MODELS', 'DATASETS', 'TRANSFORMS', 'TASK_UTILS', 'HOOKS', 'METRICS',
               'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'OPTIMIZERS', 'PARAM_SCHEDULERS',
               'DATA_SAMPLERS', 'VISUALIZERS', 'VISBACKENDS', 'LOOPS', 'LOG_PROCESSORS',
               'EVALUATOR', 'RUNNERS')
_UNEXPECTED = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")


class ConfigArgumentError(ValueError):
    """A config entry gives a class an argument it does not take."""


@contextmanager
def explain_unexpected_arguments(cfg: Config) -> Iterator[None]:
    """Re-raise an unexpected-keyword ``TypeError`` as :class:`ConfigArgumentError` when an entry
    of ``cfg`` explains it; any other error passes through unchanged."""
    try:
        yield
    except TypeError as err:
        found = _UNEXPECTED.search(str(err))
        if found is None:
            raise
        class_name, key = found.groups()
        entries = list(_entries_with(cfg.to_dict(), class_name, key))
        if not entries:
            raise
        path, entry = entries[0]
        raise ConfigArgumentError(_message(class_name, key, path, entry)) from err


def _entries_with(node: Any, class_name: str, key: str,
                  path: str = '') -> Iterator[Tuple[str, dict]]:
    """(path, dict) for each dict in ``node`` that holds ``key`` and whose ``type`` is
    ``class_name`` or a subclass of it."""
    if isinstance(node, dict):
        if key in node and class_name in _class_names(node.get('type')):
            yield path, node
        for name, value in node.items():
            yield from _entries_with(value, class_name, key, f'{path}.{name}' if path else name)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _entries_with(value, class_name, key, f'{path}[{index}]')


def _class_names(type_value: Any) -> List[str]:
    """The names of the class a config ``type`` names and of its bases ('mmdet.RPNHead' gives
    'RPNHead', 'AnchorHead', ...); the name alone when the class cannot be found."""
    cls = _class_of(type_value)
    if cls is not None:
        return [base.__name__ for base in cls.__mro__]
    if isinstance(type_value, str):
        return [type_value.rsplit('.', 1)[-1]]
    return []


def _message(class_name: str, key: str, path: str, entry: dict) -> str:
    where = f'{path}.{key}' if path else key
    class_name = _class_names(entry.get('type'))[0]
    taken = _arguments_of(entry.get('type'))
    candidates = taken if taken else [name for name in entry if name not in (key, 'type')]
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(name) for name in close)}?)" if close else ''
    return (f"config entry {where}: {class_name} takes no argument '{key}'{hint}; fix the "
            'config file or the --cfg-options item that set it')


def _arguments_of(type_value: Any) -> List[str]:
    """The keyword arguments the class named by ``type_value`` takes, its bases' included where
    its ``__init__`` passes ``**kwargs`` on; empty where the class cannot be found."""
    cls = _class_of(type_value)
    names: List[str] = []
    for base in (cls.__mro__ if cls is not None else ()):
        if '__init__' not in vars(base):
            continue
        try:
            parameters = list(inspect.signature(base.__init__).parameters.values())[1:]
        except (TypeError, ValueError):
            break
        names += [p.name for p in parameters
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names


def _class_of(type_value: Any) -> Optional[type]:
    """The class a config ``type`` names (a class, or a name in one of mmdet's or mmseg's
    registries), if any."""
    if inspect.isclass(type_value):
        return type_value
    if not isinstance(type_value, str):
        return None
    from .config import TASK_SCOPES, task_registry
    for scope in TASK_SCOPES:
        for registry in _REGISTRIES:
            try:
                cls = task_registry(scope, registry).get(type_value)
            except (ImportError, AttributeError, KeyError):
                continue
            if inspect.isclass(cls):
                return cls
    return None
