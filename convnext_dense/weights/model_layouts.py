"""Convert whole detector / segmenter state dicts between layouts (pure functions).

A whole model is ``backbone.*`` plus neck and heads. The backbone part is converted with
:func:`~convnext_dense.weights.layouts.convert_with_report` (every backbone naming it knows); the
heads are renamed only for Hugging Face's ``UperNetForSemanticSegmentation``, whose UperNet and FCN
heads are mmseg's with ``batch_norm`` for ``bn`` and ``classifier`` for ``conv_seg``. Layouts:

* this package's own checkpoints and the official ConvNeXt repo's (mmdet 2.x / mmseg 0.x era):
  backbone keys in the official names, nothing to rename;
* mmdet 3.x / mmseg 1.x model-zoo files of their ConvNeXt configs: mmpretrain backbone names;
* Hugging Face ``UperNetForSemanticSegmentation`` with a ``ConvNextBackbone``.

:func:`to_hf_upernet` goes the other way, to Hugging Face's names (:func:`to_hf_backbone` for a
backbone alone).
"""
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from .layouts import OUTPUT_NORM, convert_with_report, detect_naming

BACKBONE = 'backbone.'
HEADS = ('decode_head', 'auxiliary_head')
LAYOUT_OWN = 'convnext_dense / official ConvNeXt (official backbone names)'
LAYOUT_OFFICIAL = 'official ConvNeXt repo, mmdet 2.x / mmseg 0.x era (mmcv 1.x meta)'
LAYOUT_OPENMMLAB = 'mmdet 3.x / mmseg 1.x model zoo (mmpretrain backbone names)'
LAYOUT_HF_UPERNET = 'Hugging Face UperNetForSemanticSegmentation (ConvNextBackbone)'
LAYOUT_OTHER = 'no ConvNeXt backbone keys'

# mmseg head names -> Hugging Face UperNet head names (and back, reversed).
_HEAD_TO_HF = ((r'(^|\.)bn\.', r'\1batch_norm.'), (r'^conv_seg\.', 'classifier.'))
_HEAD_FROM_HF = ((r'(^|\.)batch_norm\.', r'\1bn.'), (r'^classifier\.', 'conv_seg.'))

# Official backbone names -> Hugging Face ConvNextBackbone names.
_BACKBONE_TO_HF = (
    (r'downsample_layers\.0\.0\.(weight|bias)', r'embeddings.patch_embeddings.\1'),
    (r'downsample_layers\.0\.1\.(weight|bias)', r'embeddings.layernorm.\1'),
    (r'downsample_layers\.([1-3])\.([01])\.(weight|bias)',
     r'encoder.stages.\1.downsampling_layer.\2.\3'),
    (r'stages\.([0-3])\.(\d+)\.(dwconv|pwconv1|pwconv2)\.(weight|bias)',
     r'encoder.stages.\1.layers.\2.\3.\4'),
    (r'stages\.([0-3])\.(\d+)\.norm\.(weight|bias)', r'encoder.stages.\1.layers.\2.layernorm.\3'),
    (r'stages\.([0-3])\.(\d+)\.gamma', r'encoder.stages.\1.layers.\2.layer_scale_parameter'),
    (OUTPUT_NORM.pattern, lambda m: f'hidden_states_norms.stage{int(m[1]) + 1}.{m[2]}'),
)


@dataclass(frozen=True)
class ModelConversion:
    """A whole-model state dict under this package's names.

    Attributes:
        state_dict: The tensors (not copies) under mmdet / mmseg + official backbone names.
        layout: Name of the detected layout.
        renamed: New key -> original key, for the keys that changed name.
        dropped: Original key -> why it is not loaded (e.g. a classifier's final norm).
    """

    state_dict: Dict[str, torch.Tensor]
    layout: str
    renamed: Dict[str, str] = field(default_factory=dict)
    dropped: Dict[str, str] = field(default_factory=dict)


def backbone_naming(state_dict: Mapping[str, object]) -> Optional[str]:
    """The ConvNeXt naming of the ``backbone.*`` keys, or None if there are none / no ConvNeXt."""
    return detect_naming([k[len(BACKBONE):] for k in state_dict if k.startswith(BACKBONE)])


def convert_model_state_dict(state_dict: Mapping[str, torch.Tensor],
                             meta: Optional[Mapping] = None) -> ModelConversion:
    """Rename a whole detector / segmenter state dict of any supported layout to this package's.

    Pure and idempotent: nothing is copied or mutated, and converting the result again returns the
    same keys. Keys that no rule maps keep their names (a strict load then reports them).

    Args:
        state_dict: The model's state dict (``module.`` of a DDP wrapper is stripped).
        meta: The checkpoint's ``meta``, used only to name the layout.
    """
    if state_dict and all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    naming = backbone_naming(state_dict)
    if naming is None:
        return ModelConversion(dict(state_dict), LAYOUT_OTHER)
    inside = {k[len(BACKBONE):]: v for k, v in state_dict.items() if k.startswith(BACKBONE)}
    conversion = convert_with_report(inside, prefix='', dense=True)
    out: Dict[str, torch.Tensor] = {}
    renamed: Dict[str, str] = {}
    for target, original in conversion.mapped.items():
        out[BACKBONE + target] = conversion.state_dict[target]
        if target != original:
            renamed[BACKBONE + target] = BACKBONE + original
    for original in conversion.unmapped:  # left for the strict check to report
        out[BACKBONE + original] = inside[original]
    dropped = {BACKBONE + k: reason for k, reason in conversion.dropped.items()}
    for key, value in state_dict.items():
        if key.startswith(BACKBONE):
            continue
        target = _head_from_hf(key) if naming == 'huggingface' else key
        if target in out:
            raise ValueError(f'checkpoint keys {renamed.get(target, target)!r} and {key!r} both '
                             f'map to {target!r}; the checkpoint mixes layouts')
        out[target] = value
        if target != key:
            renamed[target] = key
    return ModelConversion(out, _layout_name(naming, meta), renamed, dropped)


def to_hf_upernet(state_dict: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor],
                                                                   Dict[str, str]]:
    """An mmseg UperNet-ConvNeXt state dict (any layout) under Hugging Face UperNet names.

    Returns:
        ``(hf_state_dict, {hf key: mmseg key})``.

    Raises:
        ValueError: a key outside the backbone, ``decode_head`` and ``auxiliary_head``, or a
            backbone key with no Hugging Face name.
    """
    def hf_key(key: str) -> Optional[str]:
        module, _, rest = key.partition('.')
        if module == 'backbone':
            target = _first_match(rest, _BACKBONE_TO_HF)
            return None if target is None else BACKBONE + target
        return f'{module}.{_head_to_hf(rest)}' if module in HEADS else None

    out, mapped, unknown = _renamed(convert_model_state_dict(state_dict).state_dict, hf_key)
    if unknown:
        raise ValueError(f'{len(unknown)} keys have no place in Hugging Face\'s '
                         f'UperNetForSemanticSegmentation: {unknown[:8]}')
    return out, mapped


def to_hf_backbone(weights: Mapping[str, torch.Tensor]
                   ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Backbone weights in the official names (no prefix) under Hugging Face
    ``ConvNextBackbone``'s (``stages.2.0.gamma`` ->
    ``encoder.stages.2.layers.0.layer_scale_parameter``, ``norm0.weight`` ->
    ``hidden_states_norms.stage1.weight``).

    Returns:
        ``(hf_state_dict, {hf key: backbone key})``.

    Raises:
        ValueError: a key with no place in ``ConvNextBackbone``.
    """
    out, mapped, unknown = _renamed(weights, lambda key: _first_match(key, _BACKBONE_TO_HF))
    if unknown:
        raise ValueError(f'{len(unknown)} keys have no place in Hugging Face\'s ConvNextBackbone: '
                         f'{unknown[:8]}')
    return out, mapped


def _renamed(state_dict: Mapping[str, torch.Tensor], new_key
             ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str], List[str]]:
    """``(renamed state dict, {new key: key}, the keys new_key maps to None)``."""
    out, mapped, unknown = {}, {}, []
    for key, value in state_dict.items():
        target = new_key(key)
        if target is None:
            unknown.append(key)
        else:
            out[target] = value
            mapped[target] = key
    return out, mapped, unknown


def _head_from_hf(key: str) -> str:
    """``decode_head.x.batch_norm.w`` -> ``decode_head.x.bn.w``; other modules unchanged."""
    module, dot, rest = key.partition('.')
    if module not in HEADS:
        return key
    for pattern, repl in _HEAD_FROM_HF:
        rest = re.sub(pattern, repl, rest)
    return module + dot + rest


def _head_to_hf(rest: str) -> str:
    """A head key without its module name, under Hugging Face's names."""
    for pattern, repl in _HEAD_TO_HF:
        rest = re.sub(pattern, repl, rest)
    return rest


def _first_match(key: str, rules) -> Optional[str]:
    for pattern, repl in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return repl(match) if callable(repl) else match.expand(repl)
    return None


def _layout_name(naming: str, meta: Optional[Mapping]) -> str:
    if naming == 'huggingface':
        return LAYOUT_HF_UPERNET
    if naming == 'mmpretrain':
        return LAYOUT_OPENMMLAB
    if naming == 'official' and meta and 'mmcv_version' in meta:
        return LAYOUT_OFFICIAL
    if naming == 'official':
        return LAYOUT_OWN
    return f'{naming} backbone names'
