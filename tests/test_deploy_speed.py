"""tools/benchmark.py --onnx: onnxruntime against eager on the same module (not a timed test)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from convnext_dense.extras.benchmark.onnx_speed import format_rows, run_onnx_speed

ROOT = Path(__file__).resolve().parents[1]


def test_onnx_speed_times_both_sides_at_one_thread_and_all_cores():
    rows = run_onnx_speed(['segmenter'], (64, 64), repeats=1, warmup=0, clock='cpu',
                          log=lambda line: None)
    assert len(rows) == 2 and rows[0]['threads'] == 1  # then all cores
    assert rows[0]['clock'] == 'cpu' and rows[-1]['clock'] == 'wall'
    for row in rows:
        assert row['eager_s'] > 0 and row['onnxruntime_s'] > 0
        assert row['ratio'] == pytest.approx(row['onnxruntime_s'] / row['eager_s'])
    assert '| segmenter | 128x128 |' in format_rows(rows)


def test_onnx_speed_refuses_an_unknown_target():
    with pytest.raises(ValueError, match=r"\['resnet'\] are not among"):
        run_onnx_speed(['resnet'], (64, 64), repeats=1, warmup=0, clock='cpu')


def test_benchmark_tool_onnx_option_writes_rows(tmp_path):
    out = tmp_path / 'onnx.json'
    result = subprocess.run(
        [sys.executable, 'tools/benchmark.py', '--tasks', '--onnx', 'segmenter', '--repeats', '1',
         '--warmup', '0', '--clock', 'cpu', '--json', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    results = json.loads(out.read_text())
    rows = results['onnx']
    assert [row['target'] for row in rows] == ['segmenter', 'segmenter']
    assert '| segmenter | 128x128 | 1 | cpu |' in result.stdout
    # Without backbone tasks the run still records the machine, with the load before and after.
    machine = results['machine']
    assert len(machine['load_average']) == len(machine['load_average_after']) == 3
    line = next(line for line in result.stdout.splitlines() if line.startswith('Machine: '))
    assert f"({machine['cpu_capability']}, bf16 " in line and ' after; clock cpu' in line
