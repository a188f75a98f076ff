"""Pretrained ConvNeXt weights: every checkpoint layout, any source, loaded strictly and safely.

``ConvNeXt(init_cfg=dict(type='Pretrained', checkpoint=SRC, prefix=None))`` calls
:func:`load_pretrained`. SRC may be a local file, an http(s) URL, a Hugging Face model directory
or a hub id; the layout (official, Hugging Face, timm, mmpretrain, full mmdet / mmseg checkpoint)
is detected from the keys. No file is unpickled with code: see :mod:`.safe_load`.

Whole detector / segmenter checkpoints (official mmdet 2 / mmseg 0 files, mmdet 3 / mmseg 1 zoo
files, Hugging Face ``UperNetForSemanticSegmentation``): :func:`load_model_checkpoint` loads them
strictly; :mod:`.model_layouts` renames them; :mod:`.hf_upernet` and :mod:`.hf_backbone` write
Hugging Face directories (a UperNet, a ``ConvNextBackbone``).
Writing a backbone file from any checkpoint is :mod:`convnext_dense.convert` (it builds the model).
"""
from .errors import CheckpointError
from .fit import describe_arch, infer_arch
from .layouts import Conversion, convert_to_backbone, convert_with_report, detect_naming
from .hf_backbone import save_hf_backbone
from .hf_upernet import save_hf_upernet, save_mmseg_checkpoint
from .loader import format_report, load_pretrained, read_checkpoint
from .model_layouts import convert_model_state_dict, to_hf_backbone, to_hf_upernet
from .model_loader import load_model_checkpoint, read_model_checkpoint
from .safe_load import load_state_file
from .sources import resolve_source

__all__ = [
    'CheckpointError', 'Conversion', 'convert_model_state_dict', 'convert_to_backbone',
    'convert_with_report', 'describe_arch', 'detect_naming', 'format_report', 'infer_arch',
    'load_model_checkpoint', 'load_pretrained', 'load_state_file', 'read_checkpoint',
    'read_model_checkpoint', 'resolve_source', 'save_hf_backbone', 'save_hf_upernet',
    'save_mmseg_checkpoint', 'to_hf_backbone', 'to_hf_upernet',
]
