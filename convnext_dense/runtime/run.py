"""Run a config with mmengine's Runner (tools/train.py, tools/test.py): check the data, fetch
``load_from`` early, adapt to the device, build :class:`StrictLoadRunner`, train or test.

The package's checkpoint switch (:mod:`convnext_dense.model_checkpoints`: safe local loading,
atomic writes, whole models of every layout) is turned on for the run, and on CPU glibc's malloc
keeps freed memory for the next step (:mod:`.allocator`).
"""
import logging
import os

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..atomic_files import remove_interrupted_writes
from ..model.archs import BackboneArgumentError
from ..model.layer_decay import LayerDecayConfigError
from ..weights.errors import CheckpointError
from ..weights.sources import resolve_source
from .allocator import MallocSettingError, keep_freed_memory
from .argument_errors import ConfigArgumentError, explain_unexpected_arguments
from .channel_checks import ChannelMismatchError, check_backbone_channels
from .checkpoint_runner import StrictLoadRunner
from .checkpoint_safety import point_at_a_saved_checkpoint
from .cli_options import exit_code
from .compile_cache import keep_compile_cache_per_capability
from .data_checks import DataError, check_data_paths, explain_annotation_errors
from .device import adapt_to_device
from .hooks import NonFiniteLossError


def add_non_finite_loss_check(cfg: Config) -> None:
    """Stop at the first NaN / inf loss (see :class:`.hooks.NonFiniteLossHook`)."""
    hook_type = 'convnext_dense.NonFiniteLossHook'
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(hook.get('type') in (hook_type, 'NonFiniteLossHook') for hook in hooks):
        hooks.append(dict(type=hook_type))
    cfg.custom_hooks = hooks


def drop_persistent_workers_without_workers(cfg: Config) -> None:
    """``num_workers=0`` with the configs' ``persistent_workers=True`` is a DataLoader error."""
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if loader and loader.get('num_workers', 0) == 0 and loader.get('persistent_workers'):
            loader.persistent_workers = False


def build_runner(cfg: Config) -> Runner:
    """Build the Runner named by ``runner_type``, by default :class:`StrictLoadRunner`.

    Raises:
        ChannelMismatchError: the backbone's output channels do not fit the neck / heads.
    """
    check_backbone_channels(cfg)
    adapt_to_device(cfg)
    drop_persistent_workers_without_workers(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return StrictLoadRunner.from_cfg(cfg)


def prepare_load_from(cfg: Config, mode: str) -> None:
    """Fetch ``load_from`` first (an offline machine fails in seconds, saying where to put it).

    When training starts from ``load_from`` (fine-tuning), the backbone comes from that checkpoint
    in full, so its ``init_cfg`` Pretrained weights would only be downloaded and overwritten: they
    are skipped.
    """
    if not cfg.get('load_from') or cfg.get('resume'):
        return
    resolve_source(cfg.load_from)
    backbone = cfg.get('model', {}).get('backbone') or {}
    init_cfg = backbone.get('init_cfg')
    if mode == 'train' and isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
        print_log(f'load_from={cfg.load_from} fills the backbone: its init_cfg Pretrained '
                  f'({init_cfg.get("checkpoint")}) is not loaded.', logger='current')
        backbone.init_cfg = None


def run(cfg: Config, mode: str):
    """Check the data, build the runner and train or test; returns what the runner returns."""
    from .. import model_checkpoints  # importing it turns the switch on: only when running
    model_checkpoints.enable()
    if not torch.cuda.is_available():
        print_log(keep_freed_memory(), logger='current')
    compile_cache = keep_compile_cache_per_capability()
    if compile_cache:
        print_log(f'torch.compile caches in {compile_cache} (ATEN_CPU_CAPABILITY is set: torch '
                  'keys its cache without it)', logger='current')
    check_backbone_channels(cfg)  # before load_from may download anything
    prepare_load_from(cfg, mode)
    check_data_paths(cfg, mode)
    if mode == 'train':
        add_non_finite_loss_check(cfg)
        if cfg.get('resume') and int(os.environ.get('RANK', 0)) == 0:
            _clean_work_dir(cfg.work_dir, latest=cfg.get('load_from') is None)
    with explain_unexpected_arguments(cfg):
        runner = build_runner(cfg)
        with explain_annotation_errors():
            result = runner.train() if mode == 'train' else runner.test()
    close_process_group()
    return result


def run_or_explain(cfg: Config, mode: str) -> int:
    """:func:`run` for ``tools/train.py`` / ``tools/test.py``: exit code 0, or 1 with one
    ``error: ...`` line (no traceback) when a file is missing, the data the config points at
    is missing or malformed (:class:`~.data_checks.DataError`), a checkpoint cannot be used
    (:class:`~convnext_dense.weights.CheckpointError`), the backbone's channels do not fit the
    neck / heads (:class:`~.channel_checks.ChannelMismatchError`), an argument of the backbone
    is wrong (:class:`~convnext_dense.model.archs.BackboneArgumentError`), a config entry gives
    a class an argument it does not take (:class:`~.argument_errors.ConfigArgumentError`), the
    layer-decay settings do not fit (``LayerDecayConfigError``), ``CONVNEXT_DENSE_MALLOC`` has
    an unknown value (:class:`~.allocator.MallocSettingError`) or the loss turned non-finite
    (:class:`~.hooks.NonFiniteLossError`); other errors keep their traceback."""
    def action() -> None:
        run(cfg, mode)  # the runner logs its own results
    return exit_code(action, (DataError, FileNotFoundError, CheckpointError, ChannelMismatchError,
                              BackboneArgumentError, ConfigArgumentError, LayerDecayConfigError,
                              MallocSettingError, NonFiniteLossError))


def close_process_group() -> None:
    """End a distributed run cleanly: all ranks meet, then the process group is destroyed.

    Left to interpreter exit, gloo's worker threads are torn down while a peer may still be
    talking to them, and a rank can die with "terminate called without an active exception"
    (SIGABRT) after its work is done, failing the whole torchrun job.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _clean_work_dir(work_dir: str, latest: bool) -> None:
    """Before resuming: drop what a run killed while saving left in its work dir and, resuming
    from the ``latest`` checkpoint there, make ``last_checkpoint`` name one that exists."""
    if not os.path.isdir(work_dir):
        return
    removed = remove_interrupted_writes(work_dir)
    if removed:
        print_log(f'Removed {len(removed)} temporary file(s) of a save that was interrupted: '
                  f'{", ".join(removed)}', logger='current')
    repointed = point_at_a_saved_checkpoint(work_dir) if latest else None
    if repointed:
        print_log(f'last_checkpoint named {repointed[0]!r}, which is not there (a run killed '
                  f'while saving): resuming from {repointed[1]}, the newest checkpoint of the '
                  'work dir', logger='current', level=logging.WARNING)
