"""A dense backbone handed to transformers: `tools/convert_checkpoint.py --to hf-backbone`.

The reference is Hugging Face's own forward: the directory written is loaded with
``ConvNextBackbone.from_pretrained`` and its feature maps are compared with the original Hugging
Face model's stage outputs under the checkpoint's output norms, and with this package's backbone.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convnext_dense import ConvNeXt
from convnext_dense.convert import convert_to_hf_backbone
from convnext_dense.weights import load_pretrained, load_state_file
from failing_writes import assert_a_dying_save_keeps
from tool_modules import load_tool
from weights_reference import (ARCH, build_hf_classifier, channel_layer_norm, dense_norms,
                               detector_from_hf, hf_stage_outputs, save_hf_dirs)

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / 'tools' / 'convert_checkpoint.py'


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    model = build_hf_classifier()
    root = tmp_path_factory.mktemp('hf_backbone')
    detector = root / 'epoch_12.pth'
    torch.save(detector_from_hf(model.state_dict(), dense_norms()), detector)
    three = root / 'three_outputs.pth'
    torch.save(detector_from_hf(model.state_dict(), dense_norms(indices=(1, 2, 3))), three)
    classifier_dir = save_hf_dirs(model, root)['hf_safetensors']
    return model, detector, three, classifier_dir


def _hf_backbone(path):
    # Not AutoBackbone: transformers 5.24's asks the hub whether the name exists before looking
    # on disk, and fails for a local directory.
    from transformers import ConvNextBackbone
    return ConvNextBackbone.from_pretrained(str(path)).eval()


def test_feature_maps_equal_hugging_face_and_ours(sources, tmp_path):
    model, detector, _, _ = sources
    dst = tmp_path / 'hf_convnext'
    conversion, where, mapped = convert_to_hf_backbone(str(detector), dst)
    assert 'epoch_12.pth' in where
    assert mapped['hidden_states_norms.stage3.weight'] == 'norm2.weight'
    assert mapped['encoder.stages.2.layers.0.layer_scale_parameter'] == 'stages.2.0.gamma'
    hf_backbone = _hf_backbone(dst)
    assert hf_backbone.config.out_features == ['stage1', 'stage2', 'stage3', 'stage4']

    ours = ConvNeXt(arch=ARCH).eval()
    load_pretrained(ours, str(detector))
    x = torch.rand(2, 3, 64, 96)
    norms = dense_norms()
    with torch.no_grad():
        theirs = hf_backbone(x).feature_maps
        our_maps = ours(x)
    reference = [channel_layer_norm(h, norms[f'norm{i}.weight'], norms[f'norm{i}.bias'])
                 for i, h in enumerate(hf_stage_outputs(model, x))]
    assert len(theirs) == len(our_maps) == 4
    for i, (got, ref, mine) in enumerate(zip(theirs, reference, our_maps)):
        assert got.shape == ref.shape == mine.shape == (2, ARCH['channels'][i], 16 >> i, 24 >> i)
        assert (got - ref).abs().max() <= 1e-5
        assert (got - mine).abs().max() <= 1e-5


def test_out_features_follow_the_output_norms(sources, tmp_path):
    _, _, three, _ = sources
    dst = tmp_path / 'three'
    convert_to_hf_backbone(str(three), dst)
    hf_backbone = _hf_backbone(dst)
    assert hf_backbone.config.out_features == ['stage2', 'stage3', 'stage4']
    with torch.no_grad():
        maps = hf_backbone(torch.rand(1, 3, 64, 64)).feature_maps
    assert [m.shape[1] for m in maps] == list(ARCH['channels'][1:])


def test_written_directory_reads_back_as_the_same_backbone(sources, tmp_path):
    _, detector, _, _ = sources
    dst = tmp_path / 'hf_convnext'
    conversion, _, _ = convert_to_hf_backbone(str(detector), dst)
    back = ConvNeXt(arch=ARCH).eval()
    report = load_pretrained(back, str(dst))
    assert 'Hugging Face' in report.layout
    for key, value in back.state_dict().items():
        assert torch.equal(value, conversion.state_dict[key]), key


def test_a_classification_checkpoint_is_refused_and_nothing_written(sources, tmp_path):
    _, _, _, classifier_dir = sources
    dst = tmp_path / 'out'
    with pytest.raises(ValueError, match=r'no per-stage output norm .*ConvNextModel.*nothing was '
                                         'written'):
        convert_to_hf_backbone(str(classifier_dir), dst)
    assert not dst.exists()


@pytest.mark.parametrize('drop, error', [
    ('downsample_layers.0.0.weight', 'no stem convolution'),
    ('stages.3.', 'hold only part of a ConvNeXt'),
])
def test_a_partial_backbone_is_refused(drop, error, tmp_path):
    from convnext_dense.weights import save_hf_backbone
    weights = {k: v for k, v in ConvNeXt(arch=ARCH).state_dict().items() if not k.startswith(drop)}
    with pytest.raises(ValueError, match=error):
        save_hf_backbone(weights, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


def test_a_failed_write_keeps_the_directory_there_was(sources, tmp_path, monkeypatch):
    from transformers import ConvNextBackbone
    _, detector, three, _ = sources
    dst = tmp_path / 'hf_convnext'
    convert_to_hf_backbone(str(detector), dst)
    assert_a_dying_save_keeps(dst, ConvNextBackbone,
                              lambda: convert_to_hf_backbone(str(three), dst), monkeypatch)


def test_a_folder_with_other_files_is_refused_before_anything_is_written(sources, tmp_path):
    _, detector, three, _ = sources
    dst = tmp_path / 'work'
    dst.mkdir()
    (dst / 'notes.txt').write_text('mine')
    kept = dst / 'epoch_1.pth'
    kept.write_bytes(detector.read_bytes())
    with pytest.raises(FileExistsError, match=r'work already holds epoch_1\.pth, notes\.txt: '
                                              'writing there would delete it'):
        convert_to_hf_backbone(str(detector), dst)
    assert sorted(p.name for p in dst.iterdir()) == ['epoch_1.pth', 'notes.txt']
    assert [p.name for p in tmp_path.iterdir()] == ['work']  # no temporary folder left
    export = tmp_path / 'hf_convnext'  # an earlier export is what may be replaced
    convert_to_hf_backbone(str(detector), export)
    convert_to_hf_backbone(str(three), export)
    assert sorted(p.name for p in export.iterdir()) == ['config.json', 'model.safetensors']


def test_a_folder_holding_the_source_or_another_model_is_refused(sources, tmp_path):
    _, detector, _, classifier_dir = sources
    source_dir = tmp_path / 'convnext-hf'
    shutil.copytree(classifier_dir, source_dir)
    before = {p.name: p.read_bytes() for p in source_dir.iterdir()}
    with pytest.raises(ValueError, match='convnext-hf is the checkpoint being converted'):
        convert_to_hf_backbone(str(source_dir), source_dir)
    with pytest.raises(ValueError, match=r'holds the checkpoint being converted \(.*'
                                         r'model\.safetensors\)'):
        convert_to_hf_backbone(str(source_dir / 'model.safetensors'), source_dir)
    # another Hugging Face model is not an earlier export, even when it is not the source
    with pytest.raises(FileExistsError, match='already holds a Hugging Face '
                                              'ConvNextForImageClassification, not an earlier '
                                              'ConvNextBackbone export'):
        convert_to_hf_backbone(str(detector), source_dir)
    assert {p.name: p.read_bytes() for p in source_dir.iterdir()} == before


@pytest.mark.slow
def test_tool_writes_a_backbone_transformers_loads(sources, tmp_path):
    model, detector, _, classifier_dir = sources
    dst = tmp_path / 'hf_convnext'
    run = lambda *args: subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=REPO,
                                       capture_output=True, text=True, timeout=120)
    result = run(detector, f'{dst}/', '--to', 'hf-backbone')  # a trailing slash, as typed
    assert result.returncode == 0, result.stderr
    assert f'wrote {dst}/config.json and {dst}/model.safetensors' in result.stdout
    assert 'dropped 2 (not part of the backbone (neck.*))' in result.stdout
    tensors = len(ConvNeXt(arch=ARCH).state_dict())
    assert f'mapped {tensors} tensors to Hugging Face names ({tensors} renamed)' in result.stdout
    assert 'ConvNextBackbone.from_pretrained loads it' in result.stdout
    weights = load_state_file(dst / 'model.safetensors')
    assert torch.equal(weights['hidden_states_norms.stage4.bias'], dense_norms()['norm3.bias'])

    refused = run(classifier_dir, tmp_path / 'cls', '--to', 'hf-backbone')
    assert refused.returncode == 1
    assert 'no per-stage output norm' in refused.stderr
    assert not (tmp_path / 'cls').exists()


def test_tool_help_describes_it_in_full():
    result = subprocess.run([sys.executable, str(TOOL), '--help'], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert ' '.join(result.stdout.split()).count(
        'to Hugging Face (a ConvNextBackbone or a UperNet), or to mmseg.') == 1


def test_tool_without_transformers_names_the_extra(sources, tmp_path, monkeypatch, capsys):
    _, detector, _, _ = sources
    monkeypatch.setitem(sys.modules, 'transformers', None)  # `import transformers` now fails
    convert = load_tool('convert_checkpoint')
    assert convert.main([str(detector), str(tmp_path / 'hf'), '--to', 'hf-backbone']) == 1
    error = capsys.readouterr().err
    assert error.startswith('error: transformers is not installed: ')
    assert "pip install -e '.[hf]'" in error
    assert not (tmp_path / 'hf').exists()
