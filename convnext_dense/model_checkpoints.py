"""The package's one process-wide switch: safe, atomic, strict checkpoints of every layout.

``import convnext_dense`` only registers modules. Importing this module (or calling
:func:`enable`; idempotent) changes, for the whole process:

* **torch's safe globals:** ``torch.load(weights_only=True)`` may read the few non-tensor objects
  mmengine writes into training checkpoints (its log buffers), so ``--resume`` works on torch >= 2.6
  (:func:`convnext_dense.runtime.checkpoint_safety.allow_mmengine_checkpoints`).
* **mmengine's loader for local paths** (``CheckpointLoader`` scheme ``''``, behind ``load_from``,
  ``init_detector``, ``init_model`` and ``Pretrained`` init): files are read weights-only (a file
  that would run code is refused, nothing of it runs), and a Hugging Face model directory or hub id
  (``'openmmlab/upernet-convnext-tiny'``) is read as a whole mmdet / mmseg checkpoint: keys renamed
  (:mod:`convnext_dense.weights.model_layouts`), classes from ``config.json``'s ``id2label`` in
  ``meta['dataset_meta']``.
* **mmengine's ``'local'`` file backend:** every file it writes (checkpoints, ``last_checkpoint``)
  goes to a temporary name first, then is renamed.
* **mmengine's ``CheckpointHook``:** the checkpoint ``max_keep_ckpts`` drops is removed after the
  new one is saved, not before, so a run killed while saving still has one to resume from.
* **mmengine's ``_load_checkpoint_to_model``** (behind ``load_checkpoint``, hence
  ``init_detector``, ``init_model`` and the mmengine / mmdet / mmseg inferencers): a model that
  holds a ``convnext_dense.ConvNeXt`` is loaded the way ``tools/test.py`` loads it, keys of any
  known layout renamed, every parameter and buffer from the checkpoint or nothing loaded and an
  error listing what does not fit
  (:func:`convnext_dense.weights.model_loader.load_model_checkpoint`).
  Other models load as mmengine loads them.
* **mmengine's ``Runner.load_checkpoint``** (``load_from`` and ``--resume`` in mmdet's and
  mmseg's own ``tools/train.py`` / ``test.py``): the same for such a model, by the rule of the
  run: in ``train()``, which builds its loop before loading, ``load_from`` is a fine-tuning start
  (the whole backbone from the checkpoint; neck and head misfits keep their init and are listed);
  in ``test()`` / ``val()`` everything must fit.

The package's configs list it in ``custom_imports``, and ``tools/`` turn it on::

    custom_imports = dict(imports=['convnext_dense', 'convnext_dense.model_checkpoints'],
                          allow_failed_imports=False)
"""
import functools
import os
import re
import sys
from pathlib import Path

from mmengine.fileio import register_backend
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop, CheckpointLoader, Runner
from mmengine.runner import checkpoint as mmengine_checkpoint
from torch import nn

from .model.backbone import ConvNeXt
from .runtime.checkpoint_safety import (AtomicLocalBackend, allow_mmengine_checkpoints,
                                        load_local_checkpoint,
                                        remove_old_checkpoints_after_saving)
from .weights.model_loader import (converted_checkpoint, load_model_checkpoint,
                                    read_model_checkpoint)

_HUB_ID = re.compile(r'[A-Za-z0-9][\w.-]*/[\w.-]+')
# Modules that import mmengine's ``_load_checkpoint_to_model`` by name; those imported after
# :func:`enable` get the strict one from mmengine itself.
_CONSUMERS = ('mmengine.infer.infer', 'mmdet.apis.det_inferencer', 'mmseg.apis.mmseg_inferencer')


def load_local_or_hf(filename: str, map_location=None) -> dict:
    """mmengine loader for paths: a file weights-only; a HF directory or hub id as a whole model."""
    path = Path(os.path.expanduser(filename))
    if path.is_file() or not (path.is_dir() or _HUB_ID.fullmatch(filename)):
        return load_local_checkpoint(filename, map_location)
    return converted_checkpoint(read_model_checkpoint(filename))


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


def _strict_runner_load(load_checkpoint):
    """Wrap ``Runner.load_checkpoint``: strict, layout-aware for our models, by the run's rule."""
    if getattr(load_checkpoint, 'loads_convnext_strictly', False):
        return load_checkpoint

    @functools.wraps(load_checkpoint)
    def load(self, filename, map_location='cpu', strict=False, revise_keys=None):
        model = self.model.module if is_model_wrapper(self.model) else self.model
        if not _holds_convnext(model):
            kwargs = {} if revise_keys is None else {'revise_keys': revise_keys}
            return load_checkpoint(self, filename, map_location, strict, **kwargs)
        checkpoint = mmengine_checkpoint._load_checkpoint(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        purpose = 'finetune' if isinstance(self._train_loop, BaseLoop) else 'evaluate'
        load_model_checkpoint(model, checkpoint, purpose)
        self._has_loaded = True
        return checkpoint

    load.loads_convnext_strictly = True
    return load


def enable() -> None:
    """Turn the switch on (idempotent): see the module docstring for what it changes."""
    allow_mmengine_checkpoints()
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_or_hf, force=True)
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
    CheckpointHook._save_checkpoint_with_step = remove_old_checkpoints_after_saving(
        CheckpointHook._save_checkpoint_with_step)
    Runner.load_checkpoint = _strict_runner_load(Runner.load_checkpoint)
    strict = _strict_for_convnext_models(mmengine_checkpoint._load_checkpoint_to_model)
    mmengine_checkpoint._load_checkpoint_to_model = strict
    for name in _CONSUMERS:
        if hasattr(sys.modules.get(name), '_load_checkpoint_to_model'):
            sys.modules[name]._load_checkpoint_to_model = strict


def enabled() -> bool:
    """Whether :func:`enable` is in effect."""
    return (CheckpointLoader._schemes.get('') is load_local_or_hf and getattr(
        mmengine_checkpoint._load_checkpoint_to_model, 'loads_convnext_strictly', False)
        and getattr(CheckpointHook._save_checkpoint_with_step, 'removes_after_saving', False)
        and getattr(Runner.load_checkpoint, 'loads_convnext_strictly', False))


enable()
