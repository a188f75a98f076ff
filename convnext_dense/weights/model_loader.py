"""Load a whole detector / segmenter checkpoint of any layout and source, strictly.

Two purposes, two rules:

* ``'evaluate'`` (``tools/test.py``): every parameter and buffer of the model must come from the
  checkpoint with the right shape, or nothing is loaded and the error lists what does not fit.
* ``'finetune'`` (``load_from`` in training): the backbone must be filled completely (same
  error); neck and head tensors that are missing or mis-shaped in the checkpoint — the usual case
  for a dataset with another number of classes — keep their initial values and are listed in one
  log block, as are checkpoint keys the model does not have.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

from mmengine.logging import print_log
from torch import nn

from .errors import CheckpointError
from .hf_upernet import hf_upernet_meta, saved_pool_scales
from .key_report import KeyMismatch, compare_keys
from .layouts import OUTPUT_NORM, unwrap_state_dict
from .model_layouts import BACKBONE, LAYOUT_HF_UPERNET, convert_model_state_dict
from .safe_load import load_state_file
from .sources import resolve_source

PURPOSES = ('evaluate', 'finetune', 'resume')
# ``meta`` key of a checkpoint dict already read and renamed (:func:`converted_checkpoint`): where
# it was read from, in which layout and what was renamed, so that loading the dict says so.
READ_FROM = 'convnext_dense_read_from'
# BatchNorm's batch counter does not change what a model computes; old files may lack it.
_IGNORED_MISSING = ('num_batches_tracked',)

Source = Union[str, os.PathLike, Mapping]


@dataclass(frozen=True)
class ModelCheckpoint:
    """A whole-model checkpoint, read and renamed to this package's names.

    Attributes:
        state_dict: Model tensors under mmdet / mmseg + official backbone names.
        meta: The checkpoint's ``meta`` (for Hugging Face directories: ``dataset_meta`` with the
            classes of ``config.json``'s ``id2label``).
        layout: The detected layout.
        where: Where it was read from, for messages.
        renamed: New key -> original key for the keys that changed name.
    """

    state_dict: Dict[str, object]
    meta: Dict[str, object]
    layout: str
    where: str
    renamed: Dict[str, str] = field(default_factory=dict)


def read_model_checkpoint(source: Source) -> ModelCheckpoint:
    """Resolve (file, URL, Hugging Face directory or hub id), load safely and rename a checkpoint.

    Raises:
        FileNotFoundError: the source cannot be found or fetched (the message says where to put it).
        ValueError: unsafe or corrupt file.
    """
    if isinstance(source, Mapping):
        obj, where, path = source, 'the given checkpoint', None
    else:
        path = resolve_source(source)
        where = f"checkpoint '{os.fspath(source)}'"
        if str(path) != os.fspath(source):
            where += f' ({path})'
        obj = load_state_file(path)
    state_dict, _ = unwrap_state_dict(obj)
    meta = dict(obj['meta']) if isinstance(obj.get('meta'), Mapping) else {}
    conversion = convert_model_state_dict(state_dict, meta)
    if path is not None and conversion.layout == LAYOUT_HF_UPERNET:
        config_json = path.parent / 'config.json'
        if not config_json.is_file() and not Path(os.fspath(source)).exists():
            config_json = _hub_config(os.fspath(source)) or config_json
        for key, value in hf_upernet_meta(config_json, conversion.state_dict).items():
            meta.setdefault(key, value)
    read_from = meta.pop(READ_FROM, None)
    if path is None and isinstance(read_from, Mapping):  # read and renamed before
        return ModelCheckpoint(conversion.state_dict, meta, read_from['layout'],
                               read_from['where'], dict(read_from['renamed']))
    return ModelCheckpoint(conversion.state_dict, meta, conversion.layout, where,
                           conversion.renamed)


def converted_checkpoint(checkpoint: ModelCheckpoint) -> Dict[str, object]:
    """``{'state_dict', 'meta'}`` of a checkpoint read by :func:`read_model_checkpoint`, for
    mmengine's loaders: loading it again reports the original source and layout."""
    read_from = {'where': checkpoint.where, 'layout': checkpoint.layout,
                 'renamed': dict(checkpoint.renamed)}
    return {'state_dict': checkpoint.state_dict, 'meta': {**checkpoint.meta, READ_FROM: read_from}}


def _hub_config(repo_id: str) -> Optional[Path]:
    """The hub repository's config.json (for its labels), or None if it cannot be had."""
    try:
        from huggingface_hub import hf_hub_download
        return Path(hf_hub_download(repo_id, 'config.json'))
    except Exception:  # noqa: BLE001  (labels are optional; the weights were found)
        return None


def load_model_checkpoint(model: nn.Module, source: Source, purpose: str = 'evaluate'
                          ) -> ModelCheckpoint:
    """Load a whole-model checkpoint into ``model`` under the rules of ``purpose``.

    Args:
        model: The detector / segmenter (not a DDP wrapper).
        source: File, URL, Hugging Face directory, hub id, or a checkpoint dict.
        purpose: ``'evaluate'`` or ``'resume'`` (everything must fit) or ``'finetune'`` (the
            backbone must fit; neck / head misfits keep their init and are logged).

    Returns:
        The checkpoint that was read.

    Raises:
        ValueError: unknown purpose; the checkpoint does not fit (message names the layout and
            lists missing / unexpected / mis-shaped keys by module); unsafe or corrupt file.
        FileNotFoundError: the source cannot be found or fetched.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose '{purpose}' is not one of {PURPOSES}")
    checkpoint = read_model_checkpoint(source)
    if purpose != 'finetune':  # fine-tuning may change the pooling and keep the convolutions
        _check_pool_scales(model, checkpoint)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    mismatch = compare_keys(expected, checkpoint.state_dict, _IGNORED_MISSING)
    blocking = _backbone_part(mismatch) if purpose == 'finetune' else mismatch
    if blocking:
        raise CheckpointError(_refusal(checkpoint, blocking, purpose))
    weights = {k: v for k, v in checkpoint.state_dict.items()
               if k in expected and k not in {key for key, _, _ in mismatch.misshaped}}
    model.load_state_dict(weights, strict=False)
    summary = (f'Loaded {checkpoint.where} ({checkpoint.layout} layout) for {purpose}: '
               f'{len(weights)} of {len(expected)} model tensors')
    if checkpoint.renamed:
        summary += f', {len(checkpoint.renamed)} renamed from the checkpoint\'s names'
    if mismatch:
        summary += ('.\nNot from the checkpoint (neck / head tensors keep their initial values; '
                    'checkpoint keys the model has no place for are ignored):\n'
                    + '\n'.join(mismatch.lines()))
    print_log(summary, logger='current')
    return checkpoint


def _check_pool_scales(model: nn.Module, checkpoint: ModelCheckpoint) -> None:
    """Refuse a decode head that pools at other scales than the checkpoint's was trained with:
    the tensors hold only the number of branches, so the load would fit and predict wrongly."""
    saved = saved_pool_scales(checkpoint.meta)
    head = getattr(model, 'decode_head', None)
    # UPerHead keeps them on its PPM (psp_modules); PSPHead on itself.
    built = (getattr(head, 'pool_scales', None)
             or getattr(getattr(head, 'psp_modules', None), 'pool_scales', None))
    if saved is None or built is None or tuple(built) == saved:
        return
    raise CheckpointError(f'{checkpoint.where} was trained with decode-head pool_scales {saved}, '
                          f'but the model\'s decode_head.pool_scales is {tuple(built)}: set '
                          f'model.decode_head.pool_scales={saved} in the config')


def _backbone_part(mismatch: KeyMismatch) -> KeyMismatch:
    """What keeps a fine-tuning load from filling the whole backbone.

    The output norms of stages the model does not return (a checkpoint trained with other
    ``out_indices``) are left out: like the heads' leftovers, they are logged and ignored.
    """
    def ours(key: str) -> bool:
        return key.startswith(BACKBONE)

    def needed(key: str) -> bool:
        return ours(key) and not OUTPUT_NORM.fullmatch(key[len(BACKBONE):])
    return KeyMismatch(tuple(filter(ours, mismatch.missing)),
                       tuple(filter(needed, mismatch.unexpected)),
                       tuple(m for m in mismatch.misshaped if ours(m[0])))


def _refusal(checkpoint: ModelCheckpoint, mismatch: KeyMismatch, purpose: str) -> str:
    rule = {'evaluate': 'to evaluate, every parameter and buffer of the model must come from '
                        'the checkpoint',
            'finetune': 'to fine-tune, the whole backbone must come from the checkpoint',
            'resume': 'to resume, the checkpoint must be of this very model: --resume continues '
                      'a run of the same config; --cfg-options load_from=PATH starts a new one '
                      'from its weights'}[purpose]
    lines = [f'{checkpoint.where} ({checkpoint.layout} layout) does not fit this model ({rule}); '
             'nothing was loaded:'] + mismatch.lines()
    if mismatch.missing and not any(k.startswith(BACKBONE) for k in checkpoint.state_dict):
        lines.append('  the checkpoint has no backbone.* keys: a backbone-only (classification) '
                     "checkpoint belongs in model.backbone.init_cfg=dict(type='Pretrained', "
                     'checkpoint=...)')
    return '\n'.join(lines)
