"""Conversions that need both the model and the weights layer: a checkpoint file of any layout to
this package's backbone file (``tools/convert_checkpoint.py``)."""
from .backbone_file import convert_file, save_backbone_weights

__all__ = ['convert_file', 'save_backbone_weights']
