"""The CPU benchmark tool runs (tiny sizes; no timing is asserted) and its parts do their job."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from convnext_dense import ConvNeXt
from convnext_dense.extras.benchmark.cases import Case
from convnext_dense.extras.benchmark.flops import count_macs
from convnext_dense.extras.benchmark.memory import measure_step_memory
from convnext_dense.extras.benchmark.report import check_goals
from convnext_dense.extras.benchmark.runner import BenchmarkConfig, plan_groups
from convnext_dense.extras.benchmark.timing import time_interleaved

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
from tiny import TINY_ARCH as TINY
def test_benchmark_cli_writes_table_and_json(tmp_path):
    out = tmp_path / 'bench.json'
    result = subprocess.run(
        [sys.executable, 'tools/benchmark.py', '--arch', json.dumps(TINY), '--sizes', '64x96',
         '--repeats', '1', '--warmup', '0', '--precisions', 'fp32',
         '--variants', 'eager', 'with_cp', '--matmul-shapes', '256x256x256', '--json', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '| infer fp32 eager 64x96 |' in result.stdout
    results = json.loads(out.read_text())
    assert results['macs']['64x96'] == count_macs(ConvNeXt(TINY), (1, 3, 64, 96))
    groups = {entry['group']: entry for entry in results['summary']}
    assert 'ratio_vs_huggingface' in groups['train fp32 eager 64x96']
    assert 'cp_time_ratio' in groups['train fp32 with_cp 64x96']
    infer = [row for row in results['rows'] if row['case']['task'] == 'infer']
    assert infer and all(row['agrees'] for row in infer)
    assert results['command'].startswith('python tools/benchmark.py --arch {')
    machine = results['machine']  # what makes figures from different CPUs comparable
    assert machine['cpu_capability'] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(machine['native_bf16'], bool) and isinstance(machine['cpu_flags'], list)
    assert f"({machine['cpu_capability']}, bf16 " in result.stdout


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


@pytest.mark.slow
def test_whole_model_segmenter_runs(tmp_path):
    from convnext_dense.extras.benchmark.whole_model import run_whole_models
    rows = run_whole_models(['segmenter'], [(64, 64)], modes=('infer',), repeats=2, warmup=0,
                            clock='cpu')
    row = rows[0]
    assert row['task'] == 'segmenter' and row['ours_s'] > 0 and row['ratio'] > 0
    assert len(row['ours_times_s']) == len(row['huggingface_times_s']) == 2
    assert row['ours_spread'] >= 0 and row['same_head_work'] and row['clock'] == 'cpu'
    assert row['same_outputs']


@pytest.mark.slow
def test_whole_model_detector_records_its_head_work():
    from convnext_dense.extras.benchmark.whole_model import run_whole_models
    row = run_whole_models(['detector'], [(64, 96)], modes=('infer',), repeats=1, warmup=0)[0]
    assert row['work']['ours']['detections'] == 2 * 100  # max_per_img for each of 2 images
    assert row['same_head_work'], row['work']  # same weights, so the same detections kept
    # ... and the same scores: Hugging Face's channels-last-strided maps reach mmcv's RoIAlign
    # contiguous (given as they are, its scores differed).
    assert row['same_outputs']
