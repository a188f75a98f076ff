"""tools/swap_backbone.py and the sweep helpers behind tools/sweep_swap_backbone.py."""
import json

import pytest
from mmengine.config import Config

from convnext_dense.runtime.config import stock_config_path
from convnext_dense.swap.plan import SwapPlan
from convnext_dense.swap.source import Source
from convnext_dense.extras.swap_survey.sweep import (backbone_family, check_config, stock_configs,
                                                     summarize)
from failing_writes import assert_a_dying_write_keeps
from tool_modules import load_tool

RPN_C4 = 'mmdet::rpn/rpn_r50-caffe-c4_1x_coco.py'


def test_cli_writes_a_delta_config(tmp_path, capsys):
    out = tmp_path / 'retinanet_convnext-t.py'
    code = load_tool('swap_backbone').main([
        'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', '--arch', 'tiny', '--out', str(out)])
    assert code == 0
    assert 'model.neck: in_channels -> [192, 384, 768]' in capsys.readouterr().out
    cfg = Config.fromfile(str(out))
    assert cfg.model.backbone.arch == 'tiny'
    assert cfg.model.neck.in_channels == [192, 384, 768]  # ConvNeXt-T stages 1..3
    assert cfg.model.backbone.init_cfg.checkpoint.endswith('convnext_tiny_22k_224.pth')
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'


def test_cli_no_recipe_and_no_weights(tmp_path):
    out = tmp_path / 'psp.py'
    source = 'mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py'
    assert load_tool('swap_backbone').main([source, '--arch', 'small', '--pretrained', 'none',
                                        '--no-recipe', '--out', str(out)]) == 0
    cfg = Config.fromfile(str(out))
    assert 'init_cfg' not in cfg.model.backbone
    assert cfg.optim_wrapper.optimizer.type == 'SGD'


def test_cli_refusal_names_the_field(tmp_path, capsys):
    out = tmp_path / 'c4.py'
    code = load_tool('swap_backbone').main([
        'mmdet::faster_rcnn/faster-rcnn_r50-caffe_c4-1x_coco.py', '--out', str(out)])
    assert code == 2
    assert 'model.roi_head.bbox_roi_extractor.out_channels' in capsys.readouterr().err
    assert not out.exists()


def test_cli_refuses_to_write_over_the_source_config(tmp_path, capsys, monkeypatch):
    source = tmp_path / 'my_retina.py'
    text = "_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\nmy_setting = 1\n"
    source.write_text(text)
    monkeypatch.chdir(tmp_path)
    code = load_tool('swap_backbone').main(
        [str(source), '--arch', 'tiny', '--out', './my_retina.py'])
    assert code == 2
    assert 'is the source config' in capsys.readouterr().err
    assert source.read_text() == text


def test_cli_refuses_a_config_the_source_inherits_from(tmp_path, capsys, monkeypatch):
    (tmp_path / 'base').mkdir()
    base = tmp_path / 'base' / 'my_base.py'
    base_text = ("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n"
                 'model = dict(bbox_head=dict(num_classes=3))\n')
    base.write_text(base_text)
    (tmp_path / 'my_retina.py').write_text("_base_ = './base/my_base.py'\nmy_setting = 1\n")
    monkeypatch.chdir(tmp_path)
    code = load_tool('swap_backbone').main(['my_retina.py', '--arch', 'tiny', '--pretrained',
                                            'none', '--out', 'base/my_base.py'])
    assert code == 2
    assert ('is a config the source my_retina.py inherits from, ./base/my_base.py'
            in capsys.readouterr().err)
    assert base.read_text() == base_text


@pytest.mark.parametrize('out, message', [
    ('swapped.yaml', "'{out}' is not a .py file"),
    ('folder.py', "'{out}' is a folder"),
    ('missing/swapped.py', 'cannot write {out}'),
])
def test_cli_refuses_an_output_it_cannot_write_as_a_config(tmp_path, capsys, out, message):
    (tmp_path / 'folder.py').mkdir()
    out = str(tmp_path / out)
    if 'missing' in out:
        (tmp_path / 'missing').write_text('a file where the folder would be\n')
    assert load_tool('swap_backbone').main([RPN_C4, '--arch', 'tiny', '--pretrained', 'none',
                                            '--out', out]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message.format(out=out) in err, err


def test_cli_names_a_missing_source_config(tmp_path, capsys):
    assert load_tool('swap_backbone').main(['mmdet::retinanet/no_such.py', '--out',
                                            str(tmp_path / 'x.py')]) == 2
    assert "error: config 'mmdet::retinanet/no_such.py' not found" in capsys.readouterr().err


def test_cli_refuses_a_pretrained_word_that_is_no_checkpoint(tmp_path, capsys):
    out = tmp_path / 'x.py'
    assert load_tool('swap_backbone').main([RPN_C4, '--pretrained', 'imagenet', '--out',
                                        str(out)]) == 2
    assert "pretrained='imagenet'" in capsys.readouterr().err
    assert not out.exists()


def _tiny_plan(tmp_path):
    source = tmp_path / 'src.py'
    source.write_text('x = 1\n')
    cfg = Config.fromfile(str(source))
    return SwapPlan(Source(cfg, str(source), 'mmdet'), dict(model=dict(type='Y')), ('note',))


def test_dump_refuses_the_source_config(tmp_path):
    plan = _tiny_plan(tmp_path)
    with pytest.raises(ValueError, match='is the source config'):
        plan.dump(str(tmp_path / '.' / 'src.py'))
    assert (tmp_path / 'src.py').read_text() == 'x = 1\n'


def test_dump_that_dies_keeps_the_old_file(tmp_path, monkeypatch):
    plan = _tiny_plan(tmp_path)
    out = tmp_path / 'out.py'
    out.write_text('old = 1\n')
    assert_a_dying_write_keeps(out, lambda: plan.dump(str(out)), monkeypatch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.py', 'src.py']


def test_cli_rejects_unknown_arch(tmp_path):
    with pytest.raises(SystemExit):
        load_tool('swap_backbone').main([RPN_C4, '--arch', 'huge', '--out', str(tmp_path / 'x.py')])


@pytest.mark.parametrize('name, family', [
    (RPN_C4, 'ResNet'),
    ('mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py', 'ResNetV1c'),
    ('mmdet::faster_rcnn/faster-rcnn_x101-32x4d_fpn_1x_coco.py', 'ResNeXt'),
    ('mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py', None),
    ('mmseg::hrnet/fcn_hr18_4xb2-40k_cityscapes-512x1024.py', None),
])
def test_sweep_selects_resnet_family_backbones(name, family):
    cfg = Config.fromfile(stock_config_path(name), import_custom_modules=False)
    assert backbone_family(cfg, name.split('::')[0]) == family


def test_sweep_lists_stock_configs_without_bases():
    names = stock_configs('mmseg')
    assert 'mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py' in names
    assert not any('_base_' in n for n in names)


def test_sweep_checks_one_config(tmp_path):
    trained = check_config(RPN_C4, str(tmp_path))
    assert trained['status'] == 'trained', trained
    refused = check_config('mmdet::faster_rcnn/faster-rcnn_r50-caffe_c4-1x_coco.py',
                           str(tmp_path))
    assert refused['status'] == 'refused'
    assert refused['field'] == 'model.roi_head.bbox_roi_extractor.out_channels'
    summary = summarize([dict(trained, backbone='ResNet'), dict(refused, backbone='ResNet')])
    assert summary['N'] == 2 and summary['trained'] == 1
    assert summary['by_backbone'] == {'ResNet': {'N': 2, 'trained': 1}}
    assert summary['reasons'] == {
        'refused: model.roi_head.bbox_roi_extractor.out_channels': 1}


def _fake_sweep(monkeypatch, failing=()):
    """tools/sweep_swap_backbone.py over five made-up configs, 'run' without training."""
    tool = load_tool('sweep_swap_backbone')
    monkeypatch.setattr(tool, 'resnet_configs', lambda scopes: iter(
        dict(config=f'mmdet::cfg{i}.py', backbone='ResNet') for i in range(5)))

    def run_sweep(entries, time_limit, progress):
        results = []
        for entry in entries:
            status = 'train_failed' if entry['config'] in failing else 'trained'
            results.append(dict(entry, status=status, reason='', seconds=0.0))
            progress(results[-1], results)
        return results

    monkeypatch.setattr(tool, 'run_sweep', run_sweep)
    return tool


def _statuses(path):
    return {r['config']: r['status'] for r in json.loads(path.read_text())['results']}


@pytest.mark.parametrize('subset', [['--match', 'cfg3'], ['--limit', '4']])
def test_sweep_resume_of_a_subset_keeps_the_other_results(tmp_path, monkeypatch, subset):
    out = tmp_path / 'sweep.json'
    assert _fake_sweep(monkeypatch, failing={'mmdet::cfg3.py', 'mmdet::cfg4.py'}).main(
        ['--out', str(out)]) == 0
    assert _fake_sweep(monkeypatch).main(['--out', str(out), '--resume', *subset]) == 0
    statuses = _statuses(out)
    assert statuses == {'mmdet::cfg0.py': 'trained', 'mmdet::cfg1.py': 'trained',
                        'mmdet::cfg2.py': 'trained', 'mmdet::cfg3.py': 'trained',
                        'mmdet::cfg4.py': 'train_failed'}  # cfg4 not re-run, still there
    assert json.loads(out.read_text())['summary']['N'] == 5


def test_sweep_resume_refuses_a_file_that_is_not_sweep_results(tmp_path, monkeypatch, capsys):
    out = tmp_path / 'other.json'
    out.write_text('{"results": [{"config": "x"}]}')
    assert _fake_sweep(monkeypatch).main(['--out', str(out), '--resume']) == 2
    error = capsys.readouterr().err
    assert str(out) in error and "'status'" in error
    assert out.read_text() == '{"results": [{"config": "x"}]}'
