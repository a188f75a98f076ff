"""Load the config to swap (a path or an ``mmdet::`` / ``mmseg::`` name) and tell its task."""
from typing import NamedTuple, Optional, Union

from mmengine.config import Config

from ..runtime.config import TASK_SCOPES, stock_config_name, stock_config_path
from .errors import SwapRefused

class Source(NamedTuple):
    """A loaded config with what the delta needs to refer back to it."""
    cfg: Config
    base: Optional[str]  # what ``_base_`` names: 'mmdet::x.py', a file path, or None
    scope: str           # 'mmdet' or 'mmseg'


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
        base = cfg if '::' in cfg else stock_config_name(cfg)
        loaded = Config.fromfile(stock_config_path(cfg), import_custom_modules=False)
    elif isinstance(cfg, Config):
        loaded, base = cfg, (stock_config_name(cfg.filename) if cfg.filename else None)
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
