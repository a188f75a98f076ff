"""tools/benchmark.py --onnx: onnxruntime against eager on the same module (not a timed test)."""
import pytest

from convnext_dense.benchmark.onnx_speed import format_rows, run_onnx_speed


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
