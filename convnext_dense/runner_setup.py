"""Turn a config plus command-line choices into an mmengine Runner (tools/train.py, tools/test.py).

One code path serves mmdet and mmseg: the config's ``default_scope`` decides. On a machine without
CUDA the same configs run unchanged: mixed precision falls back to fp32 (one warning), SyncBN
becomes BN, and distributed runs use gloo.
"""
import os
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .checkpoint_runner import StrictLoadRunner
from .data_checks import check_data_paths, explain_annotation_errors
from .resume_safety import remove_interrupted_writes
from .weights.sources import resolve_source

TASK_SCOPES = ('mmdet', 'mmseg')
LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Load a config file (or ``mmdet::`` / ``mmseg::`` name) and merge command-line overrides."""
    from .configs import stock_config_path
    cfg = Config.fromfile(stock_config_path(path))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    task_scope(cfg)
    return cfg


def task_scope(cfg: Config) -> str:
    """``'mmdet'`` or ``'mmseg'``, from the config's ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASK_SCOPES:
        raise ValueError(f"config default_scope is {scope!r}; convnext_dense tools run configs "
                         f"whose default_scope is one of {TASK_SCOPES}")
    return scope


def set_work_dir(cfg: Config, config_path: str, work_dir: Optional[str]) -> None:
    """Use ``work_dir``, else the config's, else ``work_dirs/<config name>`` as mmdet does."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def set_launcher(cfg: Config, launcher: str) -> None:
    """Record the launcher; on CPU-only machines start the gloo process group ourselves."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher '{launcher}' is not one of {LAUNCHERS}")
    cfg.launcher = launcher
    if launcher != 'none' and not torch.cuda.is_available():
        _init_cpu_distributed(cfg, launcher)


def _init_cpu_distributed(cfg: Config, launcher: str) -> None:
    # mmengine's init_dist calls torch.cuda.set_device, which a CPU-only torch cannot do.
    import torch.distributed as dist
    if launcher != 'pytorch':
        raise ValueError(f"launcher '{launcher}' needs GPUs; on a CPU-only machine use "
                         "'pytorch' (tools/dist_train.sh)")
    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    # DDP takes no device_ids for a CPU module.
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
                                 broadcast_buffers=False,
                                 find_unused_parameters=cfg.get('find_unused_parameters', False))
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')


def set_amp(cfg: Config, enable: bool) -> None:
    """``--amp``: switch the optimizer wrapper to mmengine's AmpOptimWrapper."""
    if enable:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'


def set_auto_scale_lr(cfg: Config, enable: bool) -> None:
    """``--auto-scale-lr``: scale the lr by the real batch size over ``base_batch_size``."""
    if not enable:
        return
    if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
        raise ValueError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in the '
                         'config (the total batch size the lr was tuned for)')
    cfg.auto_scale_lr.enable = True


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume`` (latest checkpoint in the work dir) or ``--resume PATH``."""
    if resume is None:
        return
    cfg.resume = True
    cfg.load_from = None if resume == 'auto' else resume


def adapt_to_device(cfg: Config) -> None:
    """Make a GPU config run on a machine without CUDA: fp32 instead of AMP, BN for SyncBN."""
    if torch.cuda.is_available():
        return
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is not None and optim_wrapper.get('type') == 'AmpOptimWrapper':
        print_log('No CUDA device: mixed precision (AmpOptimWrapper) falls back to fp32 '
                  'OptimWrapper.', logger='current', level=30)
        optim_wrapper.type = 'OptimWrapper'
        for key in ('loss_scale', 'dtype', 'use_fsdp'):
            optim_wrapper.pop(key, None)
    if _replace_sync_bn(cfg.model):
        print_log('No CUDA device: SyncBN layers run as BN (statistics per process).',
                  logger='current', level=30)


def _replace_sync_bn(node) -> int:
    # SyncBatchNorm needs CUDA tensors once a process group exists; BN keeps per-process stats.
    replaced = 0
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
            replaced += 1
        for value in node.values():
            replaced += _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            replaced += _replace_sync_bn(value)
    return replaced


def add_non_finite_loss_check(cfg: Config) -> None:
    """Stop at the first NaN / inf loss (see :class:`convnext_dense.hooks.NonFiniteLossHook`)."""
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
    """Build the Runner named by ``runner_type``, by default :class:`StrictLoadRunner`."""
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
    prepare_load_from(cfg, mode)
    check_data_paths(cfg, mode)
    if mode == 'train':
        add_non_finite_loss_check(cfg)
        if cfg.get('resume') and int(os.environ.get('RANK', 0)) == 0:
            _clean_work_dir(cfg.work_dir)
    runner = build_runner(cfg)
    with explain_annotation_errors():
        result = runner.train() if mode == 'train' else runner.test()
    close_process_group()
    return result


def close_process_group() -> None:
    """End a distributed run cleanly: all ranks meet, then the process group is destroyed.

    Left to interpreter exit, gloo's worker threads are torn down while a peer may still be
    talking to them, and a rank can die with "terminate called without an active exception"
    (SIGABRT) after its work is done, failing the whole torchrun job.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _clean_work_dir(work_dir: str) -> None:
    """Before resuming: drop what a run killed while saving left in its work dir."""
    if not os.path.isdir(work_dir):
        return
    removed = remove_interrupted_writes(work_dir)
    if removed:
        print_log(f'Removed {len(removed)} temporary file(s) of a save that was interrupted: '
                  f'{", ".join(removed)}', logger='current')


def set_local_rank_env(local_rank: int) -> None:
    """torch.distributed.launch passes ``--local-rank``; torchrun sets LOCAL_RANK itself."""
    os.environ.setdefault('LOCAL_RANK', str(local_rank))


def enable_tta(cfg: Config) -> None:
    """``--tta``: wrap the model in the config's ``tta_model`` and test with ``tta_pipeline``."""
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise ValueError('--tta needs tta_model and tta_pipeline in the config; '
                         f'this {task_scope(cfg)} config defines '
                         f"{[k for k in ('tta_model', 'tta_pipeline') if k in cfg] or 'neither'}")
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset['dataset']
    dataset.pipeline = cfg.tta_pipeline


def enable_show_dir(cfg: Config, show_dir: str) -> None:
    """``--show-dir``: draw predictions of the test set into ``show_dir``."""
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise ValueError('--show-dir needs default_hooks.visualization in the config')
    hooks.visualization.draw = True
    if task_scope(cfg) == 'mmdet':
        hooks.visualization.test_out_dir = osp.abspath(show_dir)
    else:
        cfg.visualizer.save_dir = osp.abspath(show_dir)
        hooks.visualization.interval = 1  # mmseg draws every `interval`-th batch only


def add_result_dump(cfg: Config, out: str) -> None:
    """``--out``: keep raw predictions (mmdet: a pickle file; mmseg: a directory of PNGs)."""
    if task_scope(cfg) == 'mmdet':
        if not out.endswith(('.pkl', '.pickle')):
            raise ValueError(f"--out '{out}' must end with .pkl or .pickle for detection results")
        evaluators = cfg.test_evaluator
        evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) else [evaluators]
        cfg.test_evaluator = evaluators + [dict(type='DumpDetResults', out_file_path=out)]
    else:
        # mmseg's IoUMetric creates output_dir on rank 0 only, yet every rank writes its PNGs
        # there: a rank that gets there first would fail. Each rank makes it here.
        os.makedirs(out, exist_ok=True)
        cfg.test_evaluator.output_dir = out
        cfg.test_evaluator.keep_results = True

