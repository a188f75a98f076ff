"""Tables and goal checks for benchmark results, and the JSON file."""
import json
import os
import tempfile
from typing import Dict, List, Optional, Sequence

from ...atomic_files import write_bytes
from .timing import format_spread

# The goals: (summary group, field, limit on a CPU with native bf16, limit where it is emulated).
# Without bf16 instructions bf16 only has to be no slower than the peer's bf16.
GOALS = (
    ('infer fp32 eager 512x512', 'ratio_vs_huggingface', 0.90, 0.90),
    ('train fp32 eager 512x512', 'ratio_vs_huggingface', 0.90, 0.90),
    ('infer bf16 eager 512x512', 'ratio_vs_huggingface', 0.80, 1.00),
    ('train fp32 with_cp 800x1216', 'cp_memory_ratio', 0.50, 0.50),
    ('train fp32 with_cp 800x1216', 'cp_time_ratio', 1.35, 1.35),
)


def check_goals(summary: Sequence[Dict], native_bf16: bool = True) -> List[Dict]:
    """Each goal whose group was measured: value, limit (for this CPU class) and whether it is met."""
    by_group = {entry['group']: entry for entry in summary}
    checked = []
    for group, key, native_limit, emulated_limit in GOALS:
        limit = native_limit if native_bf16 else emulated_limit
        value = by_group.get(group, {}).get(key)
        if value is not None:
            checked.append({'group': group, 'metric': key, 'value': value, 'limit': limit,
                            'met': value <= limit})
    return checked


def _with_spread(value: float, spread: Optional[float]) -> str:
    """``1.234 (5.6%)``: a median (seconds or a ratio) and its spread (``n/a`` under 4 calls)."""
    return f'{value:.3f} ({format_spread(spread)})'


def _fmt_memory(row: Dict) -> str:
    memory = row.get('memory')
    return f"{memory['step_mib']:.0f}" if memory else ''


def format_table(results: Dict) -> str:
    """A Markdown table of every case: median time and spread, GFLOP/s, share of the matmul peak,
    agreement."""
    lines = ['| case | mode | median s (spread) | GFLOP/s | of matmul peak | step memory MiB | '
             'max rel. diff |', '|---|---|---|---|---|---|---|']
    for row in results['rows']:
        diff = row.get('max_rel_diff')
        lines.append(
            f"| {row['group']} | {row['name']} | "
            f"{_with_spread(row['median_s'], row.get('spread'))} | {row['gflops']:.0f} | "
            f"{row['peak_fraction']:.0%} | {_fmt_memory(row)} | "
            f"{'' if diff is None else f'{diff:.1e}'} |")
    return '\n'.join(lines)


def format_summary(summary: Sequence[Dict], goals: Sequence[Dict]) -> str:
    """Ratios per group (of the medians, and per round with its spread) and the goal verdicts."""
    lines = ['| group | ours s (spread) | Hugging Face s (spread) | ratio | '
             'ratio per round (spread) | notes |', '|---|---|---|---|---|---|']
    for entry in summary:
        if 'cp_time_ratio' in entry:
            memory, rss = entry.get('cp_memory_ratio'), entry.get('cp_peak_rss_ratio')
            notes = (f"with_cp time x{entry['cp_time_ratio']:.2f}"
                     + ('' if memory is None else f", step memory x{memory:.2f}")
                     + ('' if rss is None else f", process peak RSS x{rss:.2f}"))
            lines.append(f"| {entry['group']} | | | | | {notes} |")
            continue
        hf = entry.get('huggingface_s')
        ratio = entry.get('ratio_vs_huggingface')
        per_round = entry.get('round_ratio_vs_huggingface')
        others = ', '.join(f"{p} x{entry[f'ratio_vs_{p}']:.2f}" for p in ('timm', 'mmpretrain')
                           if f'ratio_vs_{p}' in entry)
        modes = f"ours {entry['ours_mode']}" + (f", HF {entry['huggingface_mode']}" if hf else '')
        if 'route_s' in entry:
            kind = ('training matmul routes' if entry.get('route_kind') == 'train_route'
                    else 'MLP routes')
            modes += f"; {kind}: " + ', '.join(f'{route} {seconds:.3f} s' for route, seconds
                                               in entry['route_s'].items())
            if 'route_hint' in entry:
                modes += f"; faster here than the default route: {entry['route_hint']}"
        ours = _with_spread(entry['ours_s'], entry.get('ours_spread'))
        hf_text = '' if hf is None else _with_spread(hf, entry.get('huggingface_spread'))
        round_text = ('' if per_round is None else _with_spread(
            per_round, entry.get('round_ratio_vs_huggingface_spread')))
        lines.append(f"| {entry['group']} | {ours} | {hf_text} | "
                     f"{'' if ratio is None else f'{ratio:.3f}'} | {round_text} | "
                     f"{modes}{'; ' + others if others else ''} |")
    if goals:
        lines += ['', '| goal | value | limit | met |', '|---|---|---|---|']
        lines += [f"| {g['group']}: {g['metric']} | {g['value']:.3f} | {g['limit']} | "
                  f"{'yes' if g['met'] else 'NO'} |" for g in goals]
    return '\n'.join(lines)


def format_machine(results: Dict) -> str:
    """One line: processor, ISA and bf16 support, cores and threads, torch, load, matmul peaks."""
    machine = results['machine']
    peaks = ', '.join(f"{dtype} {peak['gflops']:.0f} GFLOP/s"
                      + (f" ({peak['library']})" if 'library' in peak else '')
                      for dtype, peak in results.get('matmul_peak', {}).items())
    load = machine.get('load_average', ())
    after = machine.get('load_average_after', ())
    isa = (f"{machine.get('cpu_capability', '?')}, bf16 "
           f"{'native' if machine.get('native_bf16') else 'emulated'}, flags "
           f"{' '.join(machine.get('cpu_flags', ())) or 'none'}"
           + (f", wide-block MLP {machine['wide_mlp_route']}" if 'wide_mlp_route' in machine
              else '')
           + (f", training matmuls {machine['train_matmul_route']}"
              if 'train_matmul_route' in machine else ''))
    per_core = machine.get('threads_per_core')
    parts = [f"{machine.get('gpu') or machine['processor']} ({isa})",
             f"{machine['cores']} logical CPUs"
             f"{'' if per_core is None else f' ({per_core} per core)'}, "
             f"{machine['threads']} threads",
             f"torch {machine['torch']}"]
    if peaks:  # only runs that time the backbone measure it
        parts.append(f'matmul peak {peaks}')
    if load:
        parts.append(f"load average {' '.join(f'{x:.1f}' for x in load)} before"
                     + (f", {' '.join(f'{x:.1f}' for x in after)} after" if after else ''))
    parts.append(f"clock {results.get('clock', 'wall')}")
    if machine.get('malloc'):
        parts.append(machine['malloc'])
    return '; '.join(parts)


def check_json_path(path: Optional[str]) -> None:
    """Fail before a run, not after it, when :func:`write_json` could not write ``path``.

    Raises:
        ValueError: ``path`` is a directory, or no file can be created in its folder (or in the
            nearest existing folder above it, where the missing ones would be made).
    """
    if path is None:
        return
    if os.path.isdir(path):
        raise ValueError(f"json file '{path}' is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder):
        if os.path.exists(folder):
            raise ValueError(f"json file '{path}': {folder} is a file, not a folder")
        folder = os.path.dirname(folder)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"json file '{path}' cannot be written in {folder}: "
                         f'{error.strerror}') from None


def write_json(results: Dict, path: Optional[str]) -> None:
    """Write ``results`` to ``path`` atomically (directories created); nothing when it is None."""
    if path is None:
        return
    write_bytes(path, json.dumps(results, indent=1, default=str).encode('utf-8'))


WHOLE_MODEL_COLUMNS = (
    'whole model', 'step', 'size', 'ours s (spread)', 'Hugging Face backbone s (spread)', 'ratio',
    'ratio per round (spread)', 'in the backbone s: ours / HF', 'rest s: ours / HF', 'rest ratio',
    'same head work', 'same outputs')


def format_whole_model_table(rows: Sequence[Dict]) -> str:
    """Whole-model results (:func:`~.whole_model.run_whole_models`) as a Markdown table."""
    lines = ['| ' + ' | '.join(WHOLE_MODEL_COLUMNS) + ' |',
             '|' + '---|' * len(WHOLE_MODEL_COLUMNS)]
    return '\n'.join(lines + [format_whole_model_row(row) for row in rows])


def format_whole_model_row(row: Dict) -> str:
    """One whole-model result as a Markdown table row (peer columns empty without a peer)."""
    peer = 'huggingface_s' in row
    hf = _with_spread(row['huggingface_s'], row['huggingface_spread']) if peer else ''
    ratio = f"{row['ratio']:.3f}" if peer else ''
    round_ratio = _with_spread(row['round_ratio'], row['round_ratio_spread']) if peer else ''
    backbone = f"{row['ours_backbone_s']:.3f}" + (
        f" / {row['huggingface_backbone_s']:.3f}" if peer else '')
    rest = f"{row['ours_rest_s']:.3f}" + (f" / {row['huggingface_rest_s']:.3f}" if peer else '')
    rest_ratio = f"{row['rest_ratio']:.3f}" if peer else ''
    return (f"| {row['task']} | {row['mode']} | {row['size'][0]}x{row['size'][1]} | "
            f"{_with_spread(row['ours_s'], row['ours_spread'])} | {hf} | {ratio} | "
            f"{round_ratio} | "
            f"{backbone} | {rest} | {rest_ratio} | {row.get('same_head_work', '')} "
            f"{row['work'].get('ours') or ''} | {row.get('same_outputs', '')} |")
