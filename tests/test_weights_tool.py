"""tools/convert_checkpoint.py end to end: any layout in, backbone layout out, in both formats."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convnext_dense import ConvNeXt
from convnext_dense.convert import convert_file
from convnext_dense.weights import convert_with_report, load_pretrained, load_state_file
from weights_reference import (ARCH, build_hf_classifier, channel_layer_norm, dense_norms,
                               detector_from_hf, hf_stage_outputs, mmpretrain_cls_from_hf,
                               save_hf_dirs)

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / 'tools' / 'convert_checkpoint.py'


@pytest.fixture(scope='module')
def hf(tmp_path_factory):
    model = build_hf_classifier()
    root = tmp_path_factory.mktemp('tool')
    dirs = save_hf_dirs(model, root)
    mmpretrain = root / 'mmpretrain_cls.pth'
    torch.save({'state_dict': mmpretrain_cls_from_hf(model.state_dict())}, mmpretrain)
    detector = root / 'epoch_12.pth'
    torch.save(detector_from_hf(model.state_dict(), dense_norms()), detector)
    return model, dirs['hf_bin'], mmpretrain, detector


def _convert(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_convert_file_in_process(hf, tmp_path):
    model, hf_dir, _, _ = hf
    conversion, _ = convert_file(str(hf_dir), tmp_path / 'a.safetensors')
    assert 'classifier.weight' in conversion.dropped
    weights = load_state_file(tmp_path / 'a.safetensors')
    assert all(torch.equal(weights[k], v) for k, v in conversion.state_dict.items())
    convert_file(str(hf_dir), tmp_path / 'a.pth')
    assert (tmp_path / 'a.pth').read_bytes()[:2] == b'PK'
    with pytest.raises(ValueError, match="format 'onnx' is not one of"):
        convert_file(str(hf_dir), tmp_path / 'a.onnx', fmt='onnx')
    with pytest.raises(ValueError, match=r"format 'pth' does not match the name .*b\.safetensors "
                                         r"\(a \.safetensors file is safetensors\)"):
        convert_file(str(hf_dir), tmp_path / 'b.safetensors', fmt='pth')
    assert not (tmp_path / 'b.safetensors').exists()


def test_converting_a_file_onto_itself_is_refused(hf, tmp_path):
    _, _, _, detector = hf
    copy = tmp_path / 'epoch_12.pth'
    copy.write_bytes(detector.read_bytes())
    with pytest.raises(ValueError, match='epoch_12.pth is the checkpoint being converted'):
        convert_file(str(copy), copy)
    assert copy.read_bytes() == detector.read_bytes()
    result = _convert(copy, copy, '--to', 'mmseg')
    assert result.returncode == 1 and 'is the checkpoint being converted' in result.stderr
    assert copy.read_bytes() == detector.read_bytes()
    dst = tmp_path / 'folder'
    dst.mkdir()
    result = _convert(copy, dst)  # an existing folder as the output file: one error line
    assert result.returncode == 1
    assert result.stderr == f'error: {dst} is a folder: the output must be a file name\n'


def test_converting_a_folder_onto_its_own_weights_is_refused(hf, tmp_path):
    _, hf_dir, _, _ = hf
    weights = next(p for p in hf_dir.iterdir() if p.name != 'config.json')
    before = weights.read_bytes()
    with pytest.raises(ValueError, match=f'{weights.name} is the checkpoint being converted'):
        convert_file(str(hf_dir), weights)
    result = _convert(hf_dir, hf_dir, '--to', 'hf-upernet')
    assert result.returncode == 1 and 'is the checkpoint being converted' in result.stderr
    assert weights.read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize('dst_name, extra, fmt', [
    ('convnext.safetensors', [], 'safetensors'),
    ('convnext.pth', ['--format', 'pth'], 'pth'),
])
def test_tool_converts_hf_directory(hf, tmp_path, dst_name, extra, fmt):
    model, hf_dir, _, _ = hf
    dst = tmp_path / dst_name
    result = _convert(hf_dir, dst, *extra)
    assert result.returncode == 0, result.stderr
    assert 'layout: Hugging Face ConvNextForImageClassification' in result.stdout
    assert 'dropped 2 (classification head): classifier.' in result.stdout
    assert 'convnext.layernorm.weight' in result.stdout
    head = dst.read_bytes()[:4]
    assert (head == b'PK\x03\x04') == (fmt == 'pth')  # torch zip vs safetensors header
    weights = load_state_file(dst)
    assert set(weights) == {k for k in ConvNeXt(arch=ARCH).state_dict() if not k.startswith('norm')}
    assert convert_with_report(weights).layout == 'convnext_dense backbone'

    backbone = ConvNeXt(arch=ARCH).eval()
    load_pretrained(backbone, str(dst))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        outputs = backbone(x)
    for ours, theirs in zip(outputs, hf_stage_outputs(model, x)):
        assert torch.allclose(ours, channel_layer_norm(theirs), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_format_follows_suffix_and_prefix_is_passed(hf, tmp_path):
    _, _, mmpretrain, _ = hf
    dst = tmp_path / 'backbone.pth'
    result = _convert(mmpretrain, dst, '--prefix', 'backbone.')
    assert result.returncode == 0, result.stderr
    assert "mmpretrain's norm3" in result.stdout
    assert dst.read_bytes()[:2] == b'PK'


@pytest.mark.slow
def test_full_detector_checkpoint_in_a_fresh_process(hf, tmp_path):
    # A fresh interpreter has created no HistoryBuffer yet: the training logs must still load.
    _, _, _, detector = hf
    dst = tmp_path / 'backbone.safetensors'
    result = _convert(detector, dst)
    assert result.returncode == 0, result.stderr
    assert 'dropped 2 (not part of the backbone (neck.*))' in result.stdout
    assert 'norm0, norm1, norm2, norm3 taken from the dense checkpoint' in result.stdout
    assert torch.equal(load_state_file(dst)['norm2.bias'], dense_norms()['norm2.bias'])


@pytest.mark.slow
def test_tool_refuses_a_non_convnext_and_writes_nothing(tmp_path):
    src = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(10, 512)}, src)
    dst = tmp_path / 'out.safetensors'
    result = _convert(src, dst)
    assert result.returncode == 1
    assert 'not a ConvNeXt checkpoint' in result.stderr
    assert not dst.exists()
