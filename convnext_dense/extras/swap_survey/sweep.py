"""Swap, build and train one step for every stock mmdet / mmseg config with a ResNet backbone.

``tools/sweep_swap_backbone.py`` runs it; it is a survey, not a unit test (an hour or more on
CPU). Each config goes through: swap with a tiny ConvNeXt (no weights), write the delta file,
load it back with ``Config.fromfile``, build the model and optimizer, one ``train_step``.
"""
import glob
import inspect
import json
import os
import os.path as osp
import signal
import tempfile
import time
import traceback
from typing import Dict, Iterator, List, Optional

import torch
from mmengine.config import Config

from ...runtime.config import stock_config_path, stock_configs_dir, task_registry
from ...swap.errors import SwapRefused
from ...swap.plan import plan_swap
from .smoke import train_one_step

SWEEP_ARCH = dict(depths=(1, 1, 2, 1), channels=(16, 32, 64, 128))


def stock_configs(scope: str) -> List[str]:
    """``'mmdet::…'`` / ``'mmseg::…'`` names of the configs installed with the package."""
    root = stock_configs_dir(scope)
    names = []
    for path in sorted(glob.glob(osp.join(root, '**', '*.py'), recursive=True)):
        relative = osp.relpath(path, root)
        if '_base_' not in relative.split(os.sep):
            names.append(f'{scope}::{relative}')
    return names


def backbone_family(cfg: Config, scope: str) -> Optional[str]:
    """Type name of the config's backbone if its class is the scope's ResNet or a subclass
    (ResNetV1c, ResNetV1d, ResNeXt, Res2Net, …), else None. Looks at ``model.backbone`` and at
    the backbone of a wrapped detector (``model.detector.backbone``)."""
    resnet = getattr(__import__(f'{scope}.models.backbones', fromlist=['ResNet']), 'ResNet')
    model = cfg.get('model') or {}
    for holder in (model, model.get('detector') or {}):
        backbone = holder.get('backbone') if isinstance(holder, dict) else None
        if isinstance(backbone, dict):
            try:
                cls = task_registry(scope).get(backbone.get('type'))
            except Exception:  # an unknown scope prefix (mmpretrain.ResNet) is not ours
                return None
            if inspect.isclass(cls) and issubclass(cls, resnet):
                return cls.__name__
            return None
    return None


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f'{type(error).__name__}: {text[0] if text else ""}'[:300]


def _train(cfg: Config, result: Dict) -> None:
    """One step at the default size; again at 384x384 if that fails: mmcv's deformable convs
    (DDOD, VFNet, RepPoints heads) need the stride-128 level at least 3x3."""
    for size in (None, (384, 384)):
        torch.manual_seed(0)  # the same synthetic batch and initial weights on every run
        try:
            train_one_step(cfg, size=size)
            if size:
                result['size'] = list(size)
            return
        except _Timeout:
            raise
        except Exception:  # the last size's error is the one reported
            if size:
                raise


def _stock_trains(name: str) -> str:
    """'trains', or the reason the unswapped config fails the same step here."""
    try:
        cfg = Config.fromfile(stock_config_path(name), import_custom_modules=False)
        cfg.model.backbone.pop('init_cfg', None)  # no downloads: only whether it runs
        cfg.model.pop('pretrained', None)
        _train(cfg, {})
        return 'trains'
    except Exception as error:  # recorded, not raised: this is a comparison
        return _reason(error)


def check_config(name: str, workdir: str, time_limit: int = 300) -> Dict:
    """Run one config through swap, write, reload, build and one train step.

    Returns:
        ``dict(config, status, reason, seconds)``; status is 'trained', 'refused' (the swap
        declined, reason names the field), 'swap_failed', 'reload_failed' or 'train_failed'.
        A failed one also gets ``stock``: 'trains' or why the unswapped config fails too.
    """
    start = time.time()
    result = dict(config=name, status='trained', reason='')
    stage = 'swap_failed'
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(time_limit)
    try:
        plan = plan_swap(name, arch=SWEEP_ARCH, pretrained=None)
        stage = 'reload_failed'
        out = osp.join(workdir, name.replace('::', '__').replace('/', '__'))
        plan.dump(out)
        cfg = Config.fromfile(out)
        stage = 'train_failed'
        _train(cfg, result)
    except SwapRefused as error:
        result.update(status='refused', reason=str(error)[:300], field=error.field)
    except _Timeout:
        result.update(status=stage, reason=f'timeout after {time_limit} s')
    except Exception as error:  # record and go on: the sweep reports every failure
        result.update(status=stage, reason=_reason(error),
                      where=traceback.extract_tb(error.__traceback__)[-1].filename)
    finally:
        signal.alarm(0)
    if result['status'] in ('reload_failed', 'train_failed'):
        signal.alarm(time_limit)
        try:
            result['stock'] = _stock_trains(name)
        except _Timeout:
            result['stock'] = f'timeout after {time_limit} s'
        finally:
            signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
    result['seconds'] = round(time.time() - start, 1)
    return result


def resnet_configs(scopes=('mmdet', 'mmseg')) -> Iterator[Dict]:
    """Yield ``dict(config, backbone)`` for every stock config with a ResNet-family backbone,
    and ``dict(config, load_error)`` for those that cannot be loaded here."""
    for scope in scopes:
        for name in stock_configs(scope):
            try:
                cfg = Config.fromfile(stock_config_path(name), import_custom_modules=False)
            except Exception as error:  # e.g. configs that import mmpretrain
                yield dict(config=name, load_error=_reason(error))
                continue
            family = backbone_family(cfg, scope)
            if family:
                yield dict(config=name, backbone=family)


def run_sweep(names: List[Dict], workdir: Optional[str] = None, time_limit: int = 300,
              progress=None) -> List[Dict]:
    """:func:`check_config` on each of ``names`` (entries of :func:`resnet_configs`)."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in names:
            result = {**entry, **check_config(entry['config'], workdir or tmp, time_limit)}
            results.append(result)
            if progress:
                progress(result, results)
    return results


def earlier_results(path: str) -> Dict[str, List[Dict]]:
    """``results`` and ``not_loaded`` of an earlier sweep's JSON file (both empty if none).

    Raises:
        ValueError: ``path`` is not such a file (not JSON, or entries without 'config' and
            'status'); the message names it.
    """
    if not osp.exists(path):
        return dict(results=[], not_loaded=[])
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f'cannot read {path} as sweep results: {error}') from None
    results = data.get('results') if isinstance(data, dict) else None
    not_loaded = (data.get('not_loaded') if isinstance(data, dict) else None) or []
    if not isinstance(results, list) or not all(
            isinstance(r, dict) and {'config', 'status'} <= r.keys() for r in results):
        raise ValueError(f"{path} is not a sweep results file: it needs a 'results' list whose "
                         "entries each have 'config' and 'status'")
    if not isinstance(not_loaded, list) or not all(
            isinstance(r, dict) and 'config' in r for r in not_loaded):
        raise ValueError(f"{path} is not a sweep results file: its 'not_loaded' entries need "
                         "a 'config'")
    return dict(results=results, not_loaded=not_loaded)


def merge_results(earlier: List[Dict], new: List[Dict]) -> List[Dict]:
    """``earlier`` with each config's entry replaced by its entry in ``new``; new configs last.

    A sweep of a subset (``--match``, ``--limit``) updates its configs and keeps the others.
    """
    merged = {r['config']: r for r in earlier}
    merged.update((r['config'], r) for r in new)
    return list(merged.values())


def summarize(results: List[Dict]) -> Dict:
    """Counts per status, per backbone type and per failure reason."""
    counts: Dict[str, int] = {}
    by_backbone: Dict[str, Dict[str, int]] = {}
    reasons: Dict[str, int] = {}
    for result in results:
        status = result['status']
        counts[status] = counts.get(status, 0) + 1
        per = by_backbone.setdefault(result.get('backbone', '?'), {'N': 0, 'trained': 0})
        per['N'] += 1
        per['trained'] += status == 'trained'
        if status != 'trained':
            key = f'{status}: {result.get("field") or result["reason"][:120]}'
            if result.get('stock') and result['stock'] != 'trains':
                key += ' (the stock config fails too)'
            reasons[key] = reasons.get(key, 0) + 1
    return dict(N=len(results), trained=counts.get('trained', 0), by_status=counts,
                by_backbone=by_backbone,
                reasons=dict(sorted(reasons.items(), key=lambda item: -item[1])))
