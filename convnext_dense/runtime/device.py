"""Make GPU configs run without CUDA: fp32 instead of mixed precision, BN for SyncBN."""
import torch
from mmengine.config import Config
from mmengine.logging import print_log


def adapt_to_device(cfg: Config) -> None:
    """On a machine without CUDA: fp32 instead of AMP, BN for SyncBN (one warning each)."""
    if torch.cuda.is_available():
        return
    if amp_to_fp32(cfg):
        print_log('No CUDA device: mixed precision (AmpOptimWrapper) falls back to fp32 '
                  'OptimWrapper.', logger='current', level=30)
    if replace_sync_bn(cfg.model):
        print_log('No CUDA device: SyncBN layers run as BN (statistics per process).',
                  logger='current', level=30)


def amp_to_fp32(cfg: Config) -> bool:
    """Turn an ``AmpOptimWrapper`` into a plain fp32 ``OptimWrapper``; whether there was one."""
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is None or optim_wrapper.get('type') != 'AmpOptimWrapper':
        return False
    optim_wrapper.type = 'OptimWrapper'
    for key in ('loss_scale', 'dtype', 'use_fsdp'):
        optim_wrapper.pop(key, None)
    return True


def replace_sync_bn(node) -> int:
    """Turn SyncBN / MMSyncBN norm configs into BN, in place; returns how many were replaced.

    SyncBatchNorm needs CUDA tensors once a process group exists; BN keeps per-process statistics.
    """
    replaced = 0
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
            replaced += 1
        for value in node.values():
            replaced += replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            replaced += replace_sync_bn(value)
    return replaced
