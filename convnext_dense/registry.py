"""Registries of the ``convnext_dense`` scope.

They are children of mmengine's root registries, so mmdet and mmseg configs reach our modules as
``type='convnext_dense.ConvNeXt'`` and
``constructor='convnext_dense.LayerDecayOptimizerConstructor'`` after
``custom_imports = dict(imports=['convnext_dense'], allow_failed_imports=False)``.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import Registry

MODELS = Registry(
    'model', parent=MMENGINE_MODELS, scope='convnext_dense', locations=['convnext_dense'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    scope='convnext_dense',
    locations=['convnext_dense'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='convnext_dense', locations=['convnext_dense'])
