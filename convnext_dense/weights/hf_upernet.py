"""Hand an mmseg UperNet-ConvNeXt to Hugging Face transformers, and take one back.

:func:`save_hf_upernet` writes a directory that ``UperNetForSemanticSegmentation.from_pretrained``
loads: ``config.json`` (``UperNetConfig`` with a ``ConvNextConfig`` backbone, read off the tensor
shapes; ``id2label`` from the dataset meta) and ``model.safetensors``. :func:`save_mmseg_checkpoint`
writes any supported whole-model checkpoint (a Hugging Face directory included) as an mmseg
checkpoint in this package's names, with the classes in ``meta['dataset_meta']``.
"""
import ast
import json
import os
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..atomic_files import atomic_path
from .errors import CheckpointError, import_transformers
from .fit import infer_arch
from .hf_backbone import hf_convnext_config, output_norm_stages, save_filled
from .model_layouts import BACKBONE, to_hf_upernet

PathLike = Union[str, os.PathLike]
# transformers' UperNetFCNHead reads the third feature map with 3x3 convolutions.
HF_AUX_IN_INDEX = 2
HF_AUX_KERNEL = 3
# UperNetConfig's and mmseg's UPerHead's default pyramid pooling scales.
DEFAULT_POOL_SCALES = (1, 2, 3, 6)


def hf_upernet_meta(config_json: Path, state_dict: Mapping[str, torch.Tensor]
                    ) -> Dict[str, object]:
    """What a Hugging Face UperNet's ``config.json`` adds to its tensors, checked against them.

    Returns:
        ``{'dataset_meta': {'classes'}, 'pool_scales'}`` (the tensors hold only the number of
        pooling branches); empty without a ``config.json``.

    Raises:
        CheckpointError: ``config.json`` is not JSON, or says another class count, backbone
            depths or widths, or number of pooling scales than the tensors (this package's
            names) hold.
    """
    if not config_json.is_file():
        return {}
    try:
        config = json.loads(config_json.read_text())
        id2label = config.get('id2label') or {}
        classes = tuple(id2label[k] for k in sorted(id2label, key=int))
        backbone = config.get('backbone_config') or {}
        pool_scales = tuple(int(s) for s in config.get('pool_scales') or DEFAULT_POOL_SCALES)
    except (ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f'{config_json} is not a Hugging Face UperNet config ({err})'
                              ) from None
    said_and_held = []
    if classes and 'decode_head.conv_seg.weight' in state_dict:
        said_and_held.append(('classes (id2label)', len(classes),
                              int(state_dict['decode_head.conv_seg.weight'].shape[0])))
    depths, channels = infer_arch(
        {k[len(BACKBONE):]: v for k, v in state_dict.items() if k.startswith(BACKBONE)})
    for name, held in (('depths', depths), ('hidden_sizes', channels)):
        if backbone.get(name) is not None:
            said_and_held.append((f'backbone_config.{name}', tuple(backbone[name]), tuple(held)))
    said_and_held.append(('pool_scales branches', len(pool_scales), _count(
        state_dict, r'decode_head\.psp_modules\.(\d+)\.1\.conv\.weight')))
    for name, said, held in said_and_held:
        if said != held:
            raise CheckpointError(f'{config_json} says {name} {said}, but the weights beside it '
                                  f'hold {held}: the folder mixes two models')
    meta: Dict[str, object] = {'pool_scales': pool_scales}
    if classes:
        meta['dataset_meta'] = {'classes': classes}
    return meta


def saved_pool_scales(meta: Mapping) -> Optional[Tuple[int, ...]]:
    """The decode head's pooling scales a checkpoint's ``meta`` records, if any.

    From ``meta['pool_scales']`` (a Hugging Face ``config.json``, or :func:`save_mmseg_checkpoint`)
    or the config mmengine stores in ``meta['cfg']``, read as literals (never executed).
    """
    if meta.get('pool_scales'):
        return tuple(int(s) for s in meta['pool_scales'])
    text = meta.get('cfg')
    if not isinstance(text, str):
        return None
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == 'decode_head':
            for item in ast.walk(node.value):
                if isinstance(item, ast.keyword) and item.arg == 'pool_scales':
                    try:
                        return tuple(int(s) for s in ast.literal_eval(item.value))
                    except (ValueError, TypeError):
                        return None
    return None


def classes_from_meta(meta: Mapping) -> Optional[Tuple[str, ...]]:
    """Class names of a checkpoint's meta: mmengine's ``dataset_meta`` or mmcv 1.x's ``CLASSES``."""
    dataset_meta = meta.get('dataset_meta') or {}
    classes = dataset_meta.get('classes') or meta.get('CLASSES')
    return tuple(classes) if classes else None


def hf_upernet_config(state_dict: Mapping[str, torch.Tensor],
                      classes: Optional[Sequence[str]] = None,
                      pool_scales: Sequence[int] = DEFAULT_POOL_SCALES):
    """The ``UperNetConfig`` of an mmseg UperNet-ConvNeXt state dict (this package's names).

    Args:
        state_dict: Whole-model tensors (``backbone.*``, ``decode_head.*``, ``auxiliary_head.*``).
        classes: Class names for ``id2label``; None gives ``LABEL_i``.
        pool_scales: The decode head's PPM scales (the tensors hold only their number).

    Raises:
        ValueError: something Hugging Face's UperNet cannot express (another head layout, an
            auxiliary head on another stage, a backbone without four outputs, a class count that
            does not match ``classes``).
    """
    UperNetConfig = import_transformers().UperNetConfig
    _require_decode_head(state_dict, 'hf-backbone')
    backbone = {k[len(BACKBONE):]: v for k, v in state_dict.items() if k.startswith(BACKBONE)}
    depths, channels = infer_arch(backbone)
    norms = list(output_norm_stages(backbone))
    if None in depths or None in channels or norms != [0, 1, 2, 3]:
        raise ValueError(f'Hugging Face UperNet needs a ConvNeXt with four outputs; the checkpoint '
                         f'holds depths {depths}, channels {channels}, output norms {norms}')
    psp = _count(state_dict, r'decode_head\.psp_modules\.(\d+)\.1\.conv\.weight')
    if psp != len(pool_scales):
        raise ValueError(f'the decode head has {psp} pyramid-pooling branches but pool_scales is '
                         f'{tuple(pool_scales)}; pass the scales the model was built with')
    num_labels = int(_need(state_dict, 'decode_head.conv_seg.weight').shape[0])
    if classes is not None and len(classes) != num_labels:
        raise ValueError(f'{len(classes)} class names for a head with {num_labels} outputs')
    labels = list(classes) if classes else [f'LABEL_{i}' for i in range(num_labels)]
    backbone_config = hf_convnext_config(backbone)
    aux = _auxiliary_settings(state_dict, channels)
    return UperNetConfig(
        backbone_config=backbone_config,
        hidden_size=int(_need(state_dict, 'decode_head.bottleneck.conv.weight').shape[0]),
        pool_scales=list(pool_scales), **aux,
        id2label={i: label for i, label in enumerate(labels)},
        label2id={label: i for i, label in enumerate(labels)})


def _auxiliary_settings(state_dict, channels) -> Dict[str, object]:
    convs = _count(state_dict, r'auxiliary_head\.convs\.(\d+)\.conv\.weight')
    if 'auxiliary_head.conv_seg.weight' not in state_dict:
        return dict(use_auxiliary_head=False)
    first = _need(state_dict, 'auxiliary_head.convs.0.conv.weight')
    if first.shape[1] != channels[HF_AUX_IN_INDEX] or first.shape[-1] != HF_AUX_KERNEL:
        raise ValueError(
            f'the auxiliary head reads {first.shape[1]} channels with {first.shape[-1]}x'
            f'{first.shape[-1]} convolutions; Hugging Face\'s reads stage {HF_AUX_IN_INDEX} '
            f'({channels[HF_AUX_IN_INDEX]} channels) with {HF_AUX_KERNEL}x{HF_AUX_KERNEL}')
    return dict(use_auxiliary_head=True, auxiliary_in_channels=int(first.shape[1]),
                auxiliary_channels=int(first.shape[0]), auxiliary_num_convs=convs,
                auxiliary_concat_input='auxiliary_head.conv_cat.conv.weight' in state_dict)


def save_hf_upernet(state_dict: Mapping[str, torch.Tensor], dst: PathLike,
                    classes: Optional[Sequence[str]] = None,
                    pool_scales: Sequence[int] = DEFAULT_POOL_SCALES
                    ) -> Tuple[Path, Dict[str, str]]:
    """Write a Hugging Face ``UperNetForSemanticSegmentation`` directory.

    The tensors are loaded strictly into a transformers model built from
    :func:`hf_upernet_config`, which saves itself into a new folder that then replaces ``dst``
    (an existing ``dst`` is kept if anything fails), so the directory is what
    ``from_pretrained`` reads.

    Returns:
        The directory and ``{hf key: mmseg key}``.

    Raises:
        ValueError: see :func:`hf_upernet_config`; or tensors that do not fill the HF model.
    """
    UperNetForSemanticSegmentation = import_transformers().UperNetForSemanticSegmentation
    _require_decode_head(state_dict, 'hf-backbone')
    hf_state, mapped = to_hf_upernet(state_dict)
    config = hf_upernet_config({mapped[k]: v for k, v in hf_state.items()}, classes, pool_scales)
    dst = save_filled(UperNetForSemanticSegmentation(config), hf_state, dst,
                      "Hugging Face's UperNet")
    return dst, mapped


def save_mmseg_checkpoint(state_dict: Mapping[str, torch.Tensor], dst: PathLike,
                          classes: Optional[Sequence[str]] = None, source: str = '',
                          pool_scales: Optional[Sequence[int]] = None) -> Path:
    """Write ``{'state_dict', 'meta': {'dataset_meta': {'classes'}, 'pool_scales'}}`` with
    ``torch.save`` (loading it into a model whose decode head pools at other scales is refused).

    The file is written beside ``dst`` first and then renamed, so ``dst`` is never half-written.

    Raises:
        ValueError: the tensors hold no decode head (not a segmenter), or ``dst`` is not a
            ``.pth`` / ``.pt`` name (mmseg checkpoints are ``torch.save`` files).
    """
    _require_decode_head(state_dict, 'backbone')
    if Path(dst).suffix not in ('.pth', '.pt'):
        raise ValueError(f'{dst}: an mmseg checkpoint is a torch.save file; name it .pth')
    meta: Dict[str, object] = {'converted_from': source}
    if classes:
        meta['dataset_meta'] = {'classes': tuple(classes)}
    if pool_scales:
        meta['pool_scales'] = tuple(int(s) for s in pool_scales)
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        torch.save({'state_dict': {k: v.contiguous() for k, v in state_dict.items()},
                    'meta': meta}, tmp)
    return dst


def _require_decode_head(state_dict: Mapping[str, object], backbone_target: str) -> None:
    if not any(k.startswith('decode_head.') for k in state_dict):
        raise ValueError('not a segmenter checkpoint: it has no decode_head tensors (the '
                         f'backbone alone goes --to {backbone_target})')


def _count(state_dict: Mapping[str, object], pattern: str) -> int:
    return len({m[1] for k in state_dict for m in [re.fullmatch(pattern, k)] if m})


def _need(state_dict: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state_dict:
        raise ValueError(f'not an mmseg UperNet checkpoint: it has no {key!r}')
    return state_dict[key]


def mapping_lines(mapped: Mapping[str, str], limit: int = 0) -> List[str]:
    """``'source -> target'`` lines (all of them when ``limit`` is 0)."""
    items = list(mapped.items())
    shown = items if not limit else items[:limit]
    lines = [f'  {source} -> {target}' for target, source in shown]
    if limit and len(items) > limit:
        lines.append(f'  ... and {len(items) - limit} more')
    return lines
