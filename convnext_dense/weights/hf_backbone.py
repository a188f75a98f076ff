"""Hand a ConvNeXt dense backbone to Hugging Face transformers as a ``ConvNextBackbone``.

:func:`save_hf_backbone` writes a directory that ``ConvNextBackbone.from_pretrained`` loads:
``config.json`` (a ``ConvNextConfig`` read off the tensor shapes, ``out_features`` = the stages
with an output norm) and ``model.safetensors``. Its feature maps are this package's backbone
outputs, so the backbone of a detector or segmenter fine-tuned here can go into any transformers
model that takes a backbone. :func:`hf_convnext_config` is shared with the UperNet export.
"""
import json
import os
import re
from pathlib import Path
from typing import Dict, Mapping, Tuple, Union

import torch

from ..atomic_files import atomic_dir, check_replaceable
from .errors import import_transformers
from .fit import describe_arch, infer_arch
from .layouts import OUTPUT_NORM
from .model_layouts import to_hf_backbone

PathLike = Union[str, os.PathLike]
# What save_pretrained writes for these models: an earlier export in the output folder may be
# replaced, nothing else (not a preprocessor_config.json added beside it).
SAVED_MODEL_FILE = re.compile(
    r'config\.json|(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?')


def output_norm_stages(weights: Mapping[str, torch.Tensor]) -> Tuple[int, ...]:
    """The stages (0-3) whose output LayerNorm (``norm{i}.weight``) the weights hold."""
    return tuple(sorted(int(m[1]) for k in weights for m in [OUTPUT_NORM.fullmatch(k)]
                        if m and m[2] == 'weight'))


def hf_convnext_config(weights: Mapping[str, torch.Tensor]):
    """The ``ConvNextConfig`` of backbone-layout weights (official names, no prefix).

    Depths, widths, input channels and layer scale come from the tensors; ``out_features`` are
    the stages with an output norm (``norm0`` -> ``'stage1'``).

    Raises:
        ValueError: the weights hold part of a ConvNeXt (no stem, a stage missing), or no
            output norm (a classification checkpoint: transformers' ``ConvNextBackbone`` would
            get fresh norms).
    """
    ConvNextConfig = import_transformers().ConvNextConfig
    depths, channels = infer_arch(weights)
    if None in depths or None in channels:
        raise ValueError(f'the weights hold only part of a ConvNeXt: '
                         f'{describe_arch(depths, channels)}')
    stem = weights.get('downsample_layers.0.0.weight')
    if stem is None:
        raise ValueError('the weights hold no stem convolution (downsample_layers.0.0.weight)')
    stages = output_norm_stages(weights)
    if not stages:
        raise ValueError('the weights hold no per-stage output norm (norm0-norm3): a '
                         'classification checkpoint, whose Hugging Face form is ConvNextModel '
                         '(the hub\'s facebook/convnext-* directories); a ConvNextBackbone needs '
                         'the norms of a dense backbone, e.g. a detector\'s or segmenter\'s')
    return ConvNextConfig(
        num_channels=int(stem.shape[1]),
        depths=list(depths), hidden_sizes=list(channels),
        layer_scale_init_value=1e-6 if any(k.endswith('.gamma') for k in weights) else 0.0,
        out_features=[f'stage{stage + 1}' for stage in stages])


def save_filled(model: torch.nn.Module, hf_state: Mapping[str, torch.Tensor], dst: PathLike,
                what: str) -> Path:
    """Load ``hf_state`` into the transformers ``model`` (every parameter and buffer but
    BatchNorm's ``num_batches_tracked``, nothing else) and ``save_pretrained`` it into a new
    folder that then replaces ``dst`` (an existing ``dst`` is kept if anything fails).

    Raises:
        ValueError: tensors missing or left over; ``what`` names the model in the message.
        FileExistsError: ``dst`` holds files other than an earlier export of the same model
            class (nothing is written).
    """
    dst = Path(dst)
    check_replaceable(dst, SAVED_MODEL_FILE.fullmatch)
    _check_earlier_export_is(dst, type(model).__name__)
    result = model.load_state_dict(hf_state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith('num_batches_tracked')]
    if missing or result.unexpected_keys:
        raise ValueError(f'the weights do not fill {what}: missing {missing[:8]}, unexpected '
                         f'{result.unexpected_keys[:8]}')
    with atomic_dir(dst, SAVED_MODEL_FILE.fullmatch) as work:
        model.save_pretrained(work)
    return dst


def _check_earlier_export_is(dst: Path, architecture: str) -> None:
    """Refuse a non-empty ``dst`` whose ``config.json`` is not a saved ``architecture``: another
    Hugging Face model (the hub's ConvNextModel, a UperNet) is not ours to replace."""
    if not dst.is_dir() or not any(dst.iterdir()):
        return
    try:
        found = json.loads((dst / 'config.json').read_text()).get('architectures')
    except (OSError, ValueError, AttributeError):
        found = None
    if found != [architecture]:
        held = f'a Hugging Face {", ".join(found)}' if isinstance(found, list) and found else \
            'files without a config.json of one'
        raise FileExistsError(
            f'{dst} already holds {held}, not an earlier {architecture} export: writing there '
            'would delete it. Choose a new or empty folder, or one that holds only an earlier '
            'output of this kind.')


def save_hf_backbone(weights: Mapping[str, torch.Tensor],
                     dst: PathLike) -> Tuple[Path, Dict[str, str]]:
    """Write ``weights`` (backbone layout) as a Hugging Face ``ConvNextBackbone`` directory.

    The tensors are loaded strictly into a transformers model built from
    :func:`hf_convnext_config`, which saves itself into a new folder that then replaces ``dst``
    (an existing ``dst`` is kept if anything fails).

    Returns:
        The directory and ``{hf key: backbone key}``.

    Raises:
        ValueError: see :func:`hf_convnext_config` and
            :func:`~convnext_dense.weights.model_layouts.to_hf_backbone`; or tensors that do not
            fill the model.
    """
    ConvNextBackbone = import_transformers().ConvNextBackbone
    config = hf_convnext_config(weights)
    hf_state, mapped = to_hf_backbone(weights)
    dst = save_filled(ConvNextBackbone(config), hf_state, dst, "Hugging Face's ConvNextBackbone")
    return dst, mapped
