"""Conversions that need both the model and the weights layer: a checkpoint file of any layout to
this package's backbone file, or to a Hugging Face ``ConvNextBackbone`` directory
(``tools/convert_checkpoint.py``); a training checkpoint to a published one
(``tools/publish_model.py``)."""
from .backbone_file import convert_file, convert_to_hf_backbone, save_backbone_weights
from .publish import publish_checkpoint

__all__ = ['convert_file', 'convert_to_hf_backbone', 'publish_checkpoint', 'save_backbone_weights']
