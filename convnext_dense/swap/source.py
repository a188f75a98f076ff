"""Load the config to swap (a path or an ``mmdet::`` / ``mmseg::`` name) and tell its task."""
import os.path as osp
from typing import NamedTuple, Optional, Union

from mmengine.config import Config
from mmengine.utils import get_installed_path

from ..configs import stock_config_path
from .errors import SwapRefused

#: Registry scopes swap_backbone maps: detection and segmentation.
TASK_SCOPES = ('mmdet', 'mmseg')


class Source(NamedTuple):
    """A loaded config with what the delta needs to refer back to it."""
    cfg: Config
    base: Optional[str]  # what ``_base_`` names: 'mmdet::x.py', a file path, or None
    scope: str           # 'mmdet' or 'mmseg'


def _package_name(path: str) -> str:
    """``'mmdet::x/y.py'`` for a file installed with mmdet / mmseg, else the absolute path."""
    path = osp.abspath(path)
    for scope in TASK_SCOPES:
        root = osp.join(get_installed_path(scope), '.mim', 'configs')
        if path.startswith(root + osp.sep):
            return f'{scope}::{osp.relpath(path, root)}'
    return path


def load_source(cfg: Union[str, Config]) -> Source:
    """Load ``cfg`` without importing its custom modules and find its registry scope.

    Args:
        cfg: A config file path, an ``'mmdet::…'`` / ``'mmseg::…'`` name or a loaded ``Config``.

    Raises:
        TypeError: ``cfg`` is neither a string nor a ``Config``.
        FileNotFoundError: the file does not exist.
        SwapRefused: the scope is neither mmdet nor mmseg.
    """
    if isinstance(cfg, str):
        base = cfg if '::' in cfg else _package_name(cfg)
        loaded = Config.fromfile(stock_config_path(cfg), import_custom_modules=False)
    elif isinstance(cfg, Config):
        loaded, base = cfg, (_package_name(cfg.filename) if cfg.filename else None)
    else:
        raise TypeError(f'cfg must be a config path, an mmdet::/mmseg:: name or a Config, '
                        f'got {type(cfg).__name__}')
    scope = loaded.get('default_scope')
    if scope is None and isinstance(base, str) and '::' in base:
        scope = base.split('::', 1)[0]
    if scope not in TASK_SCOPES:
        raise SwapRefused('default_scope', f'is {scope!r}; swap_backbone maps mmdet (detection) '
                          f'and mmseg (segmentation) configs, choose one of {list(TASK_SCOPES)}')
    return Source(loaded, base, scope)
