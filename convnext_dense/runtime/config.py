"""Configs: where mmdet / mmseg keep theirs, loading one, its task and its registry."""
import importlib
import os.path as osp
from typing import Optional, Tuple

from mmengine.config import Config
from mmengine.config.utils import _get_package_and_cfg_path
from mmengine.utils import get_installed_path

#: The registry scopes the package's tools and swap_backbone serve: detection and segmentation.
TASK_SCOPES = ('mmdet', 'mmseg')
# What mmengine's Config.fromfile reads.
CONFIG_SUFFIXES = ('.py', '.json', '.yml', '.yaml')
# mmengine names the package of ``mmseg::`` configs by its project name.
_SCOPE_OF_PROJECT = {'mmdet': 'mmdet', 'mmsegmentation': 'mmseg'}


def stock_configs_dir(scope: str) -> str:
    """The folder of the configs installed with ``scope``'s package ('mmdet' or 'mmseg')."""
    if scope not in TASK_SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {TASK_SCOPES}")
    return osp.join(get_installed_path(scope), '.mim', 'configs')


def stock_config_path(name: str) -> str:
    """Return the file of ``'mmdet::convnext/x.py'`` style names; other paths pass through.

    Raises:
        ValueError: the ``::`` scope is neither mmdet nor mmseg, or the file is no config
            (mmengine reads ``.py``, ``.json``, ``.yml`` and ``.yaml``).
        FileNotFoundError: the config does not exist.
    """
    if '::' in name:
        project, relative = _get_package_and_cfg_path(name)
        if project not in _SCOPE_OF_PROJECT:
            raise ValueError(f"config scope in '{name}' is not one of {list(TASK_SCOPES)}")
        path = osp.join(stock_configs_dir(_SCOPE_OF_PROJECT[project]), relative)
    else:
        path = name
    if not osp.isfile(path):
        raise FileNotFoundError(f"config '{name}' not found (looked at {path})")
    if not path.endswith(CONFIG_SUFFIXES):
        raise ValueError(f"config '{name}' is not a config file (a {', '.join(CONFIG_SUFFIXES)} "
                         'file); are the config and checkpoint arguments swapped?')
    return path


def stock_config_name(path: str) -> str:
    """``'mmdet::x/y.py'`` for a file installed with mmdet / mmseg, else the absolute path."""
    path = osp.abspath(path)
    for scope in TASK_SCOPES:
        root = stock_configs_dir(scope)
        if path.startswith(root + osp.sep):
            return f'{scope}::{osp.relpath(path, root)}'
    return path


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Load a config file (or ``mmdet::`` / ``mmseg::`` name) and merge command-line overrides."""
    cfg = Config.fromfile(stock_config_path(path))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    task_scope(cfg)
    return cfg


def task_scope(cfg: Config) -> str:
    """``'mmdet'`` or ``'mmseg'``, from the config's ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASK_SCOPES:
        raise ValueError(f"config default_scope is {scope!r}; convnext_dense tools run configs "
                         f"whose default_scope is one of {TASK_SCOPES}")
    return scope


def task_registry(scope: str, name: str = 'MODELS'):
    """The ``name`` registry (``MODELS``, ``DATASETS``, ...) of ``scope`` ('mmdet' or 'mmseg')."""
    if scope not in TASK_SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {TASK_SCOPES}")
    return getattr(importlib.import_module(f'{scope}.registry'), name)


def innermost_dataset(dataset: dict, path: str = 'dataset') -> Tuple[dict, str]:
    """The dataset inside wrappers (RepeatDataset, ConcatDataset, …) and its config path."""
    while 'dataset' in dataset:
        dataset, path = dataset['dataset'], f'{path}.dataset'
    return dataset, path
