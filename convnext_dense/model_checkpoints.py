"""Opt-in switch: mmengine's checkpoint loading reads whole models of every layout, strictly.

Importing this module (or calling :func:`enable`) changes two things in the process:

* mmengine's loader for local paths (``CheckpointLoader`` scheme ``''``, the one behind
  ``load_from``, ``init_detector``, ``init_model`` and ``Pretrained`` init) also accepts a Hugging
  Face model directory or hub id (``'openmmlab/upernet-convnext-tiny'``) and returns it as an
  mmdet / mmseg checkpoint: keys renamed (:mod:`convnext_dense.weights.model_layouts`), classes
  from ``config.json``'s ``id2label`` in ``meta['dataset_meta']``. Files are read as before,
  weights-only (:func:`convnext_dense.resume_safety.load_local_checkpoint`).
* mmengine's ``_load_checkpoint_to_model`` (behind ``load_checkpoint``, hence ``init_detector``,
  ``init_model`` and mmengine / mmdet / mmseg inferencers) loads a checkpoint into a model that
  holds a ``convnext_dense.ConvNeXt`` the way ``tools/test.py`` does: keys of any known layout
  renamed, and every parameter and buffer must come from the checkpoint, or nothing is loaded and
  the error lists what does not fit (:func:`convnext_dense.weights.model_loader.load_model_checkpoint`).
  Other models load as mmengine loads them.

Nothing happens on ``import convnext_dense`` alone; the package's configs list this module in
``custom_imports``::

    custom_imports = dict(imports=['convnext_dense', 'convnext_dense.model_checkpoints'],
                          allow_failed_imports=False)

``tools/train.py`` and ``tools/test.py`` do not need it: their Runner reads every source itself
(:class:`convnext_dense.checkpoint_runner.StrictLoadRunner`).
"""
import functools
import os
import re
import sys
from pathlib import Path

from mmengine.runner import CheckpointLoader
from mmengine.runner import checkpoint as mmengine_checkpoint
from torch import nn

from .backbone import ConvNeXt
from .resume_safety import load_local_checkpoint
from .weights.model_loader import load_model_checkpoint, read_model_checkpoint

_HUB_ID = re.compile(r'[A-Za-z0-9][\w.-]*/[\w.-]+')
# Modules that import mmengine's ``_load_checkpoint_to_model`` by name; those imported after
# :func:`enable` get the strict one from mmengine itself.
_CONSUMERS = ('mmengine.infer.infer', 'mmdet.apis.det_inferencer', 'mmseg.apis.mmseg_inferencer')


def load_local_or_hf(filename: str, map_location=None) -> dict:
    """mmengine loader for paths: a file as before; a HF directory or hub id as a whole model."""
    path = Path(os.path.expanduser(filename))
    if path.is_file() or not (path.is_dir() or _HUB_ID.fullmatch(filename)):
        return load_local_checkpoint(filename, map_location)
    checkpoint = read_model_checkpoint(filename)
    return {'state_dict': checkpoint.state_dict, 'meta': checkpoint.meta}


def _holds_convnext(model: nn.Module) -> bool:
    return not isinstance(model, ConvNeXt) and any(
        isinstance(module, ConvNeXt) for module in model.modules())


def _strict_for_convnext_models(load_to_model):
    """Wrap mmengine's ``_load_checkpoint_to_model``: strict, layout-aware for our models."""
    if getattr(load_to_model, 'loads_convnext_strictly', False):
        return load_to_model

    @functools.wraps(load_to_model)
    def load(model, checkpoint, *args, **kwargs):
        if not _holds_convnext(model):
            return load_to_model(model, checkpoint, *args, **kwargs)
        load_model_checkpoint(model, checkpoint, 'evaluate')
        return checkpoint

    load.loads_convnext_strictly = True
    return load


def enable() -> None:
    """Turn the switch on (idempotent): see the module docstring for what it changes."""
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_or_hf, force=True)
    strict = _strict_for_convnext_models(mmengine_checkpoint._load_checkpoint_to_model)
    mmengine_checkpoint._load_checkpoint_to_model = strict
    for name in _CONSUMERS:
        if hasattr(sys.modules.get(name), '_load_checkpoint_to_model'):
            sys.modules[name]._load_checkpoint_to_model = strict


def enabled() -> bool:
    """Whether :func:`enable` is in effect."""
    return (CheckpointLoader._schemes.get('') is load_local_or_hf and getattr(
        mmengine_checkpoint._load_checkpoint_to_model, 'loads_convnext_strictly', False))


enable()
