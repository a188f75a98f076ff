"""Pieces of `make demo`: summary line, tool output filtering, scalars and plots."""
import json
from pathlib import Path

import numpy as np
import pytest

from convnext_dense.extras.demo import plots, runs, summary


# ---- summary line -------------------------------------------------------------------------

def test_summary_line_format_and_round_trip():
    line = summary.format_summary(0.41234, 0.4, 72.345)
    assert line == 'demo: bbox_mAP=0.412 segm_mAP=0.400 mIoU=72.34' or \
        line == 'demo: bbox_mAP=0.412 segm_mAP=0.400 mIoU=72.35'
    assert summary.parse_summary(line) == pytest.approx(
        dict(bbox_mAP=0.412, segm_mAP=0.4, mIoU=72.345), abs=0.006)


@pytest.mark.parametrize('args, error', [
    ((1.2, 0.3, 50.0), ValueError),   # AP above 1: a percentage passed by mistake
    ((0.3, -0.1, 50.0), ValueError),
    ((0.3, 0.3, 0.7e3), ValueError),
    ((0.3, 0.3, float('nan')), TypeError),
    ((0.3, '0.3', 50.0), TypeError),
])
def test_summary_rejects_values_out_of_range(args, error):
    with pytest.raises(error, match='mAP|mIoU'):
        summary.format_summary(*args)


def test_summary_from_tool_metrics_and_missing_key():
    det = {'coco/bbox_mAP': 0.5, 'coco/segm_mAP': 0.45, 'coco/bbox_mAP_50': 0.8}
    seg = {'aAcc': 95.0, 'mIoU': 70.0, 'mAcc': 80.0}
    line = summary.summary_from_metrics(det, seg)
    assert line == 'demo: bbox_mAP=0.500 segm_mAP=0.450 mIoU=70.00'
    assert summary.below_thresholds(line) == {}
    assert summary.below_thresholds('demo: bbox_mAP=0.100 segm_mAP=0.300 mIoU=59.00') == {
        'bbox_mAP': 0.1, 'mIoU': 59.0}
    with pytest.raises(KeyError, match='coco/segm_mAP'):
        summary.summary_from_metrics({'coco/bbox_mAP': 0.5}, seg)
    with pytest.raises(ValueError, match='not a demo summary line'):
        summary.parse_summary('demo: bbox_mAP=0.1')


# ---- running tools --------------------------------------------------------------------------

@pytest.mark.parametrize('line, shown', [
    ('11/26 22:34:08 - mmengine - INFO - Iter(train) [10/60]  lr: 1e-4  loss: 1.5', True),
    ('11/26 22:37:53 - mmengine - INFO - Iter(val) [100/100]    aAcc: 82.8  mIoU: 16.56', True),
    ('11/26 22:37:53 - mmengine - INFO - bbox_mAP_copypaste: 0.412 0.7 0.4 0.2 0.5 0.6', True),
    ('|   circle   | 12.66 | 18.65 |', True),
    ('11/26 22:33:41 - mmengine - INFO - Config:', False),
    ("model = dict(type='MaskRCNN',", False),
    ('    sys.platform: linux', False),
])
def test_progress_lines(line, shown):
    assert runs.is_progress_line(line) is shown


def test_cfg_options_format_and_unsafe_values():
    assert runs.format_cfg_options({}) == []
    assert runs.format_cfg_options({'train_cfg.max_iters': 2, 'a.b': Path('/x y/z'),
                                    'l': [1, 2]}) == [
        '--cfg-options', 'train_cfg.max_iters=2', 'a.b=/x y/z', 'l=[1,2]']
    with pytest.raises(ValueError, match='comma'):
        runs.format_cfg_options({'data_root': '/tmp/a,b'})


def test_run_tool_keeps_log_echoes_progress_and_reports_failure(tmp_path):
    tool = tmp_path / 'tool.py'
    tool.write_text(
        'import sys\n'
        "print('config dump line')\n"
        "print('01/01 00:00:00 - mmengine - INFO - Iter(train) [1/2]  loss: 1.0')\n"
        'sys.exit(int(sys.argv[1]))\n')
    shown = []
    runs.run_tool(tool, ['0'], tmp_path / 'logs' / 'ok.log', shown.append)
    assert shown == ['01/01 00:00:00 - mmengine - INFO - Iter(train) [1/2]  loss: 1.0']
    assert 'config dump line' in (tmp_path / 'logs' / 'ok.log').read_text()
    with pytest.raises(RuntimeError, match=r'exited with status 3(.|\n)*config dump line'):
        runs.run_tool(tool, ['3'], tmp_path / 'logs' / 'bad.log')


def test_last_checkpoint_and_test_metrics(tmp_path):
    with pytest.raises(FileNotFoundError, match='last_checkpoint'):
        runs.last_checkpoint(tmp_path)
    (tmp_path / 'iter_4.pth').write_bytes(b'x')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    assert runs.last_checkpoint(tmp_path) == tmp_path / 'iter_4.pth'
    with pytest.raises(FileNotFoundError, match='test metrics'):
        runs.read_test_metrics(tmp_path)
    for stamp, value in (('20240101_000000', 0.1), ('20240102_000000', 0.2)):
        (tmp_path / stamp).mkdir()
        (tmp_path / stamp / f'{stamp}.json').write_text(json.dumps({'mIoU': value}))
    assert runs.read_test_metrics(tmp_path) == {'mIoU': 0.2}  # the newest run


# ---- scalars and pictures -------------------------------------------------------------------

def _write_scalars(work_dir: Path, stamp: str, records):
    folder = work_dir / stamp / 'vis_data'
    folder.mkdir(parents=True)
    (folder / 'scalars.json').write_text(''.join(json.dumps(r) + '\n' for r in records))


def test_read_scalars_merges_runs_and_series_takes_the_last_value(tmp_path):
    _write_scalars(tmp_path, '20240101_000000', [
        {'loss': 2.0, 'iter': 10, 'step': 10}, {'loss': 1.5, 'iter': 20, 'step': 20},
        {'mIoU': 30.0, 'step': 20}])
    _write_scalars(tmp_path, '20240102_000000', [  # resumed from iteration 20
        {'loss': 1.4, 'iter': 20, 'step': 20}, {'loss': 1.0, 'iter': 30, 'step': 30}])
    records = plots.read_scalars(tmp_path)
    steps, losses = plots.series(records, 'loss')
    assert steps.tolist() == [10, 20, 30] and losses.tolist() == [2.0, 1.4, 1.0]
    assert plots.series(records, 'mIoU')[1].tolist() == [30.0]
    assert len(plots.series(records, 'absent')[0]) == 0
    with pytest.raises(FileNotFoundError):
        plots.read_scalars(tmp_path / 'nothing')


def test_smooth_is_a_trailing_running_mean():
    values = np.array([1.0, 3.0, 5.0, 7.0, 20.0])
    expected = [np.mean(values[max(0, i - 2):i + 1]) for i in range(len(values))]
    np.testing.assert_allclose(plots.smooth(values, 3), expected)
    np.testing.assert_allclose(plots.smooth(values, 1), values)
    with pytest.raises(ValueError, match='window'):
        plots.smooth(values, 0)


def test_plot_curves_and_gallery_write_pngs(tmp_path):
    import cv2
    records = [{'loss': 1.0 / (i + 1), 'step': i} for i in range(1, 30)]
    records += [{'mIoU': 10.0 * i, 'step': 10 * i} for i in range(1, 4)]
    out = plots.plot_curves([
        dict(title='losses', records=records, keys=('loss', 'missing'), smooth=3),
        dict(title='metric', records=records, keys=('mIoU',))], tmp_path / 'c' / 'curves.png')
    image = cv2.imread(str(out))
    assert image is not None and image.shape[1] > image.shape[0] > 100
    tiles = []
    for i, size in enumerate((40, 60)):
        tile = tmp_path / f'tile{i}.png'
        cv2.imwrite(str(tile), np.full((size, size + 10, 3), 60 * i, np.uint8))
        tiles.append(tile)
    gallery = plots.plot_gallery([('a', tiles), ('b', tiles[::-1])], tmp_path / 'g.png')
    assert cv2.imread(str(gallery)) is not None
    with pytest.raises(ValueError, match='same, non-zero number'):
        plots.plot_gallery([('a', tiles), ('b', tiles[:1])], tmp_path / 'bad.png')
