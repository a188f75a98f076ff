"""Opt-in switch: mmengine's checkpoint loader reads whole models from Hugging Face too.

Importing this module (or calling :func:`enable`) changes one thing in the process: mmengine's
loader for local paths (``CheckpointLoader`` scheme ``''``, the one behind ``load_from``,
``init_detector``, ``init_model`` and ``Pretrained`` init) also accepts a Hugging Face model
directory or hub id (``'openmmlab/upernet-convnext-tiny'``) and returns it as an mmdet / mmseg
checkpoint: keys renamed (:mod:`convnext_dense.weights.model_layouts`), classes from
``config.json``'s ``id2label`` in ``meta['dataset_meta']``. Files are read as before, weights-only
(:func:`convnext_dense.resume_safety.load_local_checkpoint`). Nothing happens on
``import convnext_dense`` alone; the package's configs list this module in ``custom_imports``::

    custom_imports = dict(imports=['convnext_dense', 'convnext_dense.model_checkpoints'],
                          allow_failed_imports=False)

``tools/train.py`` and ``tools/test.py`` do not need it: their Runner reads every source itself.
"""
import os
import re
from pathlib import Path

from mmengine.runner import CheckpointLoader

from .resume_safety import load_local_checkpoint
from .weights.model_loader import read_model_checkpoint

_HUB_ID = re.compile(r'[A-Za-z0-9][\w.-]*/[\w.-]+')


def load_local_or_hf(filename: str, map_location=None) -> dict:
    """mmengine loader for paths: a file as before; a HF directory or hub id as a whole model."""
    path = Path(os.path.expanduser(filename))
    if path.is_file() or not (path.is_dir() or _HUB_ID.fullmatch(filename)):
        return load_local_checkpoint(filename, map_location)
    checkpoint = read_model_checkpoint(filename)
    return {'state_dict': checkpoint.state_dict, 'meta': checkpoint.meta}


def enable() -> None:
    """Make mmengine's local-path loader read Hugging Face directories and hub ids (idempotent)."""
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_or_hf, force=True)


def enabled() -> bool:
    """Whether :func:`enable` is in effect."""
    return CheckpointLoader._schemes.get('') is load_local_or_hf


enable()
