"""The CPU benchmark tool runs (tiny sizes; no timing is asserted) and its parts do their job."""
import json
import os
import os.path as osp
import statistics
import subprocess
import sys

import pytest
import torch

import convnext_dense.cpu_fast_paths.cpu_support as cpu_support
import convnext_dense.cpu_fast_paths.fused_ops as fused_ops
from convnext_dense import ConvNeXt
from convnext_dense.extras.benchmark.cases import Case, build_model, make_images, make_step, prepare
from convnext_dense.extras.benchmark.flops import count_macs
from convnext_dense.extras.benchmark.memory import measure_step_memory
from convnext_dense.extras.benchmark.report import (check_goals, format_machine, format_summary,
                                                    format_table, write_json)
from convnext_dense.extras.benchmark.runner import (BenchmarkConfig, _group_name, _peak_key,
                                                   plan_groups, summarize)
from convnext_dense.extras.benchmark.timing import Timing, per_round_ratios, time_interleaved
from convnext_dense.runtime.allocator import OPT_OUT_VARIABLE, reason_to_leave_alone
from failing_writes import assert_a_dying_write_keeps
from tool_modules import load_tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
from tiny import TINY_ARCH as TINY
def test_benchmark_cli_writes_table_and_json(tmp_path):
    out = tmp_path / 'bench.json'
    result = subprocess.run(
        [sys.executable, 'tools/benchmark.py', '--arch', json.dumps(TINY), '--sizes', '64x96',
         '--repeats', '1', '--warmup', '0', '--precisions', 'fp32',
         '--variants', 'eager', 'with_cp', 'mlp_routes', '--matmul-shapes', '256x256x256',
         '--json', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '| infer fp32 eager 64x96 |' in result.stdout
    results = json.loads(out.read_text())
    assert results['macs']['64x96'] == count_macs(ConvNeXt(TINY), (1, 3, 64, 96))
    groups = {entry['group']: entry for entry in results['summary']}
    assert 'ratio_vs_huggingface' in groups['train fp32 eager 64x96']
    assert 'cp_time_ratio' in groups['train fp32 with_cp 64x96']
    routes = groups['infer fp32 mlp_routes 64x96']
    assert list(routes['route_s']) == list(cpu_support.MLP_ROUTES)
    assert all(seconds > 0 for seconds in routes['route_s'].values())
    assert 'MLP routes: onednn ' in result.stdout and 'onednn_separate_gelu ' in result.stdout
    infer = [row for row in results['rows'] if row['case']['task'] == 'infer']
    assert infer and all(row['agrees'] for row in infer)
    assert results['command'].startswith('python tools/benchmark.py --arch {')
    machine = results['machine']  # what makes figures from different CPUs comparable
    assert machine['cpu_capability'] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(machine['native_bf16'], bool) and isinstance(machine['cpu_flags'], list)
    assert f"({machine['cpu_capability']}, bf16 " in result.stdout
    assert machine['wide_mlp_route'] in cpu_support.MLP_ROUTES and machine['cpu_vendor']
    assert machine['train_matmul_route'] == cpu_support.train_matmul_route()
    assert f"training matmuls {machine['train_matmul_route']}" in result.stdout
    # the allocator setting tools/train.py uses on CPU, shared by all implementations
    reason = reason_to_leave_alone(dict(os.environ, **{OPT_OUT_VARIABLE: 'keep'}))
    said = ('glibc malloc keeps freed memory' if reason is None
            else f'malloc left as it is: {reason}')
    assert machine['malloc'].startswith(said) and machine['malloc'] in result.stdout


@pytest.mark.parametrize('default,separate_s,blas_s,hint', [
    ('onednn', 1.0, 0.90, 'CONVNEXT_DENSE_MLP_ROUTE=blas'),  # e.g. an EPYC where BLAS won
    ('onednn', 1.0, 0.97, None),  # within the margin: no advice from noise
    ('blas', 1.0, 0.90, None),  # the default already is the faster one
    ('blas', 1.0, 1.10, 'CONVNEXT_DENSE_MLP_ROUTE=onednn'),
    ('onednn', 0.85, 0.90, 'CONVNEXT_DENSE_MLP_ROUTE=onednn_separate_gelu'),  # the fastest
    ('onednn_separate_gelu', 1.10, 1.20, 'CONVNEXT_DENSE_MLP_ROUTE=onednn'),
])
def test_mlp_routes_summary_names_the_setting_for_a_faster_route(default, separate_s, blas_s,
                                                                 hint):
    def row(route, seconds):
        case = dict(impl='ours', precision='fp32', mlp_route=route)
        return dict(group='infer fp32 mlp_routes 512x512', case=case, median_s=seconds)
    results = dict(machine=dict(wide_mlp_route=default),
                   rows=[row('onednn', 1.0), row('onednn_separate_gelu', separate_s),
                         row('blas', blas_s)])
    entry, = summarize(results)
    assert entry.get('route_hint') == hint
    table = format_summary([entry], [])
    assert (f'faster here than the default route: {hint}' in table) is (hint is not None)
    assert (f'MLP routes: onednn 1.000 s, onednn_separate_gelu {separate_s:.3f} s, '
            f'blas {blas_s:.3f} s') in table


def test_with_cp_step_needs_less_memory():
    plain = measure_step_memory(Case('ours', 'train', 'fp32', (512, 512)), TINY)
    checkpointed = measure_step_memory(Case('ours', 'train', 'fp32', (512, 512), with_cp=True),
                                       TINY)
    assert plain['peak_reset'] and checkpointed['peak_reset']
    assert 0 < checkpointed['step_mib'] < 0.8 * plain['step_mib']


def test_flops_are_mmengines_count_of_the_plain_path():
    from mmengine.analysis import FlopAnalyzer
    model = ConvNeXt(TINY).eval()
    expected = FlopAnalyzer(model, (torch.zeros(1, 3, 64, 64),)).total()
    assert count_macs(model, (1, 3, 64, 64)) == expected > 0


def test_interleaved_timing_alternates_order():
    order = []
    timings = time_interleaved({'a': lambda: order.append('a'), 'b': lambda: order.append('b')},
                               repeats=3, warmup=1)
    assert order == ['a', 'b', 'a', 'b', 'b', 'a', 'a', 'b']
    assert all(len(t.times) == 3 and t.median >= 0 for t in timings.values())
    with pytest.raises(ValueError, match='repeats'):
        time_interleaved({'a': lambda: None}, repeats=0)
    with pytest.raises(ValueError, match='repeats must be a positive int, got True'):
        time_interleaved({'a': lambda: None}, repeats=True)
    with pytest.raises(ValueError, match='warmup must be an int >= 0, got False'):
        time_interleaved({'a': lambda: None}, repeats=1, warmup=False)


def test_per_round_ratios_cancel_a_slowdown_both_sides_share():
    # The machine runs 1.5x slower in the last two rounds: each side's spread shows it, the
    # rounds' ratios do not.
    ours, peer = Timing([0.9, 0.9, 0.9, 1.35, 1.35]), Timing([1.0, 1.0, 1.0, 1.5, 1.5])
    ratios = per_round_ratios(ours, peer)
    assert ratios.times == pytest.approx([0.9] * 5)
    assert ratios.spread < 1e-9 < ours.spread
    with pytest.raises(ValueError, match='cannot pair 5 rounds with 2'):
        per_round_ratios(ours, Timing([1.0, 1.0]))


def test_summary_pairs_the_best_modes_round_by_round_and_prints_the_spreads():
    # Rounds 3 and 4 ran 1.5x slower on both sides: each side's spread shows it, the rounds'
    # ratios do not. HF's best mode is its cast, ours its autocast: those two are paired.
    def row(impl, precision, times):
        timing = Timing(times)
        return dict(group='infer bf16 eager 512x512', name=f'{impl}/{precision}',
                    case=dict(impl=impl, precision=precision), median_s=timing.median,
                    spread=timing.spread, times_s=times, gflops=1.0, peak_fraction=0.5)
    results = dict(machine={}, rows=[
        row('ours', 'bf16-autocast', [0.8, 0.8, 1.2, 1.2, 0.8]),
        row('ours', 'bf16-cast', [0.9, 0.9, 1.35, 1.35, 0.9]),
        row('huggingface', 'bf16-autocast', [1.1, 1.1, 1.65, 1.65, 1.1]),
        row('huggingface', 'bf16-cast', [1.0, 1.0, 1.5, 1.5, 1.0])])
    entry, = summarize(results)
    assert (entry['ours_mode'], entry['huggingface_mode']) == ('bf16-autocast', 'bf16-cast')
    assert entry['ratio_vs_huggingface'] == pytest.approx(0.8)
    assert entry['round_ratio_vs_huggingface'] == pytest.approx(0.8)
    assert entry['round_ratio_vs_huggingface_spread'] == pytest.approx(0.0)
    assert entry['ours_spread'] == pytest.approx(0.5) == entry['huggingface_spread']
    table = format_summary([entry], [])
    assert ('| infer bf16 eager 512x512 | 0.800 (50.0%) | 1.000 (50.0%) | 0.800 | 0.800 (0.0%) '
            '| ours bf16-autocast, HF bf16-cast |') in table
    assert '| 0.900 (50.0%) | 1 | 50% |' in format_table(results)
    results['rows'][3]['times_s'] = [1.0, 1.0]  # cannot be paired round by round
    assert 'round_ratio_vs_huggingface' not in summarize(results)[0]
    # rows without per-call times: no per-round ratio and no spread, nothing invented
    for r in results['rows']:
        del r['times_s'], r['spread']
    entry, = summarize(results)
    assert 'round_ratio_vs_huggingface' not in entry
    assert '| 0.800 (n/a) | 1.000 (n/a) | 0.800 |  | ours' in format_summary([entry], [])


@pytest.mark.parametrize('option, said', [
    (['--threads', '0'], "argument --threads: '0' is not a positive integer"),
    (['--threads', '-1'], "argument --threads: '-1' is not a positive integer"),
    (['--batch', '0'], 'batch 0 must be an int >= 1'),
    (['--sizes', '16'], 'size (16, 16) must be (height, width), each an int >= 32'),
    (['--peers', 'huggingfce'], "peers ['huggingfce'] not allowed"),
    (['--json', '{tmp}'], 'is a directory'),
    (['--json', '{tmp}/file.txt/bench.json'], 'is a file, not a folder'),
    (['--arch', 'notanarch'], "arch 'notanarch' is not a known ConvNeXt architecture"),
    (['--arch', '{"depths": [1, 1, 1]}'], 'lacks [\'channels\']'),
])
def test_benchmark_cli_refuses_bad_options_before_running(tmp_path, capsys, option, said):
    (tmp_path / 'file.txt').write_text('')
    option = [o.replace('{tmp}', str(tmp_path)) for o in option]
    with pytest.raises(SystemExit) as exit_info:
        load_tool('benchmark').parse_args(option)
    assert exit_info.value.code == 2  # an argparse error: usage and message, no traceback
    assert said in capsys.readouterr().err


def test_benchmark_json_that_dies_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / 'bench.json'
    out.write_text('{"old": 1}')
    assert_a_dying_write_keeps(out, lambda: write_json({'new': 2}, str(out)), monkeypatch)
    assert [p.name for p in tmp_path.iterdir()] == ['bench.json']


def test_spread_is_unknown_under_four_calls_not_zero():
    assert Timing([1.0, 2.0, 3.0]).spread is None
    assert Timing([1.0, 1.0, 2.0, 2.0]).spread == pytest.approx((2.0 - 1.0) / 1.5)


def test_machine_line_says_only_what_was_measured():
    machine = dict(processor='Some CPU', cpu_capability='AVX2', native_bf16=False,
                   cpu_flags=['avx2'], cores=2, threads=1, threads_per_core=2, torch='2.13.0',
                   load_average=[0.5, 0.3, 1.0])
    line = format_machine({'machine': machine, 'clock': 'cpu'})
    assert line == ('Some CPU (AVX2, bf16 emulated, flags avx2); 2 logical CPUs (2 per core), '
                    '1 threads; torch 2.13.0; load average 0.5 0.3 1.0 before; clock cpu')
    line = format_machine({'machine': dict(machine, load_average_after=[2.0, 1.0, 1.0],
                                           wide_mlp_route='blas'),
                           'matmul_peak': {'fp32': {'gflops': 101.4}}})
    assert line.startswith('Some CPU (AVX2, bf16 emulated, flags avx2, wide-block MLP blas); ')
    assert 'matmul peak fp32 101 GFLOP/s; load average 0.5 0.3 1.0 before, 2.0 1.0 1.0 after' \
        in line and line.endswith('; clock wall')
    line = format_machine({'machine': dict(machine, malloc='malloc left as it is: why')})
    assert line.endswith('; clock wall; malloc left as it is: why')


def test_plan_and_goals():
    config = BenchmarkConfig(sizes=((512, 512), (800, 1216)), variants=('eager', 'with_cp'))
    groups = plan_groups(config, ['ours', 'huggingface'])
    names = [(g.task, g.family, g.variant, g.size) for g in groups]
    assert ('infer', 'fp32', 'with_cp', (512, 512)) not in names  # checkpointing is for training
    bf16_infer = next(g for g in groups if g.task == 'infer' and g.family == 'bf16')
    assert {c.precision for c in bf16_infer.cases} == {'bf16-autocast', 'bf16-cast'}
    cp = next(g for g in groups if g.variant == 'with_cp' and g.family == 'fp32')
    assert [c.label() for c in cp.cases] == ['ours', 'ours+with_cp']  # HF has no checkpointing
    goals = check_goals([{'group': 'infer fp32 eager 512x512', 'ratio_vs_huggingface': 0.95},
                         {'group': 'train fp32 with_cp 800x1216', 'cp_time_ratio': 1.2,
                          'cp_memory_ratio': 0.3}])
    assert [(g['metric'], g['met']) for g in goals] == [
        ('ratio_vs_huggingface', False), ('cp_memory_ratio', True), ('cp_time_ratio', True)]
    bf16 = [{'group': 'infer bf16 eager 512x512', 'ratio_vs_huggingface': 0.9}]
    assert not check_goals(bf16, native_bf16=True)[0]['met']  # bf16 kernels: <= 0.80
    assert check_goals(bf16, native_bf16=False)[0]['met']  # emulated: no slower than the peer
    with pytest.raises(ValueError, match='variants'):
        BenchmarkConfig(variants=('fast',))
    with pytest.raises(ValueError, match="precision 'bf16-cast' is for inference"):
        Case('ours', 'train', 'bf16-cast', (64, 64))


def test_mlp_routes_variant_times_each_route_of_ours_beside_the_peers(monkeypatch):
    config = BenchmarkConfig(variants=('mlp_routes',))
    groups = plan_groups(config, ['ours', 'huggingface'])
    assert [(g.task, g.family) for g in groups] == [('infer', 'fp32')]  # the fused path's case
    assert [c.label() for c in groups[0].cases] == [
        'ours+onednn_mlp', 'ours+onednn_separate_gelu_mlp', 'ours+blas_mlp', 'huggingface']
    for bad in (dict(mlp_route='mkl'), dict(mlp_route='blas', impl='huggingface'),
                dict(mlp_route='blas', task='train')):
        with pytest.raises(ValueError, match='mlp_route'):
            Case(**{**dict(impl='ours', task='infer', precision='fp32', size=(64, 64)), **bad})
    calls = []
    original = fused_ops.blas_mlp_chunk
    monkeypatch.setattr(fused_ops, 'blas_mlp_chunk', lambda *a: calls.append(1) or original(*a))
    case = Case('ours', 'infer', 'fp32', (64, 64), mlp_route='blas')
    step = make_step(prepare(ConvNeXt(TINY), case), case, make_images(case))
    step()
    assert len(calls) == sum(TINY['depths'])


@pytest.mark.slow
def test_whole_model_segmenter_runs(tmp_path):
    from convnext_dense.extras.benchmark.whole_model import run_whole_models
    rows = run_whole_models(['segmenter'], [(64, 64)], modes=('infer',), repeats=2, warmup=0,
                            clock='cpu')
    row = rows[0]
    assert row['task'] == 'segmenter' and row['ours_s'] > 0 and row['ratio'] > 0
    assert len(row['ours_times_s']) == len(row['huggingface_times_s']) == 2
    assert row['ours_spread'] is None  # two rounds: no quartiles
    assert row['same_head_work'] and row['clock'] == 'cpu' and row['same_outputs']
    for side in ('ours', 'huggingface'):  # each step split into the backbone and the rest
        assert 0 < row[f'{side}_backbone_s'] < max(row[f'{side}_times_s'])
        assert row[f'{side}_rest_s'] > 0
    assert row['rest_ratio'] > 0
    rounds = [a / b for a, b in zip(row['ours_times_s'], row['huggingface_times_s'])]
    assert row['round_ratio'] == pytest.approx(statistics.median(rounds))


@pytest.mark.slow
def test_whole_model_detector_records_its_head_work():
    from convnext_dense.extras.benchmark.whole_model import run_whole_models
    row = run_whole_models(['detector'], [(64, 96)], modes=('infer',), repeats=1, warmup=0)[0]
    assert row['work']['ours']['detections'] == 2 * 100  # max_per_img for each of 2 images
    assert row['same_head_work'], row['work']  # same weights, so the same detections kept
    # ... and the same scores: Hugging Face's channels-last-strided maps reach mmcv's RoIAlign
    # contiguous (given as they are, its scores differed).
    assert row['same_outputs']


class _Ticks:
    """A clock that only the toy model below moves: each part adds its own number of ticks."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Tick(torch.autograd.Function):
    """Identity that moves the clock by ``forward_ticks`` and, in backward, ``backward_ticks``."""

    @staticmethod
    def forward(ctx, x, clock, forward_ticks, backward_ticks):
        clock.now += forward_ticks
        ctx.clock, ctx.backward_ticks = clock, backward_ticks
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        ctx.clock.now += ctx.backward_ticks
        return grad, None, None, None


def test_backbone_clock_splits_a_step_into_backbone_and_rest():
    from convnext_dense.extras.benchmark.whole_model import BackboneClock
    clock = _Ticks()

    class Backbone(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(3))

        def forward(self, x):  # forward 3 ticks, backward 7, two output maps
            y = _Tick.apply(x * self.weight, clock, 3.0, 7.0)
            return y, 2 * y

    backbone = Backbone()
    backbone_clock = BackboneClock(backbone, clock)
    for training, expected in ((False, 3.0), (True, 3.0 + 7.0)):
        clock.now = 100.0 if training else 0.0  # readings are relative to the step

        def step():
            with torch.set_grad_enabled(training):
                maps = backbone(torch.ones(3))
                out = _Tick.apply(maps[0] + maps[1], clock, 5.0, 11.0)  # the "heads"
                if training:
                    out.sum().backward()

        backbone_clock.timed(step)()
        assert backbone_clock.times[-1] == backbone_clock.seconds() == expected
        total = (3 + 5 + 7 + 11) if training else (3 + 5)
        assert clock.now - (100.0 if training else 0.0) == total
    assert backbone_clock.times == [3.0, 10.0]


def test_whole_model_row_prints_the_backbone_and_the_rest_per_side():
    from convnext_dense.extras.benchmark.report import (WHOLE_MODEL_COLUMNS,
                                                        format_whole_model_row,
                                                        format_whole_model_table)
    row = {'task': 'detector', 'mode': 'infer', 'size': [512, 512], 'work': {'ours': {}},
           'ours_s': 10.0, 'ours_spread': 0.02, 'ours_backbone_s': 2.0, 'ours_rest_s': 8.0}
    assert format_whole_model_row(row).startswith(
        '| detector | infer | 512x512 | 10.000 (2.0%) |  |  |  | 2.000 | 8.000 |  |')
    row.update(huggingface_s=11.0, huggingface_spread=0.03, huggingface_backbone_s=2.5,
               huggingface_rest_s=8.5, ratio=10 / 11, round_ratio=0.95, round_ratio_spread=0.012,
               rest_ratio=8 / 8.5, same_head_work=True, same_outputs=True)
    row['work']['ours'] = {'detections': 200}
    assert format_whole_model_row(row) == (
        "| detector | infer | 512x512 | 10.000 (2.0%) | 11.000 (3.0%) | 0.909 | 0.950 (1.2%) | "
        "2.000 / 2.500 | 8.000 / 8.500 | 0.941 | True {'detections': 200} | True |")
    table = format_whole_model_table([row]).splitlines()
    assert len(table) == 3 and table[2] == format_whole_model_row(row)
    assert all(line.count('|') == len(WHOLE_MODEL_COLUMNS) + 1 for line in table)
    # Three rounds have no quartiles: the table says so instead of a 0.0 % spread.
    row.update(ours_spread=None, huggingface_spread=None, round_ratio_spread=None)
    assert format_whole_model_row(row).startswith(
        '| detector | infer | 512x512 | 10.000 (n/a) | 11.000 (n/a) | 0.909 | 0.950 (n/a) |')


def test_drop_path_option_trains_every_implementation_with_the_same_schedule():
    config = BenchmarkConfig(tasks=('infer', 'train'), precisions=('fp32',), drop_path_rate=0.6)
    groups = plan_groups(config, ['ours', 'huggingface'])
    rates = {(g.task, c.impl): c.drop_path_rate for g in groups for c in g.cases}
    assert rates == {('infer', 'ours'): 0.0, ('infer', 'huggingface'): 0.0,
                     ('train', 'ours'): 0.6, ('train', 'huggingface'): 0.6}
    train = next(g for g in groups if g.task == 'train')
    assert _group_name(train) == 'train fp32 eager 512x512 drop path 0.6'
    assert train.cases[0].label() == 'ours+drop_path0.6'
    ours = build_model('ours', TINY, drop_path_rate=0.6)
    peer = build_model('huggingface', TINY, drop_path_rate=0.6)
    ours_rates = [block.drop_path_rate for stage in ours.stages for block in stage]
    peer_rates = [getattr(layer.drop_path, 'drop_prob', 0.0)  # an Identity where the rate is 0
                  for layer in peer.modules() if hasattr(layer, 'drop_path')]
    assert ours_rates == pytest.approx(peer_rates) and ours_rates[-1] == pytest.approx(0.6)
    for bad, match in ((dict(task='infer', drop_path_rate=0.5), 'for training only'),
                       (dict(drop_path_rate=1.0), r'in \[0, 1\)')):
        with pytest.raises(ValueError, match=match):
            Case(**{**dict(impl='ours', task='train', precision='fp32', size=(64, 64)), **bad})
    with pytest.raises(ValueError, match='drop_path_rate -0.1 is out of range'):
        BenchmarkConfig(drop_path_rate=-0.1)


def test_matmul_peak_is_the_best_of_torch_and_onednn_on_cpu(monkeypatch):
    from convnext_dense.extras.benchmark.matmul_peak import (matmul_gflops, matmul_libraries,
                                                             matmul_peak)
    peak = matmul_peak(shapes=[(128, 64, 96)], repeats=1)
    assert set(peak['by_library']) == set(matmul_libraries('cpu'))
    assert peak['gflops'] == max(peak['by_library'].values()) > 0
    assert peak['library'] == max(peak['by_library'], key=peak['by_library'].get)
    assert peak['by_shape'] == {'128x64x96': peak['gflops']}
    assert matmul_libraries('cuda') == ('torch',)
    # bf16 through oneDNN only where it has bf16 kernels (an AVX2-only CPU has none: it raised)
    monkeypatch.setattr(cpu_support, 'onednn_bf16', lambda: False)
    assert matmul_libraries('cpu', torch.bfloat16) == ('torch',)
    assert set(matmul_peak(torch.bfloat16, shapes=[(32, 16, 8)], repeats=1)['by_library']) == {
        'torch'}
    assert matmul_libraries('cpu', torch.float32) == matmul_libraries('cpu')
    monkeypatch.setattr(cpu_support, 'onednn_bf16', lambda: True)
    assert matmul_libraries('cpu', torch.bfloat16) == matmul_libraries('cpu')
    with pytest.raises(ValueError, match=r"library 'mkl' is not one of \('torch', 'onednn'\)"):
        matmul_gflops(8, 8, 8, library='mkl')
    line = format_machine({'machine': {'processor': 'cpu', 'cores': 2, 'threads': 1,
                                       'torch': torch.__version__},
                           'matmul_peak': {'float32': peak}})
    assert f"float32 {peak['gflops']:.0f} GFLOP/s ({peak['library']})" in line


@pytest.mark.parametrize('native', [True, False])
def test_rates_are_measured_against_the_peak_of_the_dtype_the_matmuls_run_in(monkeypatch, native):
    monkeypatch.setattr(cpu_support, 'native_bf16', lambda: native)
    size = (64, 64)
    # Without native bf16 ours computes a bf16 request in float32: its rate against float32's peak
    emulated = 'bfloat16' if native else 'float32'
    assert _peak_key(Case('ours', 'infer', 'bf16-cast', size), 'cpu') == emulated
    assert _peak_key(Case('ours', 'train', 'bf16-autocast', size), 'cpu') == emulated
    assert _peak_key(Case('huggingface', 'infer', 'bf16-cast', size), 'cpu') == 'bfloat16'
    assert _peak_key(Case('ours', 'infer', 'bf16-cast', size, compile=True), 'cpu') == 'bfloat16'
    assert _peak_key(Case('ours', 'infer', 'bf16-cast', size), 'cuda') == 'bfloat16'
    assert _peak_key(Case('ours', 'infer', 'fp32', size), 'cpu') == 'float32'
    assert _peak_key(Case('ours', 'infer', 'tf32', size), 'cuda') == 'tf32'
