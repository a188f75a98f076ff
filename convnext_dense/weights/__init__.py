"""Pretrained ConvNeXt weights: every checkpoint layout, any source, loaded strictly and safely.

``ConvNeXt(init_cfg=dict(type='Pretrained', checkpoint=SRC, prefix=None))`` calls
:func:`load_pretrained`. SRC may be a local file, an http(s) URL, a Hugging Face model directory
or a hub id; the layout (official, Hugging Face, timm, mmpretrain, full mmdet / mmseg checkpoint)
is detected from the keys. No file is unpickled with code: see :mod:`.safe_load`.
"""
from .export import convert_file, save_backbone_weights
from .fit import describe_arch, infer_arch
from .layouts import Conversion, convert_to_backbone, convert_with_report, detect_naming
from .loader import format_report, load_pretrained, read_checkpoint
from .safe_load import load_state_file
from .sources import resolve_source

__all__ = [
    'Conversion', 'convert_file', 'convert_to_backbone', 'convert_with_report', 'describe_arch',
    'detect_naming', 'format_report', 'infer_arch', 'load_pretrained', 'load_state_file',
    'read_checkpoint', 'resolve_source', 'save_backbone_weights',
]
