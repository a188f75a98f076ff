"""Locate the configs installed with mmdet / mmseg (``mmdet::path`` names)."""
import os.path as osp

from mmengine.config.utils import _get_package_and_cfg_path
from mmengine.utils import get_installed_path

PACKAGES = {'mmdet': 'mmdet', 'mmsegmentation': 'mmseg'}


def stock_config_path(name: str) -> str:
    """Return the file of ``'mmdet::convnext/x.py'`` style names; other paths pass through.

    Raises:
        FileNotFoundError: the config does not exist.
    """
    if '::' in name:
        package, relative = _get_package_and_cfg_path(name)
        if package not in PACKAGES:
            raise ValueError(f"config scope in '{name}' is not one of {sorted(PACKAGES.values())}")
        path = osp.join(get_installed_path(package), '.mim', 'configs', relative)
    else:
        path = name
    if not osp.isfile(path):
        raise FileNotFoundError(f"config '{name}' not found (looked at {path})")
    return path
