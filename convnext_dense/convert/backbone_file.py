"""Write converted backbone weights to disk (the logic behind ``tools/convert_checkpoint.py``):
this package's backbone file, or a Hugging Face ``ConvNextBackbone`` directory."""
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch

from ..atomic_files import atomic_path
from ..model.backbone import ConvNeXt
from ..weights.fit import infer_arch, plan_load
from ..weights.hf_backbone import save_hf_backbone
from ..weights.layouts import Conversion
from ..weights.loader import Checkpoint, read_checkpoint
from ..weights.sources import resolve_source

FORMATS = ('safetensors', 'pth')
_PTH_SUFFIXES = ('.pth', '.pt', '.bin')


def save_backbone_weights(state_dict: Dict[str, torch.Tensor], dst: Union[str, os.PathLike],
                          fmt: str = 'safetensors', metadata: Optional[Dict[str, str]] = None
                          ) -> Path:
    """Save a backbone-layout state dict as safetensors or as a plain (weights-only) ``.pth``.

    The file is written next to ``dst`` first and then renamed, so ``dst`` is never half-written.

    Raises:
        ValueError: ``fmt`` is not one of ``FORMATS``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format '{fmt}' is not one of {FORMATS}")
    dst = Path(dst)
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    with atomic_path(dst) as tmp:
        if fmt == 'safetensors':
            from safetensors.torch import save_file
            save_file(tensors, str(tmp), metadata=dict(metadata or {}, format='pt'))
        else:
            torch.save(tensors, tmp)
    return dst


def format_from_suffix(dst: Union[str, os.PathLike]) -> str:
    """``'pth'`` for ``.pth`` / ``.pt`` / ``.bin`` names, else ``'safetensors'``."""
    return 'pth' if Path(dst).suffix in _PTH_SUFFIXES else 'safetensors'


def check_format_matches_suffix(dst: Union[str, os.PathLike], fmt: str) -> None:
    """Refuse a ``.safetensors`` name for a pickle, or a ``.pth`` / ``.pt`` / ``.bin`` name for
    safetensors: other tools pick the reader by the name.

    Raises:
        ValueError: the name says the other format.
    """
    suffix = Path(dst).suffix
    named = {'.safetensors': 'safetensors', **{s: 'pth' for s in _PTH_SUFFIXES}}.get(suffix)
    if named not in (None, fmt):
        raise ValueError(f"format '{fmt}' does not match the name {dst} (a {suffix} file is "
                         f"{named}): drop --format or give the file a matching suffix")


def check_not_source(src: Checkpoint, dst: Union[str, os.PathLike], folder: bool = False
                     ) -> None:
    """Refuse to write a conversion over the checkpoint it is read from.

    A local source counts with what it resolves to: a Hugging Face directory is its folder and
    its weights file. ``folder``: ``dst`` is an output folder, which replaces everything in it.

    Raises:
        ValueError: ``dst`` is the source's file, or (``folder``) holds the source.
    """
    dst = Path(dst)
    for path in _local_source_paths(src):
        if _same_path(path, dst):
            raise ValueError(f'{dst} is the checkpoint being converted: write the result '
                             'elsewhere (nothing was written)')
        if folder and dst.is_dir() and dst.resolve() in path.resolve().parents:
            raise ValueError(f'{dst} holds the checkpoint being converted ({path}): writing the '
                             'output folder there would delete it; write the result elsewhere '
                             '(nothing was written)')


def _local_source_paths(src: Checkpoint) -> List[Path]:
    """The local file or folder ``src`` names and, for a Hugging Face folder, its weights file."""
    if not isinstance(src, (str, os.PathLike)) or os.fspath(src).startswith(('http://',
                                                                              'https://')):
        return []
    path = Path(os.fspath(src)).expanduser()
    if not path.is_dir():
        return [path] if path.is_file() else []
    try:
        return [path, resolve_source(path)]
    except FileNotFoundError:  # not a model folder: reading it fails with its own message
        return [path]


def _same_path(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and os.path.samefile(a, b)


def convert_file(src: Checkpoint, dst: Union[str, os.PathLike], fmt: Optional[str] = None,
                 prefix: Optional[str] = None) -> Tuple[Conversion, str]:
    """Convert a checkpoint from any source and layout to a backbone-layout file.

    The result is checked strictly against a backbone of the architecture the weights hold, so a
    file with missing or stray tensors is refused rather than written.

    Args:
        src: File, URL, Hugging Face directory or hub id (see :func:`resolve_source`).
        dst: Output file.
        fmt: ``'safetensors'`` or ``'pth'``; None picks from ``dst``'s suffix (safetensors unless
            ``.pth`` / ``.pt`` / ``.bin``).
        prefix: Keys to take, e.g. ``'backbone.'``; None detects it.

    Returns:
        The conversion and a description of where it came from.

    Raises:
        ValueError: unknown format or one that contradicts ``dst``'s suffix, ``dst`` is the
            source file, or weights that are not a complete ConvNeXt backbone.
    """
    fmt = format_from_suffix(dst) if fmt is None else fmt
    if fmt not in FORMATS:
        raise ValueError(f"format '{fmt}' is not one of {FORMATS}")
    check_format_matches_suffix(dst, fmt)
    check_not_source(src, dst)
    conversion, where = read_checkpoint(src, prefix)
    weights = conversion.state_dict
    depths, channels = infer_arch(weights)
    if None in depths or None in channels:
        raise ValueError(f'{where} holds only part of a ConvNeXt (depths {depths}, channels '
                         f'{channels}); nothing was written')
    stem = weights.get('downsample_layers.0.0.weight')
    in_channels = int(stem.shape[1]) if stem is not None else 3
    norms = sorted({int(k[4]) for k in weights if k.startswith('norm')})
    backbone = ConvNeXt(arch=dict(depths=depths, channels=channels), in_channels=in_channels,
                        out_indices=tuple(norms) or (0, 1, 2, 3),
                        layer_scale_init_value=1e-6 if any(k.endswith('.gamma') for k in weights)
                        else 0)
    plan_load({k: v.shape for k, v in backbone.state_dict().items()}, weights,
              (depths, channels), conversion.unmapped, source=f'{where} ({conversion.layout})')
    metadata = {'convnext_dense': 'backbone', 'source_layout': conversion.layout,
                'arch': json.dumps(dict(depths=depths, channels=channels))}
    save_backbone_weights(weights, dst, fmt, metadata)
    return conversion, where


def convert_to_hf_backbone(src: Checkpoint, dst: Union[str, os.PathLike],
                           prefix: Optional[str] = None
                           ) -> Tuple[Conversion, str, Dict[str, str]]:
    """Convert a checkpoint from any source and layout to a Hugging Face ``ConvNextBackbone``.

    Args:
        src: File, URL, Hugging Face directory or hub id (see :func:`resolve_source`): a dense
            backbone, or a whole detector / segmenter (its ``backbone.*``).
        dst: Output directory (``ConvNextBackbone.from_pretrained(dst)`` loads it).
        prefix: Keys to take, e.g. ``'backbone.'``; None detects it.

    Returns:
        The conversion, a description of where it came from, and ``{hf key: backbone key}``.

    Raises:
        ValueError: ``dst`` holds the source; keys no rule maps, or weights that are not a whole
            dense ConvNeXt backbone
            (see :func:`~convnext_dense.weights.hf_backbone.save_hf_backbone`); nothing is
            written then.
    """
    check_not_source(src, dst, folder=True)
    conversion, where = read_checkpoint(src, prefix)
    if conversion.unmapped:
        raise ValueError(f'{where} ({conversion.layout}): {len(conversion.unmapped)} keys are not '
                         f'ConvNeXt backbone weights: {list(conversion.unmapped)[:8]}; nothing was '
                         'written')
    try:
        _, mapped = save_hf_backbone(conversion.state_dict, dst)
    except ValueError as err:
        raise type(err)(f'{where} ({conversion.layout}): {err}; nothing was written') from None
    return conversion, where, mapped
