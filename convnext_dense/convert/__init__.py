"""Conversions that need both the model and the weights layer: a checkpoint file of any layout to
this package's backbone file, or to a Hugging Face ``ConvNextBackbone`` directory
(``tools/convert_checkpoint.py``)."""
from .backbone_file import convert_file, convert_to_hf_backbone, save_backbone_weights

__all__ = ['convert_file', 'convert_to_hf_backbone', 'save_backbone_weights']
