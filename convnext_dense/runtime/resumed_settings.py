"""Say which settings of the config a resume replaces with the checkpoint's.

mmengine's resume restores the optimizer's state and the parameter schedulers' whole state, their
settings included: a run resumed with a changed schedule (``param_scheduler[1].end=2000`` with
``train_cfg.max_iters=2000`` to train longer) or a changed weight decay silently goes on with the
checkpoint's (the lr stays at its final value from the old end on). mmdet and mmseg behave the
same. :func:`settings_of` takes both sides, :func:`replaced_settings` lists what differs; the
Runner logs it as a warning before training goes on.
"""
from collections import Counter
from typing import Any, Dict, List, Tuple

# Scheduler state that moves as training goes: not a setting.
_SCHEDULER_PROGRESS = ('last_step', '_global_step', '_last_value', 'verbose')
# Optimizer group entries that are not settings (lr: the schedulers set it; compared through
# their base values).
_GROUP_PROGRESS = ('params', 'lr', 'initial_lr')


def settings_of(runner) -> Dict[str, Any]:
    """The schedulers' and optimizer groups' settings, by a name the config user recognises."""
    settings: Dict[str, Any] = {}
    for name, scheduler in _schedulers(runner.param_schedulers):
        for key, value in scheduler.state_dict().items():
            if key not in _SCHEDULER_PROGRESS:
                settings[f'{name} {type(scheduler).__name__}.{key}'] = _plain(value)
    optimizer = getattr(runner.optim_wrapper, 'optimizer', None)
    per_key: Dict[str, List[Any]] = {}
    for group in getattr(optimizer, 'param_groups', ()):
        for key, value in group.items():
            if key not in _GROUP_PROGRESS and _plain(value) not in per_key.setdefault(key, []):
                per_key[key].append(_plain(value))
    for key, values in per_key.items():  # the distinct values over the groups (layer decay)
        settings[f'optimizer {key}'] = values[0] if len(values) == 1 else values
    return settings


def replaced_settings(configured: Dict[str, Any], resumed: Dict[str, Any]) -> List[str]:
    """``'name: config → checkpoint'`` for each setting the resume changed."""
    return [f'{name}: {_short(configured[name])} → {_short(resumed[name])}'
            for name in configured if name in resumed and configured[name] != resumed[name]]


def describe(replaced: List[str], filename: str, most: int = 8) -> str:
    """The warning for ``replaced`` (the first ``most`` of them, and how many more)."""
    shown = '; '.join(replaced[:most])
    more = f'; and {len(replaced) - most} more' if len(replaced) > most else ''
    return (f'resuming from {filename} restores the schedule and optimizer settings saved in it '
            f'(as mmengine does), not the config\'s: {shown}{more}. To train with the config\'s, '
            'fine-tune from the checkpoint with load_from instead (weights only: the iteration '
            'count and the optimizer state start afresh).')


def _schedulers(schedulers) -> List[Tuple[str, Any]]:
    if not schedulers:
        return []
    if isinstance(schedulers, dict):  # one list per optimizer
        return [(f'param_scheduler[{key!r}][{index}]', scheduler)
                for key, group in schedulers.items() for index, scheduler in enumerate(group)]
    return [(f'param_scheduler[{index}]', scheduler) for index, scheduler in enumerate(schedulers)]


def _short(value: Any, most: int = 4) -> str:
    """``value`` for a log line: a long list (an lr per layer-decay group) cut after ``most``."""
    if isinstance(value, list) and len(value) > most:
        return f'[{", ".join(map(str, value[:most]))}, … ({len(value)} values)]'
    return str(value)


def _plain(value: Any) -> Any:
    """Comparable and readable: a Counter (milestones) as the sorted list of its milestones,
    tuples as lists, floats to 6 significant digits."""
    if isinstance(value, Counter):
        return sorted(value.elements())
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float):
        return float(f'{value:.6g}')
    return value
