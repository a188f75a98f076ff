"""tools/benchmark.py --roi-align: both ops timed on the same boxes, their results compared."""
import json

import pytest

from convnext_dense.extras.benchmark import roi_align_speed
from tool_modules import load_tool

TINY = dict(maps=(2, 8, 12, 16), rois=20, output_size=(7, 7), sides=(4, 40))


def test_rows_time_both_ops_and_compare_their_results(monkeypatch):
    monkeypatch.setitem(roi_align_speed.CASES, 'tiny', TINY)
    rows = roi_align_speed.run_roi_align_speed(['tiny'], repeats=3, warmup=0, clock='cpu')
    assert [row['mode'] for row in rows] == ['forward', 'train']
    for row in rows:
        assert row['mmcv_s'] > 0 and row['ours_s'] > 0 and row['ratio'] > 0
        assert row['max_difference'] < 1e-5  # the same pooling, to float rounding
        assert row['rois'] == 20 and row['maps'] == [2, 8, 12, 16]
    table = roi_align_speed.format_rows(rows)
    assert table.count('\n') == 3 and '| tiny | 2x8x12x16 | 20 | 7x7 | train |' in table


def test_boxes_lie_on_their_maps():
    rois = roi_align_speed.random_rois(200, 3, 12, 16, (4, 40))
    assert set(rois[:, 0].tolist()) <= {0., 1., 2.}
    sides = rois[:, 3:] - rois[:, 1:3]
    assert (sides >= 4).all() and (sides <= 40).all()
    assert (rois[:, 1] >= 0).all() and (rois[:, 1] <= 16 * roi_align_speed.STRIDE).all()


def test_cli_writes_the_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(roi_align_speed.CASES, 'tiny', TINY)
    tool = load_tool('benchmark')
    out = tmp_path / 'roi.json'
    assert tool.main(['--tasks', '--roi-align', 'tiny', '--repeats', '2', '--clock', 'cpu',
                      '--json', str(out)]) == 0
    results = json.loads(out.read_text())
    assert [row['case'] for row in results['roi_align']] == ['tiny', 'tiny']
    assert 'cpu_capability' in results['machine']
    assert '| tiny |' in capsys.readouterr().out


def test_cli_refuses_an_unknown_case(capsys):
    with pytest.raises(SystemExit):
        load_tool('benchmark').parse_args(['--roi-align', 'demo_box'])
    assert "invalid choice: 'demo_box'" in capsys.readouterr().err
