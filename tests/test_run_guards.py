"""Non-finite losses stop training with a clear message; missing data and bad annotations are named."""
import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from convnext_dense.model.archs import BackboneArgumentError
from convnext_dense.runtime import cli_options, run
from convnext_dense.runtime.channel_checks import check_backbone_channels
from convnext_dense.runtime.data_checks import (DataError, check_data_paths,
                                                explain_annotation_errors)
from convnext_dense.weights.safe_load import load_state_file
from toy_runner import ToyModel, toy_runner

ROOT = Path(__file__).resolve().parents[1]


class ExplodingModel(ToyModel):
    """Loss turns NaN at the third iteration."""

    def forward(self, inputs, labels=None, mode='tensor'):
        out = super().forward(inputs, labels, mode)
        if mode == 'loss':
            self.calls = getattr(self, 'calls', 0) + 1
            if self.calls == 3:
                out = dict(loss=out['loss'] * float('nan'), loss_aux=out['loss'].detach())
        return out


def test_non_finite_loss_stops_with_iteration_and_terms(tmp_path):
    runner = toy_runner(tmp_path, max_epochs=2, model=ExplodingModel(),
                        custom_hooks=[dict(type='convnext_dense.NonFiniteLossHook')])
    with pytest.raises(FloatingPointError, match=r'non-finite loss at iteration 3 \(non-finite: loss;'
                                                 r' all terms: loss=nan, loss_aux='):
        runner.train()
    assert not list(tmp_path.glob('*.pth'))  # nothing broken was saved


def test_last_good_checkpoint_stays_usable(tmp_path):
    class LateExplodingModel(ExplodingModel):
        def forward(self, inputs, labels=None, mode='tensor'):
            if mode == 'loss' and getattr(self, 'calls', 0) < 4:
                self.calls = getattr(self, 'calls', 0) + 1
                return ToyModel.forward(self, inputs, labels, mode)
            if mode == 'loss':
                self.calls = 2  # the next call is the NaN one
            return super().forward(inputs, labels, mode)

    runner = toy_runner(tmp_path, max_epochs=3, model=LateExplodingModel(),
                        custom_hooks=[dict(type='convnext_dense.NonFiniteLossHook')])
    with pytest.raises(FloatingPointError, match=r'iteration 5 .*last good checkpoint: .*epoch_1.pth'):
        runner.train()
    state = load_state_file(tmp_path / 'epoch_1.pth')['state_dict']
    assert all(torch.isfinite(value).all() for value in state.values())
    importlib.import_module('convnext_dense.model_checkpoints')  # as tools/ do, for the resume
    resumed = toy_runner(tmp_path, max_epochs=2, resume=True)
    resumed.train()
    assert resumed.epoch == 2


def test_tools_add_the_hook_once():
    cfg = Config(dict(custom_hooks=[dict(type='EMAHook')]))
    run.add_non_finite_loss_check(cfg)
    run.add_non_finite_loss_check(cfg)
    assert [hook['type'] for hook in cfg.custom_hooks] == ['EMAHook', 'convnext_dense.NonFiniteLossHook']


def _coco_cfg(root, ann_file='annotations/train.json', img='train/'):
    dataset = dict(type='CocoDataset', data_root=str(root), ann_file=ann_file, data_prefix=dict(img=img))
    return Config(dict(train_dataloader=dict(dataset=dataset),
                       val_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=dataset)),
                       val_cfg=dict(type='ValLoop')))


def test_missing_data_root_is_named(tmp_path):
    with pytest.raises(DataError, match=rf"data root '{tmp_path}/nowhere' of train_dataloader.dataset does not exist.*--cfg-options train_dataloader.dataset.data_root=PATH"):
        check_data_paths(_coco_cfg(tmp_path / 'nowhere'), 'train')


def test_empty_data_root_is_named(tmp_path):
    (tmp_path / 'coco' / 'train').mkdir(parents=True)
    with pytest.raises(DataError, match=rf"data root '{tmp_path}/coco' of train_dataloader.dataset is empty"):
        check_data_paths(_coco_cfg(tmp_path / 'coco'), 'train')


def test_missing_annotation_file_and_image_folder_are_named(tmp_path):
    (tmp_path / 'annotations').mkdir()
    (tmp_path / 'annotations' / 'train.json').write_text('{}')
    with pytest.raises(DataError, match=r"img folder '.*train/' of train_dataloader.dataset does not exist"):
        check_data_paths(_coco_cfg(tmp_path), 'train')
    (tmp_path / 'train').mkdir()
    with pytest.raises(DataError, match=r"annotation file '.*val.json' of val_dataloader.dataset.dataset"):
        cfg = _coco_cfg(tmp_path)
        cfg.val_dataloader.dataset.dataset = dict(cfg.train_dataloader.dataset, ann_file='annotations/val.json')
        check_data_paths(cfg, 'train')
    check_data_paths(_coco_cfg(tmp_path), 'train')  # complete now


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_tools_name_missing_data_in_one_line(tool, tmp_path):
    args = [] if tool == 'train.py' else [str(tmp_path / 'model.pth')]
    options = [f'{loader}.dataset.data_root={tmp_path}/nowhere'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    result = subprocess.run(
        [sys.executable, f'tools/{tool}', 'configs/demo/upernet_convnext-demo_shapes.py', *args,
         '--work-dir', str(tmp_path / 'work'), '--cfg-options', *options],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    if tool == 'train.py':
        assert last_line.startswith(f"error: data root '{tmp_path}/nowhere'")
    else:  # the checkpoint is looked for first
        assert last_line.startswith('error: ') and 'model.pth' in last_line


@pytest.mark.parametrize('args, error', [
    (['train.py', 'configs/nope.py'], "error: config 'configs/nope.py' not found"),
    (['test.py', 'README.md', 'configs/demo/upernet_convnext-demo_shapes.py'],
     "error: config 'README.md' is not a config file (a .py, .json, .yml, .yaml file); are the "
     'config and checkpoint arguments swapped?'),
    (['test.py', 'configs/demo/mask-rcnn_convnext-demo_shapes.py', 'x.pth', '--tta'],
     'error: --tta needs tta_model and tta_pipeline in the config; this mmdet config defines'),
    (['test.py', 'configs/demo/upernet_convnext-demo_shapes.py', 'x.pth', '--show-limit', '3'],
     'error: --show-limit 3 needs --show-dir (where to draw) or --show'),
    (['test.py', 'configs/demo/upernet_convnext-demo_shapes.py', 'x.pth', '--show',
      '--wait-time', '-1'], 'error: --wait-time must be >= 0 seconds, got -1.0'),
    (['test.py', 'configs/demo/upernet_convnext-demo_shapes.py', 'x.pth', '--show',
      '--wait-time', '0'], "error: --wait-time 0 waits for a key press in each image's window, "
                           'and matplotlib has no window here'),
    (['test.py', 'configs/demo/upernet_convnext-demo_shapes.py', 'x.pth', '--show-dir', 'vis',
      '--show-limit', '0'], 'error: --show-limit must be an int >= 1 (test images to draw), got 0'),
    (['train.py', 'configs/demo/upernet_convnext-demo_shapes.py', '--launcher', 'slurm'],
     "error: launcher 'slurm' needs GPUs; on a CPU-only machine use 'pytorch'"),
    (['train.py', 'configs/demo/upernet_convnext-demo_shapes.py', '--cfg-options',
      'model.backbone.arch=atto'], "error: arch 'atto' is not a known ConvNeXt architecture"),
])
def test_tools_name_a_bad_config_or_option_in_one_line(args, error, tmp_path):
    tool, *rest = args
    result = subprocess.run([sys.executable, f'tools/{tool}', *rest, '--work-dir', str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(error)


def test_cfg_options_item_without_equals_is_a_usage_error(capsys):
    parser = argparse.ArgumentParser(prog='train.py')
    cli_options.add_common_arguments(parser, work_dir_help='')
    args = parser.parse_args(['x.py', '--cfg-options', 'a.b=1', 'c=[1, 2]', 'd=/my data/x/',
                              "e='a b'", 'f=True', 'g=(1,2)', 'h=0.5'])
    assert args.cfg_options == {'a.b': 1, 'c': [1, 2], 'd': '/my data/x/', 'e': 'a b',
                                'f': True, 'g': (1, 2), 'h': 0.5}
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(['x.py', '--cfg-options', 'a.b=1', 'max_iters'])
    assert exit_info.value.code == 2
    assert "'max_iters' has no \"=\"" in capsys.readouterr().err


def test_resume_path_and_auto_scale_lr_are_checked_before_anything_is_built(tmp_path):
    cfg = Config(dict(work_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match=r"--resume '.*nope\.pth' is not a file"):
        cli_options.set_resume(cfg, str(tmp_path / 'nope.pth'))
    cli_options.set_resume(cfg, 'auto')
    assert cfg.resume and cfg.load_from is None
    for base in (None, 0, '16'):
        with pytest.raises(ValueError, match=rf'a positive int\); got {base!r}'):
            cli_options.set_auto_scale_lr(Config(dict(auto_scale_lr=dict(
                base_batch_size=base))), True)
    with pytest.raises(ValueError, match=r'got None'):
        cli_options.set_auto_scale_lr(Config(dict(auto_scale_lr=None)), True)
    scaled = Config(dict(auto_scale_lr=dict(base_batch_size=16)))
    cli_options.set_auto_scale_lr(scaled, True)
    assert scaled.auto_scale_lr.enable


def test_training_afresh_never_overwrites_an_earlier_run(tmp_path):
    cfg = Config(dict(work_dir=str(tmp_path)))
    cli_options.protect_earlier_run(cfg)  # empty: nothing to lose
    (tmp_path / '20261130_120000').mkdir()  # logs alone
    cli_options.protect_earlier_run(cfg)
    (tmp_path / 'iter_500.pth').write_bytes(b'weights')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_500.pth'))
    with pytest.raises(ValueError, match=r'holds the checkpoints of an earlier run '
                                         r'\(iter_500\.pth, last_checkpoint\): training afresh'):
        cli_options.protect_earlier_run(cfg)
    cli_options.protect_earlier_run(Config(dict(work_dir=str(tmp_path), resume=True)))
    result = subprocess.run([sys.executable, 'tools/train.py',
                             'configs/demo/upernet_convnext-demo_shapes.py', '--work-dir',
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert 'Pass --resume to continue that run' in result.stderr.splitlines()[-1]
    assert (tmp_path / 'iter_500.pth').read_bytes() == b'weights'


def test_restart_moves_the_earlier_runs_checkpoints_aside(tmp_path):
    """A restarted run saving fewer checkpoints than the earlier one must not leave the old
    later ones where a --resume (or its fallback to the newest iter_N.pth) would take them."""
    for name in ('iter_2.pth', 'iter_4.pth'):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    (tmp_path / '20261130_120000').mkdir()  # the earlier run's logs stay where they are
    cfg = Config(dict(work_dir=str(tmp_path)))
    folder = Path(cli_options.protect_earlier_run(cfg, restart=True))
    assert folder.parent == tmp_path and folder.name.startswith('earlier_run_')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['20261130_120000', folder.name]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {
        'iter_2.pth': b'iter_2.pth', 'iter_4.pth': b'iter_4.pth',
        'last_checkpoint': str(tmp_path / 'iter_4.pth').encode()}
    assert cli_options.protect_earlier_run(cfg) is None  # nothing left to protect
    (tmp_path / 'iter_2.pth').write_bytes(b'new')  # a second restart in the same second
    second = cli_options.protect_earlier_run(cfg, restart=True)
    assert second != str(folder) and (Path(second) / 'iter_2.pth').read_bytes() == b'new'


def test_resuming_another_runs_checkpoint_never_overwrites_a_work_dir(tmp_path):
    work_dir, elsewhere = tmp_path / 'work', tmp_path / 'other' / 'iter_4.pth'
    work_dir.mkdir()
    (work_dir / 'iter_12.pth').write_bytes(b'weights')

    def resuming(path):
        return Config(dict(work_dir=str(work_dir), resume=True, load_from=str(path)))
    with pytest.raises(ValueError, match=r'holds the checkpoints of another run \(iter_12\.pth\): '
                                         r'resuming .*other/iter_4\.pth there would overwrite'):
        cli_options.protect_earlier_run(resuming(elsewhere))
    cli_options.protect_earlier_run(resuming(work_dir / 'iter_12.pth'))  # this run
    moved = cli_options.protect_earlier_run(resuming(elsewhere), restart=True)
    assert (Path(moved) / 'iter_12.pth').read_bytes() == b'weights'
    fresh = Config(dict(work_dir=str(tmp_path / 'fresh'), resume=True, load_from=str(elsewhere)))
    cli_options.protect_earlier_run(fresh)  # a new work dir: nothing to lose


def test_missing_evaluator_annotation_file_is_named(tmp_path):
    (tmp_path / 'annotations').mkdir()
    (tmp_path / 'annotations' / 'train.json').write_text('{}')
    (tmp_path / 'train').mkdir()
    cfg = _coco_cfg(tmp_path)
    cfg.val_evaluator = dict(type='CocoMetric', ann_file=str(tmp_path / 'nope.json'))
    with pytest.raises(DataError, match=r"annotation file '.*nope.json' of val_evaluator."
                                        r"ann_file does not exist.*--cfg-options "
                                        r"val_evaluator.ann_file=PATH"):
        check_data_paths(cfg, 'train')
    check_data_paths(cfg, 'test')  # testing reads test_evaluator, which this config has not
    cfg.test_dataloader = cfg.train_dataloader
    present = str(tmp_path / 'annotations/train.json')
    cfg.test_evaluator = [dict(type='CocoMetric', ann_file=present),
                          dict(type='CocoMetric', ann_file=str(tmp_path / 'gone.json'))]
    with pytest.raises(DataError, match=r"'.*gone.json' of test_evaluator\[1\].ann_file"):
        check_data_paths(cfg, 'test')
    cfg.val_evaluator.ann_file = 's3://bucket/val.json'  # a remote file is the backend's to read
    cfg.test_evaluator = dict(type='IoUMetric')  # no ground-truth file of its own
    check_data_paths(cfg, 'train')
    check_data_paths(cfg, 'test')
    cfg.val_cfg = None
    cfg.val_evaluator.ann_file = str(tmp_path / 'nope.json')
    check_data_paths(cfg, 'train')  # no validation, nothing read


@pytest.mark.parametrize('content, error', [
    ('{"images": [', 'JSONDecodeError'),
    (json.dumps({'images': [{'id': 1, 'file_name': 'a.jpg', 'height': 8, 'width': 8}],
                 'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1}],
                 'categories': [{'id': 1, 'name': 'circle'}]}), 'KeyError'),
])
def test_malformed_annotation_file_is_named(tmp_path, content, error):
    from mmdet.datasets import CocoDataset
    (tmp_path / 'train').mkdir()
    ann_file = tmp_path / 'ann.json'
    ann_file.write_text(content)
    with pytest.raises(DataError, match=rf"annotation file '.*ann.json' is malformed \({error}"):
        with explain_annotation_errors():
            CocoDataset(data_root=str(tmp_path), ann_file='ann.json', data_prefix=dict(img='train/'),
                        metainfo=dict(classes=('circle',)), pipeline=[])


def test_other_errors_pass_through():
    with pytest.raises(KeyError, match='unrelated'):
        with explain_annotation_errors():
            raise KeyError('unrelated')


def test_segmentation_out_dir_exists_before_any_rank_writes(tmp_path):
    # mmseg's IoUMetric makes output_dir on rank 0 only; every rank writes its PNGs into it.
    cfg = Config(dict(default_scope='mmseg', test_evaluator=dict(type='IoUMetric')))
    out = tmp_path / 'nested' / 'predictions'
    cli_options.add_result_dump(cfg, str(out))
    assert out.is_dir()
    assert cfg.test_evaluator.output_dir == str(out) and cfg.test_evaluator.keep_results


def test_detection_out_must_be_a_pickle(tmp_path):
    cfg = Config(dict(default_scope='mmdet', test_evaluator=dict(type='CocoMetric')))
    with pytest.raises(ValueError, match=r"--out '.*results.json' must end with .pkl"):
        cli_options.add_result_dump(cfg, str(tmp_path / 'results.json'))
    cli_options.add_result_dump(cfg, str(tmp_path / 'results.pkl'))
    assert [e['type'] for e in cfg.test_evaluator] == ['CocoMetric', 'DumpDetResults']


def test_segmentation_out_refuses_a_folder_with_files(tmp_path):
    # The PNGs are named as the images: an annotation folder would lose its ground truth.
    cfg = Config(dict(default_scope='mmseg', test_evaluator=dict(type='IoUMetric')))
    (tmp_path / 'ann').mkdir()
    (tmp_path / 'ann' / 'a.png').write_bytes(b'gt')
    with pytest.raises(ValueError, match=r"--out '.*ann' already holds files \(a\.png\)"):
        cli_options.add_result_dump(cfg, str(tmp_path / 'ann'))
    assert 'output_dir' not in cfg.test_evaluator
    (tmp_path / 'empty').mkdir()
    cli_options.add_result_dump(cfg, str(tmp_path / 'empty'))
    (tmp_path / 'empty' / 'a.png').write_bytes(b'a prediction')
    cli_options.add_result_dump(cfg, str(tmp_path / 'empty'))  # a rerun writes there again


def test_detection_out_that_is_a_folder_is_refused_up_front(tmp_path):
    cfg = Config(dict(default_scope='mmdet', test_evaluator=dict(type='CocoMetric')))
    (tmp_path / 'x.pkl').mkdir()
    with pytest.raises(ValueError, match=r"--out '.*x\.pkl' is an existing folder"):
        cli_options.add_result_dump(cfg, str(tmp_path / 'x.pkl'))


def _show_cfg(scope):
    return Config(dict(default_scope=scope, visualizer=dict(type='Visualizer'),
                       default_hooks=dict(visualization=dict(type='VisualizationHook'))))


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_show_dir_refuses_a_folder_with_files(tmp_path, scope):
    # mmdet names its drawings as the images: the image folder would be overwritten.
    (tmp_path / 'img.jpg').write_bytes(b'image')
    cfg = _show_cfg(scope)
    with pytest.raises(ValueError, match=r"--show-dir '.*' already holds files \(img\.jpg\)"):
        cli_options.enable_show_dir(cfg, str(tmp_path))
    assert not cfg.default_hooks.visualization.get('draw')
    cli_options.enable_show_dir(cfg, str(tmp_path / 'new'))


def test_show_dir_of_an_earlier_segmentation_run_is_reused(tmp_path):
    (tmp_path / 'vis_data' / 'vis_image').mkdir(parents=True)  # all mmseg writes there
    (tmp_path / 'vis_data' / 'vis_image' / 'img_0.png').write_bytes(b'an earlier drawing')
    cli_options.enable_show_dir(_show_cfg('mmseg'), str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    assert Path(cli_options.output_marker(str(tmp_path))).is_file()


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_show_dir_drawn_into_before_is_reused_and_emptied(tmp_path, scope):
    show = tmp_path / 'show'
    cli_options.enable_show_dir(_show_cfg(scope), str(show))
    (show / 'img.jpg').write_bytes(b'an earlier drawing')
    cli_options.enable_show_dir(_show_cfg(scope), str(show))  # a rerun of the same test
    # the rerun's drawings do not mix with the earlier run's (another test set, --show-limit)
    assert list(show.iterdir()) == []


def test_segmentation_out_of_an_earlier_run_is_emptied(tmp_path):
    out = tmp_path / 'pred'
    cli_options.add_result_dump(Config(dict(default_scope='mmseg', test_evaluator=dict())),
                                str(out))
    (out / 'img_0.png').write_bytes(b'an earlier prediction')
    cli_options.add_result_dump(Config(dict(default_scope='mmseg', test_evaluator=dict())),
                                str(out))
    # Nothing but the predictions: mmseg's confusion_matrix.py opens every file there.
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.pred.written_by_test_py', 'pred']


def test_an_output_folder_marked_inside_by_an_earlier_version_is_reused(tmp_path):
    out = tmp_path / 'pred'
    out.mkdir()
    (out / cli_options.OUTPUT_MARKER).write_text('tools/test.py --out writes here')
    (out / 'img_0.png').write_bytes(b'an earlier prediction')
    cli_options.add_result_dump(Config(dict(default_scope='mmseg', test_evaluator=dict())),
                                str(out))
    assert list(out.iterdir()) == []


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_show_limit_adds_the_hook_that_stops_drawing(tmp_path, scope):
    cfg = _show_cfg(scope)
    cli_options.enable_show_dir(cfg, str(tmp_path / 'show'), limit=6)
    assert cfg.custom_hooks[-1] == dict(type='convnext_dense.ShowLimitHook', limit=6)
    cfg = _show_cfg(scope)
    cli_options.enable_show_dir(cfg, str(tmp_path / 'show'))
    assert 'custom_hooks' not in cfg  # without a limit, every image is drawn as before


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_show_sets_the_visualization_hook_as_mmdet_and_mmseg_do(scope):
    cfg = _show_cfg(scope)
    cli_options.enable_show(cfg, wait_time=0.5, limit=3)
    hook = cfg.default_hooks.visualization
    assert hook.draw and hook.show and hook.wait_time == 0.5
    assert cfg.custom_hooks == [dict(type='convnext_dense.ShowLimitHook', limit=3)]
    assert hook.get('interval') == (1 if scope == 'mmseg' else None)
    with pytest.raises(ValueError, match='--show needs default_hooks.visualization'):
        cli_options.enable_show(Config(dict(default_scope=scope, default_hooks=dict())))


@pytest.mark.parametrize('option', ['work dir', '--out', '--show-dir'])
def test_a_file_where_a_folder_is_expected_is_refused(tmp_path, option):
    path = tmp_path / 'file'
    path.write_text('keep me')
    with pytest.raises(ValueError, match=rf"{option} '.*file' is an existing file"):
        if option == 'work dir':
            cli_options.set_work_dir(Config(), 'cfg.py', str(path))
        elif option == '--out':
            cli_options.add_result_dump(Config(dict(default_scope='mmseg')), str(path))
        else:
            cli_options.enable_show_dir(_show_cfg('mmseg'), str(path))
    assert path.read_text() == 'keep me'


TINY_CHANNELS = [16, 32, 64, 128]


def _model(out_indices=(0, 1, 2, 3), backbone_type='convnext_dense.ConvNeXt', **parts):
    backbone = dict(type=backbone_type, arch=dict(depths=(1, 1, 2, 1), channels=TINY_CHANNELS),
                    out_indices=out_indices)
    return Config(dict(model=dict(backbone=backbone, **parts)))


_FPN = dict(type='FPN', in_channels=TINY_CHANNELS, out_channels=8, num_outs=5)
_UPER = dict(type='UPerHead', in_channels=TINY_CHANNELS, in_index=[0, 1, 2, 3])
_AUX = dict(type='FCNHead', in_channels=64, in_index=2)


@pytest.mark.parametrize('cfg, match', [
    (_model((1, 2, 3), neck=_FPN),
     r'model\.backbone \(arch .*out_indices \[1, 2, 3\]\) outputs 3 feature maps with channels '
     r'\[32, 64, 128\], but model\.neck\.in_channels is \[16, 32, 64, 128\]; set it to '
     r'\[32, 64, 128\]'),
    (_model((1, 2, 3), neck=[_FPN, dict(type='BFP', in_channels=8)]),
     r'model\.neck\[0\]\.in_channels is \[16, 32, 64, 128\]'),
    (_model((1, 2, 3), decode_head=_UPER, auxiliary_head=_AUX),
     r'out_indices \[1, 2, 3\]\) outputs 3 feature maps.*model\.decode_head\.in_index '
     r'\[0, 1, 2, 3\] with in_channels \[16, 32, 64, 128\] reads output 3, out of range for 3 '
     r'outputs \(0 to 2\)'),
    (_model(decode_head=dict(_UPER, in_channels=[96, 192, 384, 768]), auxiliary_head=_AUX),
     r'model\.decode_head\.in_index \[0, 1, 2, 3\] with in_channels \[96, 192, 384, 768\] '
     r'expects \[96, 192, 384, 768\] channels where the backbone gives \[16, 32, 64, 128\]'),
    (_model(decode_head=_UPER, auxiliary_head=dict(_AUX, in_index=1)),
     r'model\.auxiliary_head\.in_index 1 with in_channels 64 expects 64 channels where the '
     r'backbone gives 32'),
    (_model(decode_head=_UPER, auxiliary_head=[_AUX, dict(_AUX, in_index=-1)]),
     r'model\.auxiliary_head\[1\]\.in_index -1'),
])
def test_backbone_channels_that_do_not_fit_the_neck_or_heads_are_named(cfg, match):
    with pytest.raises(ValueError, match=match):
        check_backbone_channels(cfg)


@pytest.mark.parametrize('cfg', [
    _model(neck=_FPN),
    _model(neck=dict(type='YOLOV3Neck', in_channels=TINY_CHANNELS[::-1])),  # deepest first
    _model((1, 2, 3), decode_head=dict(_UPER, in_channels=TINY_CHANNELS[1:], in_index=[0, 1, 2]),
           auxiliary_head=dict(_AUX, in_index=1)),
    # Shapes it cannot read with confidence are left to the model.
    _model((1, 2, 3), backbone_type='mmpretrain.ConvNeXt', neck=_FPN),
    _model((1, 2, 3), backbone_type='ResNet', decode_head=_UPER),
    _model((1, 2, 3), neck=dict(type='DilatedEncoder', in_channels=16)),
    _model((1, 2, 3), decode_head=dict(type='UPerHead', in_channels=TINY_CHANNELS)),
    _model((1, 2, 3), rpn_head=dict(type='RPNHead', in_channels=16)),
])
def test_backbone_channels_that_fit_or_cannot_be_read_pass(cfg):
    check_backbone_channels(cfg)


def test_a_bad_arch_or_out_indices_is_named_before_the_data_is_looked_at():
    with pytest.raises(BackboneArgumentError, match=r'out_indices entry 7 is out of range'):
        check_backbone_channels(_model(out_indices=(7,), neck=_FPN))


@pytest.mark.parametrize('config, options, match', [
    ('upernet_convnext-demo_shapes.py', dict(arch='tiny'),
     r"arch 'tiny'.*channels \[96, 192, 384, 768\], but model\.decode_head"),
    ('mask-rcnn_convnext-demo_shapes.py', dict(out_indices=(1, 2, 3)),
     r'channels \[64, 128, 256\], but model\.neck\.in_channels is \[32, 64, 128, 256\]'),
])
def test_demo_configs_with_a_changed_backbone_are_refused(config, options, match):
    cfg = Config.fromfile(ROOT / 'configs/demo' / config)
    check_backbone_channels(cfg)
    cfg.merge_from_dict({f'model.backbone.{key}': value for key, value in options.items()})
    with pytest.raises(ValueError, match=match):
        run.build_runner(cfg)


def test_train_names_backbone_channels_that_do_not_fit_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/demo/upernet_convnext-demo_shapes.py',
         '--work-dir', str(tmp_path), '--cfg-options', 'model.backbone.out_indices=(1,2,3)'],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith('error: model.backbone (arch '), last_line
    assert 'out_indices [1, 2, 3]) outputs 3 feature maps' in last_line
    assert 'model.decode_head.in_index [0, 1, 2, 3]' in last_line


@pytest.fixture(scope='module')
def tiny_ade(tmp_path_factory):
    """Data options pointing the demo UperNet config at a 2-image generated dataset."""
    from convnext_dense.extras.demo.shapes import generate_shapes_dataset
    root = tmp_path_factory.mktemp('tiny_shapes')
    generate_shapes_dataset(root, seed=0, num_train=2, num_val=1)
    return [f'{loader}.dataset.data_root={root}/ade'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


@pytest.mark.parametrize('options, env, error', [
    (['model.decode_head.loss_decode.loss_weight=nan', 'train_cfg.max_iters=1'], {},
     'error: non-finite loss at iteration 1 (non-finite: '),
    (['optim_wrapper.paramwise_cfg.custom_keys.nowhere.lr_mult=0.1'], {},
     "error: paramwise_cfg custom_keys ['nowhere'] match no parameter of "),
    ([], {'CONVNEXT_DENSE_MALLOC': 'foo'},
     "error: CONVNEXT_DENSE_MALLOC='foo' is not one of 'keep' (the default) or"),
])
def test_train_names_a_diverged_loss_or_a_bad_setting_in_one_line(tiny_ade, options, env, error,
                                                                  tmp_path):
    result = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/demo/upernet_convnext-demo_shapes.py',
         '--work-dir', str(tmp_path), '--cfg-options', 'model.backbone.init_cfg=None',
         'train_dataloader.num_workers=0', *tiny_ade, *options],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1', **env))
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(error), result.stderr[-1000:]
