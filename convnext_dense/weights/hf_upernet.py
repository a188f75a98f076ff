"""Hand an mmseg UperNet-ConvNeXt to Hugging Face transformers, and take one back.

:func:`save_hf_upernet` writes a directory that ``UperNetForSemanticSegmentation.from_pretrained``
loads: ``config.json`` (``UperNetConfig`` with a ``ConvNextConfig`` backbone, read off the tensor
shapes; ``id2label`` from the dataset meta) and ``model.safetensors``. :func:`save_mmseg_checkpoint`
writes any supported whole-model checkpoint (a Hugging Face directory included) as an mmseg
checkpoint in this package's names, with the classes in ``meta['dataset_meta']``.
"""
import os
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..atomic_files import atomic_path
from .errors import import_transformers
from .fit import infer_arch
from .hf_backbone import hf_convnext_config, output_norm_stages, save_filled
from .model_layouts import BACKBONE, to_hf_upernet

PathLike = Union[str, os.PathLike]
# transformers' UperNetFCNHead reads the third feature map with 3x3 convolutions.
HF_AUX_IN_INDEX = 2
HF_AUX_KERNEL = 3


def classes_from_meta(meta: Mapping) -> Optional[Tuple[str, ...]]:
    """Class names of a checkpoint's meta: mmengine's ``dataset_meta`` or mmcv 1.x's ``CLASSES``."""
    dataset_meta = meta.get('dataset_meta') or {}
    classes = dataset_meta.get('classes') or meta.get('CLASSES')
    return tuple(classes) if classes else None


def hf_upernet_config(state_dict: Mapping[str, torch.Tensor],
                      classes: Optional[Sequence[str]] = None,
                      pool_scales: Sequence[int] = (1, 2, 3, 6)):
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
                    pool_scales: Sequence[int] = (1, 2, 3, 6)) -> Tuple[Path, Dict[str, str]]:
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
    hf_state, mapped = to_hf_upernet(state_dict)
    config = hf_upernet_config({mapped[k]: v for k, v in hf_state.items()}, classes, pool_scales)
    dst = save_filled(UperNetForSemanticSegmentation(config), hf_state, dst,
                      "Hugging Face's UperNet")
    return dst, mapped


def save_mmseg_checkpoint(state_dict: Mapping[str, torch.Tensor], dst: PathLike,
                          classes: Optional[Sequence[str]] = None,
                          source: str = '') -> Path:
    """Write ``{'state_dict', 'meta': {'dataset_meta': {'classes'}}}`` with ``torch.save``.

    The file is written beside ``dst`` first and then renamed, so ``dst`` is never half-written.
    """
    meta: Dict[str, object] = {'converted_from': source}
    if classes:
        meta['dataset_meta'] = {'classes': tuple(classes)}
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        torch.save({'state_dict': {k: v.contiguous() for k, v in state_dict.items()},
                    'meta': meta}, tmp)
    return dst


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
