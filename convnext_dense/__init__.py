"""ConvNeXt as a dense-prediction backbone for OpenMMLab (mmdet 3.x and mmseg 1.x).

Importing the package registers ``convnext_dense.ConvNeXt`` and the other modules in the
``convnext_dense`` registry scope.
"""
from . import resume_safety
from .archs import ARCH_SETTINGS
from .backbone import ConvNeXt
from .hooks import NonFiniteLossHook
from .layer_decay import LayerDecayOptimizerConstructor
from .registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS
from .swap import swap_backbone

resume_safety.install()

__version__ = '0.1.0'
__all__ = [
    'ARCH_SETTINGS', 'ConvNeXt', 'LayerDecayOptimizerConstructor', 'MODELS', 'NonFiniteLossHook',
    'OPTIM_WRAPPER_CONSTRUCTORS', '__version__', 'swap_backbone'
]
