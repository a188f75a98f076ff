"""ConvNeXt as a dense-prediction backbone for OpenMMLab (mmdet 3.x and mmseg 1.x).

Importing the package registers ``convnext_dense.ConvNeXt`` and the other modules in the
``convnext_dense`` registry scope.
"""
from .archs import ARCH_SETTINGS
from .backbone import ConvNeXt
from .layer_decay import LayerDecayOptimizerConstructor
from .registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

__version__ = '0.1.0'
__all__ = [
    'ARCH_SETTINGS', 'ConvNeXt', 'LayerDecayOptimizerConstructor', 'MODELS',
    'OPTIM_WRAPPER_CONSTRUCTORS', '__version__'
]
