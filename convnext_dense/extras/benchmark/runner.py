"""Run the backbone benchmark: ours beside its peers on identical weights, case by case.

Cases that are compared (one input size, task, precision family and variant) run interleaved in
one process; the ratio of medians is the figure of merit. Each side of a bf16 comparison is
timed in both bf16 modes (autocast, cast model) and judged by its faster one.
"""
import functools
import os
import platform
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ...cpu_fast_paths import cpu_support, fast_paths
from ...model.archs import is_int
from .cases import Case, build_model, make_images, make_step, prepare, tf32
from .flops import count_macs
from .matmul_peak import matmul_peak
from .peers import BUILDERS, copy_ours_into, load_into_ours, peer_available
from .timing import CLOCKS, Timing, load_average, per_round_ratios, time_interleaved

VARIANTS = ('eager', 'channels_last', 'with_cp', 'compile', 'mlp_routes', 'train_routes')
# Per route variant: the case field it sets, the machine's default route, the environment
# setting, the routes.
ROUTE_VARIANTS = {
    'mlp_routes': ('mlp_route', 'wide_mlp_route', cpu_support.MLP_ROUTE_ENV,
                   cpu_support.MLP_ROUTES),
    'train_routes': ('train_route', 'train_matmul_route', cpu_support.TRAIN_MATMUL_ROUTE_ENV,
                     cpu_support.TRAIN_MATMUL_ROUTES),
}
PRECISION_FAMILIES = ('fp32', 'tf32', 'bf16')
# Output agreement with our fp32 plain path, relative to the largest output value.
AGREEMENT_TOLERANCE = {'fp32': 1e-4, 'tf32': 1e-2, 'bf16': 5e-2}


@dataclass
class BenchmarkConfig:
    """What to measure.

    Attributes:
        arch: Backbone architecture (``'base'`` is the issue's ConvNeXt-B).
        sizes: Input ``(height, width)`` sizes.
        tasks: ``'infer'`` and / or ``'train'``.
        precisions: ``'fp32'``, ``'tf32'`` (GPU) and / or ``'bf16'`` (bf16 inference: autocast
            and a cast model; bf16 training: autocast).
        variants: ``'eager'``, ``'channels_last'``, ``'with_cp'`` (training only: ours with and
            without checkpointing, and peers that support it), ``'compile'`` (``torch.compile``),
            ``'mlp_routes'`` (fp32 inference only: ours with each route of the fused block MLP,
            oneDNN with GELU fused or apart and BLAS, beside the peers), ``'train_routes'``
            (the same for the fp32 training step's matmuls, oneDNN and BLAS).
        peers: Peers to include when importable (``'huggingface'``, ``'timm'``, ``'mmpretrain'``).
        repeats: Timed steps per case.
        warmup: Untimed steps per case first.
        batch: Images per step.
        memory: Also measure each case's peak memory (CPU: in a fresh process each, slow).
        device: ``'cpu'`` or ``'cuda'``.
        clock: ``'wall'`` (default) or ``'cpu'``: this process's CPU time, which other processes
            on a shared machine do not inflate (meaningful with one thread).
        matmul_shapes: ``(M, K, N)`` products for the matmul peak (None: the model's own).
        drop_path_rate: Training cases: stochastic depth rising linearly to this rate in every
            implementation (0: none, as the goals are set; the configs train with 0.4-0.7).
    """

    arch: str = 'base'
    sizes: Sequence[Tuple[int, int]] = ((512, 512),)
    tasks: Sequence[str] = ('infer', 'train')
    precisions: Sequence[str] = ('fp32', 'bf16')
    variants: Sequence[str] = ('eager',)
    peers: Sequence[str] = ('huggingface', 'timm', 'mmpretrain')
    repeats: int = 5
    warmup: int = 1
    batch: int = 1
    memory: bool = False
    device: str = 'cpu'
    clock: str = 'wall'
    matmul_shapes: Optional[Sequence[Tuple[int, int, int]]] = None
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise ValueError(f"clock '{self.clock}' is not one of {tuple(CLOCKS)}")
        for name, values, allowed in (('tasks', self.tasks, ('infer', 'train')),
                                      ('precisions', self.precisions, PRECISION_FAMILIES),
                                      ('variants', self.variants, VARIANTS),
                                      ('peers', self.peers, tuple(BUILDERS))):
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ValueError(f'{name} {bad} not allowed; choose from {allowed}')
        for name, value, least in (('batch', self.batch, 1), ('repeats', self.repeats, 1),
                                   ('warmup', self.warmup, 0)):
            if not is_int(value) or value < least:
                raise ValueError(f'{name} {value!r} must be an int >= {least}')
        if not 0 <= self.drop_path_rate < 1:
            raise ValueError(f'drop_path_rate {self.drop_path_rate!r} is out of range [0, 1)')
        for size in self.sizes:
            if len(size) != 2 or any(not is_int(s) or s < 32 for s in size):
                raise ValueError(f'size {size!r} must be (height, width), each an int >= 32')


@dataclass
class Group:
    """Cases timed together, and the models they run."""

    size: Tuple[int, int]
    task: str
    family: str
    variant: str
    cases: List[Case] = field(default_factory=list)


def plan_groups(config: BenchmarkConfig, impls: Sequence[str]) -> List[Group]:
    """Every comparison group the config asks for, in run order."""
    groups = []
    for size in config.sizes:
        for task in config.tasks:
            for family in config.precisions:
                precisions = ((family,) if family in ('fp32', 'tf32') else
                              ('bf16-autocast', 'bf16-cast') if task == 'infer'
                              else ('bf16-autocast',))
                for variant in config.variants:
                    if not _variant_applies(variant, task, family):
                        continue
                    group = Group(size, task, family, variant)
                    for impl in impls:
                        for precision in precisions:
                            group.cases.extend(_variant_cases(
                                impl, task, precision, size, variant, config.batch,
                                config.drop_path_rate if task == 'train' else 0.0))
                    groups.append(group)
    return groups


def _variant_applies(variant: str, task: str, family: str) -> bool:
    if variant == 'with_cp':
        return task == 'train'
    if variant == 'mlp_routes':  # the fused MLP runs only in inference; bf16 always on oneDNN
        return task == 'infer' and family == 'fp32'
    if variant == 'train_routes':  # bf16 training matmuls are oneDNN's in any case
        return task == 'train' and family == 'fp32'
    return True


def _variant_cases(impl, task, precision, size, variant, batch, drop_path_rate) -> List[Case]:
    base = dict(impl=impl, task=task, precision=precision, size=size, batch=batch,
                drop_path_rate=drop_path_rate)
    if variant == 'eager':
        return [Case(**base)]
    if variant == 'channels_last':
        return [Case(**base, channels_last=True)]
    if variant == 'compile':
        return [Case(**base, compile=True)]
    if variant in ROUTE_VARIANTS:
        field, _, _, routes = ROUTE_VARIANTS[variant]
        return ([Case(**base, **{field: route}) for route in routes]
                if impl == 'ours' else [Case(**base)])
    if impl == 'huggingface':  # no activation checkpointing in transformers' ConvNeXt
        return []
    return [Case(**base), Case(**base, with_cp=True)] if impl == 'ours' else [
        Case(**base, with_cp=True)]


def build_models(config: BenchmarkConfig, log: Callable[[str], None]) -> Dict[str, torch.nn.Module]:
    """Ours and each available peer, all holding the same weights (ours loaded from HF's)."""
    impls = ['ours'] + [p for p in config.peers if peer_available(p)]
    skipped = [p for p in config.peers if p not in impls]
    if skipped:
        log(f'peers not importable here, skipped: {skipped}')
    models = {impl: build_model(impl, config.arch, drop_path_rate=config.drop_path_rate)
              for impl in impls}
    if 'huggingface' in models:
        load_into_ours(models['ours'], models['huggingface'])
    for impl in impls:
        if impl not in ('ours', 'huggingface'):
            copy_ours_into(models[impl], models['ours'])
    return models


def machine_info(device: str) -> Dict:
    """CPU / GPU, ISA torch dispatches to, bf16 / AMX flags, core count, torch version, threads."""
    cpu = cpu_support.describe()
    info = {'platform': platform.platform(),
            'processor': cpu['cpu_model'] if cpu['cpu_model'] != 'unknown' else
            platform.processor(),
            'cpu_vendor': cpu['cpu_vendor'], 'wide_mlp_route': cpu['wide_mlp_route'],
            'train_matmul_route': cpu['train_matmul_route'],
            'cpu_capability': cpu['cpu_capability'], 'native_bf16': cpu['native_bf16'],
            'cpu_flags': cpu['flags'], 'cores': os.cpu_count(), 'threads': cpu['threads'],
            'threads_per_core': cpu['threads_per_core'],
            'torch': torch.__version__, 'device': device, 'load_average': load_average()}
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    return info


def run_benchmark(config: BenchmarkConfig, log: Callable[[str], None] = lambda _: None,
                  memory_probe: Optional[Callable[[Case, str], Dict]] = None) -> Dict:
    """Run every group of ``config``; return JSON-ready results (see ``report.format_table``).

    Args:
        config: What to measure.
        log: Receives progress lines.
        memory_probe: ``(case, arch) -> {'step_mib': ..., 'peak_mib': ...}``, used when
            ``config.memory`` is set (default: a fresh CPU process per case).
    """
    sync = torch.cuda.synchronize if config.device == 'cuda' else None
    results: Dict = {'machine': machine_info(config.device), 'arch': config.arch,
                     'batch': config.batch, 'repeats': config.repeats, 'clock': config.clock,
                     'rows': []}
    log('measuring the matmul peak')
    peak = functools.partial(matmul_peak, device=config.device, shapes=config.matmul_shapes,
                             sync=sync, clock=CLOCKS[config.clock])
    results['matmul_peak'] = {'float32': peak(torch.float32)}
    if 'bf16' in config.precisions:
        results['matmul_peak']['bfloat16'] = peak(torch.bfloat16)
    if 'tf32' in config.precisions:
        with tf32():
            results['matmul_peak']['tf32'] = peak(torch.float32)
    models = build_models(config, log)
    results['impls'] = list(models)
    macs = {size: count_macs(models['ours'], (config.batch, 3, *size)) for size in config.sizes}
    results['macs'] = {f'{h}x{w}': m for (h, w), m in macs.items()}
    references = {}
    for group in plan_groups(config, list(models)):
        log(f'{group.task} {group.family} {group.variant} {group.size[0]}x{group.size[1]}: '
            f'{", ".join(c.label() + "/" + c.precision for c in group.cases)}')
        if group.size not in references:
            references[group.size] = _reference_outputs(models['ours'], group.size, config)
        results['rows'].extend(_run_group(group, models, config, macs[group.size],
                                          references[group.size], results['matmul_peak'], sync))
        if config.memory:
            probe = memory_probe or _cpu_memory_probe
            for row in results['rows'][-len(group.cases):]:
                row['memory'] = probe(Case(**dict(row['case'], size=tuple(row['case']['size']))),
                                      config.arch)
    results['machine']['load_average_after'] = load_average()
    return results


def _cpu_memory_probe(case: Case, arch: str) -> Dict:
    from .memory import measure_step_memory
    return measure_step_memory(case, arch)


def _reference_outputs(ours, size, config) -> List[torch.Tensor]:
    case = Case('ours', 'infer', 'fp32', size, config.batch)
    model = prepare(ours, case, config.device)
    with fast_paths(False):
        return [o.float() for o in make_step(model, case, make_images(case, config.device))()]


def _peak_key(case: Case, device: str) -> str:
    """The matmul peak a case's rate is measured against: the dtype its matmuls run in.

    Our backbone computes a bf16 request in float32 on a CPU without native bf16
    (:mod:`~convnext_dense.cpu_fast_paths.float32_fallback`; not when compiled, which traces
    the plain path), so its float32 peak is the yardstick there.
    """
    if case.precision == 'tf32':
        return 'tf32'
    if not case.precision.startswith('bf16'):
        return 'float32'
    in_float32 = (case.impl == 'ours' and device == 'cpu' and not case.compile
                  and not cpu_support.native_bf16())
    return 'float32' if in_float32 else 'bfloat16'


def _run_group(group: Group, models, config, macs, reference, peaks, sync) -> List[Dict]:
    steps, prepared = {}, {}
    for case in group.cases:
        model = prepare(models[case.impl], case, config.device)
        prepared[case] = model
        steps[f'{case.label()}/{case.precision}'] = make_step(
            model, case, make_images(case, config.device))
    timings = time_interleaved(steps, config.repeats, config.warmup, sync, CLOCKS[config.clock])
    rows = []
    for case, (name, timing) in zip(group.cases, timings.items()):
        flops = 2.0 * macs * (3 if case.task == 'train' else 1)
        peak = peaks[_peak_key(case, config.device)]['gflops']
        row = {'group': _group_name(group), 'case': case.as_dict(), 'name': name,
               'median_s': timing.median, 'best_s': timing.best, 'spread': timing.spread,
               'times_s': timing.times, 'gflops': flops / timing.median / 1e9,
               'peak_fraction': flops / timing.median / 1e9 / peak}
        if case.task == 'infer':
            outputs = steps[name]()
            row['max_rel_diff'] = max(
                ((o.float() - r).abs().max() / r.abs().max()).item()
                for o, r in zip(outputs, reference))
            family = 'bf16' if case.precision.startswith('bf16') else case.precision
            row['agrees'] = row['max_rel_diff'] <= AGREEMENT_TOLERANCE[family]
        rows.append(row)
    del prepared
    return rows


def _group_name(group: Group) -> str:
    name = f'{group.task} {group.family} {group.variant} {group.size[0]}x{group.size[1]}'
    rate = group.cases[0].drop_path_rate if group.cases else 0.0
    return f'{name} drop path {rate:g}' if rate else name


# The other MLP route must take less than this fraction of the default's time to be suggested.
ROUTE_HINT_MARGIN = 0.95


def summarize(results: Dict) -> List[Dict]:
    """Per group: our best median over each peer's best, and with_cp's cost.

    Returns rows ``{'group', 'ours_s', 'ours_mode', 'ours_spread'}`` plus, per peer measured,
    ``{peer}_s``, ``{peer}_mode``, ``{peer}_spread``, ``ratio_vs_{peer}`` (ratio of the medians,
    what the goals check) and ``round_ratio_vs_{peer}`` with its ``_spread`` (the median of the
    rounds' ratios, where a slowdown of the machine that both sides share cancels); with_cp
    groups give ``cp_time_ratio`` and (with memory) ``cp_memory_ratio`` against ours without
    checkpointing instead;
    mlp_routes and train_routes groups give ``route_s`` (median per route), ``route_kind``
    (the case field) and ``route_hint`` (the environment setting to use) where a route this
    machine does not take by default was clearly faster.
    """
    by_group: Dict[str, List[Dict]] = {}
    for row in results['rows']:
        by_group.setdefault(row['group'], []).append(row)
    summary = []
    for name, rows in by_group.items():
        ours = [r for r in rows if r['case']['impl'] == 'ours']
        entry: Dict = {'group': name}
        if 'with_cp' in name:
            plain = [r for r in ours if not r['case']['with_cp']]
            cp = [r for r in ours if r['case']['with_cp']]
            if plain and cp:
                entry['cp_time_ratio'] = cp[0]['median_s'] / plain[0]['median_s']
                if 'memory' in cp[0] and 'memory' in plain[0]:
                    entry['cp_memory_ratio'] = (cp[0]['memory']['step_mib']
                                                / plain[0]['memory']['step_mib'])
                    entry['cp_peak_rss_ratio'] = (cp[0]['memory']['peak_mib']
                                                  / plain[0]['memory']['peak_mib'])
            summary.append(entry)
            continue
        best_ours = min(ours, key=lambda r: r['median_s'])
        entry.update(ours_s=best_ours['median_s'], ours_mode=best_ours['case']['precision'])
        for route_field, default_key, env, _ in ROUTE_VARIANTS.values():
            routes = {r['case'][route_field]: r['median_s'] for r in ours
                      if r['case'].get(route_field)}
            if len(routes) < 2:
                continue
            entry.update(route_s=routes, route_kind=route_field)
            default = results.get('machine', {}).get(default_key)
            faster = min(routes, key=routes.get)
            if default in routes and routes[faster] < ROUTE_HINT_MARGIN * routes[default]:
                entry['route_hint'] = f'{env}={faster}'
        entry['ours_spread'] = best_ours.get('spread')
        for peer in ('huggingface', 'timm', 'mmpretrain'):
            peer_rows = [r for r in rows if r['case']['impl'] == peer]
            if peer_rows:
                best = min(peer_rows, key=lambda r: r['median_s'])
                entry[f'{peer}_s'] = best['median_s']
                entry[f'{peer}_spread'] = best.get('spread')
                entry[f'{peer}_mode'] = best['case']['precision']
                entry[f'ratio_vs_{peer}'] = best_ours['median_s'] / best['median_s']
                rounds = _round_ratios(best_ours, best)
                if rounds is not None:
                    entry[f'round_ratio_vs_{peer}'] = rounds.median
                    entry[f'round_ratio_vs_{peer}_spread'] = rounds.spread
        summary.append(entry)
    return summary


def _round_ratios(ours: Dict, peer: Dict) -> Optional[Timing]:
    """Our time over the peer's, round by round (both rows from one interleaved run), or None
    where the rows cannot be paired (no per-call times, or different numbers of calls)."""
    if ('times_s' not in ours or 'times_s' not in peer
            or len(ours['times_s']) != len(peer['times_s'])):
        return None
    return per_round_ratios(Timing(ours['times_s']), Timing(peer['times_s']))
