"""ConvNeXt as a dense-prediction backbone for OpenMMLab (mmdet 3.x and mmseg 1.x).

Importing the package only registers ``convnext_dense.ConvNeXt``,
``convnext_dense.LayerDecayOptimizerConstructor``, ``convnext_dense.NonFiniteLossHook`` and
``convnext_dense.ChannelsLastHook`` in the ``convnext_dense`` registry scope; it changes no
mmengine or torch setting. The process-wide checkpoint switch is
:mod:`convnext_dense.model_checkpoints` (configs list it in ``custom_imports``; ``tools/`` turn it
on).
"""
from .model.archs import ARCH_SETTINGS
from .model.backbone import ConvNeXt
from .model.layer_decay import LayerDecayOptimizerConstructor
from .registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS
from .runtime.channels_last import ChannelsLastHook
from .runtime.hooks import NonFiniteLossHook

__version__ = '0.1.0'
__all__ = [
    'ARCH_SETTINGS', 'ChannelsLastHook', 'ConvNeXt', 'LayerDecayOptimizerConstructor', 'MODELS',
    'NonFiniteLossHook', 'OPTIM_WRAPPER_CONSTRUCTORS', '__version__', 'swap_backbone'
]


def __getattr__(name: str):
    # swap_backbone is a tool over whole configs: imported when first asked for, not on import.
    if name == 'swap_backbone':
        from .swap import swap_backbone
        return swap_backbone
    raise AttributeError(f"module 'convnext_dense' has no attribute {name!r}")
