"""Hugging Face UperNetForSemanticSegmentation (ConvNeXt) <-> mmseg UperNet, logits compared.

transformers is the reference: a small random UperNet with every parameter and BatchNorm statistic
perturbed, saved with ``save_pretrained``, is loaded into the matching mmseg config (the demo
UperNet: depths 1-1-3-1, channels 32-256, head 64, auxiliary 32, 5 classes), and both models'
logits on the same normalised input are compared in fp32, eval mode, whole-image inference.
"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from failing_writes import assert_a_dying_save_keeps
from model_checkpoints import SEG_CONFIG, demo_cfg

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ('background', 'circle', 'triangle', 'square', 'star')
TOLERANCE = 1e-4
INPUT_SHAPE = (2, 3, 96, 128)


def _hf_upernet(seed: int = 0, pool_scales=(1, 2, 3, 6)):
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    config = UperNetConfig(
        backbone_config=ConvNextConfig(depths=[1, 1, 3, 1], hidden_sizes=[32, 64, 128, 256],
                                       layer_scale_init_value=1.0,
                                       out_features=['stage1', 'stage2', 'stage3', 'stage4']),
        hidden_size=64, auxiliary_channels=32, auxiliary_in_channels=128,
        pool_scales=list(pool_scales),
        id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)})
    model = UperNetForSemanticSegmentation(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
        for name, buffer in model.named_buffers():
            if name.endswith('running_mean'):
                buffer.copy_(0.1 * torch.randn_like(buffer))
            elif name.endswith('running_var'):
                buffer.copy_(0.5 + torch.rand_like(buffer))
    return model.eval()


def _hf_logits(model, x):
    with torch.no_grad():
        return model(pixel_values=x).logits


def _mmseg_logits(model, x):
    shape = tuple(x.shape[2:])
    metas = [dict(img_shape=shape, ori_shape=shape, pad_shape=shape)] * x.shape[0]
    with torch.no_grad():
        return model.encode_decode(x, metas)


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
    model = _hf_upernet()
    path = tmp_path_factory.mktemp('hf') / 'upernet-convnext-demo'
    model.save_pretrained(path)
    x = torch.randn(*INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
    return path, x, _hf_logits(model, x)


@pytest.fixture(scope='module')
def mmseg_from_hf(hf_dir):
    from mmseg.apis import init_model
    path, x, reference = hf_dir
    model = init_model(demo_cfg(SEG_CONFIG), str(path), device='cpu').eval()
    return model


def test_hf_directory_loads_through_init_model(hf_dir, mmseg_from_hf):
    _, x, reference = hf_dir
    logits = _mmseg_logits(mmseg_from_hf, x)
    assert logits.shape == reference.shape
    difference = (logits - reference).abs().max().item()
    print(f'max |mmseg - HF| logit difference: {difference:.3g} (logits up to {reference.abs().max():.3g})')
    assert difference < TOLERANCE
    assert tuple(mmseg_from_hf.dataset_meta['classes']) == CLASSES


def test_init_model_reports_the_hf_layout_it_read(hf_dir):
    # init_model reads the directory through mmengine's loader, which renames it; loading that
    # dict must still name the directory and Hugging Face's layout, not "our own layout".
    from mmseg.apis import init_model
    from convnext_dense.model_checkpoints import load_local_or_hf
    from convnext_dense.weights.model_layouts import LAYOUT_HF_UPERNET
    from convnext_dense.weights.model_loader import READ_FROM, load_model_checkpoint
    path, _, _ = hf_dir
    converted = load_local_or_hf(str(path))
    model = init_model(demo_cfg(SEG_CONFIG), None, device='cpu')
    checkpoint = load_model_checkpoint(model, converted)
    assert checkpoint.layout == LAYOUT_HF_UPERNET
    assert str(path) in checkpoint.where
    assert 'backbone.downsample_layers.0.0.weight' in checkpoint.renamed
    assert READ_FROM not in checkpoint.meta and READ_FROM in converted['meta']


def test_round_trip_back_to_hf(hf_dir, mmseg_from_hf, tmp_path):
    from transformers import UperNetForSemanticSegmentation
    _, x, reference = hf_dir
    mmseg_file = tmp_path / 'upernet.pth'
    torch.save({'state_dict': mmseg_from_hf.state_dict(),
                'meta': {'dataset_meta': {'classes': CLASSES}}}, mmseg_file)
    out = tmp_path / 'hf_again'
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'convert_checkpoint.py'),
                             str(mmseg_file), str(out), '--to', 'hf-upernet', '--verbose'],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'decode_head.conv_seg.weight -> decode_head.classifier.weight' in result.stdout
    again = UperNetForSemanticSegmentation.from_pretrained(out).eval()
    assert again.config.id2label == dict(enumerate(CLASSES))
    difference = (_hf_logits(again, x) - reference).abs().max().item()
    print(f'max |HF(converted back) - HF| logit difference: {difference:.3g}')
    assert difference < TOLERANCE
    own_logits = _mmseg_logits(mmseg_from_hf, x)
    assert (_hf_logits(again, x) - own_logits).abs().max().item() < TOLERANCE


def test_a_failed_hf_upernet_write_keeps_the_directory_there_was(mmseg_from_hf, tmp_path,
                                                                 monkeypatch):
    from transformers import UperNetForSemanticSegmentation
    from convnext_dense.weights import save_hf_upernet
    out = tmp_path / 'hf_upernet'
    save_hf_upernet(mmseg_from_hf.state_dict(), out, CLASSES)
    assert_a_dying_save_keeps(
        out, UperNetForSemanticSegmentation,
        lambda: save_hf_upernet(mmseg_from_hf.state_dict(), out, CLASSES), monkeypatch)


def test_hf_directory_to_mmseg_checkpoint(hf_dir, tmp_path):
    from mmseg.apis import init_model
    path, x, reference = hf_dir
    out = tmp_path / 'from_hf.pth'
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'convert_checkpoint.py'),
                             str(path), str(out), '--to', 'mmseg', '--verbose'],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'Hugging Face UperNetForSemanticSegmentation' in result.stdout
    assert 'backbone.embeddings.patch_embeddings.weight -> backbone.downsample_layers.0.0.weight' \
        in result.stdout
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint['meta']['dataset_meta']['classes'] == CLASSES
    model = init_model(demo_cfg(SEG_CONFIG), str(out), device='cpu').eval()
    assert (_mmseg_logits(model, x) - reference).abs().max().item() < TOLERANCE


def test_switch_is_explicit():
    code = ('import convnext_dense, convnext_dense.model_checkpoints as m; from mmengine.runner '
            'import CheckpointLoader as C; print(m.enabled())')
    before = ('import convnext_dense; from mmengine.runner import CheckpointLoader as C; '
              "print(C._schemes[''].__name__)")
    out = [subprocess.run([sys.executable, '-c', c], cwd=ROOT, capture_output=True, text=True,
                          timeout=120).stdout.strip().splitlines()[-1] for c in (before, code)]
    assert out == ['load_from_local', 'True']  # mmengine's own loader until the switch


def _hf_predictions(model, image_paths):
    """HF's argmax on each image, normalised as the mmseg config's data preprocessor does."""
    import mmcv
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    out = {}
    for path in image_paths:
        rgb = mmcv.imread(str(path))[:, :, ::-1].copy()  # mmseg's loader (cv2), BGR -> RGB
        x = (torch.from_numpy(rgb).permute(2, 0, 1).float() - mean) / std
        out[path.stem] = _hf_logits(model, x[None]).argmax(1)[0]
    return out


@pytest.mark.slow
def test_hf_directory_through_tools_test(hf_dir, tmp_path):
    """tools/test.py on the HF directory predicts what transformers predicts, pixel for pixel."""
    import numpy as np
    from PIL import Image
    from transformers import UperNetForSemanticSegmentation
    from convnext_dense.extras.demo import generate_shapes_dataset
    generate_shapes_dataset(tmp_path / 'shapes', seed=5, num_train=2, num_val=2)
    path, _, _ = hf_dir
    data_root = tmp_path / 'shapes' / 'ade'
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'test.py'), SEG_CONFIG, str(path), '--work-dir',
         str(tmp_path / 'w'), '--out', str(tmp_path / 'pred'), '--cfg-options',
         f'test_dataloader.dataset.data_root={data_root}', 'test_dataloader.num_workers=0',
         'model.test_cfg.mode=whole'],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'Hugging Face UperNetForSemanticSegmentation (ConvNextBackbone) layout) for evaluate' in log
    assert 'mIoU:' in log
    images = sorted((data_root / 'images' / 'validation').glob('*.jpg'))
    reference = _hf_predictions(UperNetForSemanticSegmentation.from_pretrained(path).eval(), images)
    assert len(reference) == 2
    for name, expected in reference.items():
        predicted = torch.from_numpy(np.asarray(Image.open(tmp_path / 'pred' / f'{name}.png')))
        assert predicted.shape == expected.shape
        agreement = (predicted.long() == expected).float().mean().item()
        print(f'{name}: tools/test.py and transformers agree on {agreement:.4%} of pixels')
        assert agreement > 0.999  # ties within 1e-4 may round either way
        assert len(expected.unique()) > 1  # not one class everywhere


def _convert(*args):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'convert_checkpoint.py'),
                           *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_pool_scales_travel_with_the_checkpoint_both_ways(tmp_path):
    from mmseg.apis import init_model
    from convnext_dense.weights import load_model_checkpoint
    from convnext_dense.weights.errors import CheckpointError
    model = _hf_upernet(pool_scales=(1, 2, 4, 8))  # the tensors of 1 2 3 6, other pooling
    hf = tmp_path / 'hf_1248'
    model.save_pretrained(hf)
    # Into a model that pools at mmseg's default scales: refused, not loaded to predict wrongly.
    default = init_model(demo_cfg(SEG_CONFIG), device='cpu')
    with pytest.raises(CheckpointError, match=r'pool_scales \(1, 2, 4, 8\), but the model\'s '
                                              r'decode_head.pool_scales is \(1, 2, 3, 6\)'):
        load_model_checkpoint(default, hf)
    cfg = demo_cfg(SEG_CONFIG)
    cfg.model.decode_head.pool_scales = (1, 2, 4, 8)
    matching = init_model(cfg, str(hf), device='cpu').eval()
    x = torch.randn(*INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
    assert (_mmseg_logits(matching, x) - _hf_logits(model, x)).abs().max().item() < TOLERANCE
    # mmseg -> HF: the scales of the config mmengine stored in the checkpoint, not 1 2 3 6.
    mmseg_file = tmp_path / 'upernet_1248.pth'
    torch.save({'state_dict': matching.state_dict(), 'meta': {'cfg': cfg.pretty_text}},
               mmseg_file)
    result = _convert(mmseg_file, tmp_path / 'hf_again', '--to', 'hf-upernet')
    assert result.returncode == 0, result.stderr[-2000:]
    assert "decode-head pool scales (1, 2, 4, 8) (the checkpoint's)" in result.stdout
    from transformers import UperNetForSemanticSegmentation
    again = UperNetForSemanticSegmentation.from_pretrained(tmp_path / 'hf_again').eval()
    assert again.config.pool_scales == [1, 2, 4, 8]
    assert (_hf_logits(again, x) - _hf_logits(model, x)).abs().max().item() < TOLERANCE
    refused = _convert(mmseg_file, tmp_path / 'hf_other', '--to', 'hf-upernet',
                       '--pool-scales', '1', '2', '3', '6')
    assert refused.returncode == 1 and 'trained with pool_scales (1, 2, 4, 8)' in refused.stderr
    # HF -> mmseg file: the scales go along, so that file is refused by a default model too.
    result = _convert(hf, tmp_path / 'from_hf.pth', '--to', 'mmseg')
    assert result.returncode == 0, result.stderr[-2000:]
    with pytest.raises(CheckpointError, match=r'pool_scales \(1, 2, 4, 8\)'):
        load_model_checkpoint(default, tmp_path / 'from_hf.pth')


@pytest.mark.parametrize('edit, said', [
    (lambda c: c.update(id2label={'0': 'a', '1': 'b', '2': 'c'}),
     'says classes (id2label) 3, but the weights beside it hold 5'),
    (lambda c: c['backbone_config'].update(hidden_sizes=[96, 192, 384, 768]),
     'says backbone_config.hidden_sizes (96, 192, 384, 768), but the weights beside it hold '
     '(32, 64, 128, 256)'),
    (lambda c: c.update(id2label={'a': 'x'}), 'is not a Hugging Face UperNet config'),
])
def test_a_config_json_that_contradicts_its_weights_is_refused(hf_dir, tmp_path, edit, said):
    import json
    import shutil
    path, _, _ = hf_dir
    broken = tmp_path / 'mixed'
    shutil.copytree(path, broken)
    config = json.loads((broken / 'config.json').read_text())
    edit(config)
    (broken / 'config.json').write_text(json.dumps(config))
    result = _convert(broken, tmp_path / 'out.pth', '--to', 'mmseg')
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert said in result.stderr
    assert not (tmp_path / 'out.pth').exists()


def test_mmseg_target_takes_only_segmenters_in_pth_files(hf_dir, mmseg_from_hf, tmp_path):
    path, _, _ = hf_dir
    backbone = tmp_path / 'backbone.pth'
    torch.save({k[len('backbone.'):]: v for k, v in mmseg_from_hf.state_dict().items()
                if k.startswith('backbone.')}, backbone)
    for target in ('mmseg', 'hf-upernet'):
        result = _convert(backbone, tmp_path / f'out_{target}.pth', '--to', target)
        assert result.returncode == 1 and 'has no decode_head tensors' in result.stderr, \
            result.stderr[-2000:]
    for args in (['o.safetensors'], ['o.pth', '--format', 'safetensors']):
        result = _convert(path, tmp_path / args[0], '--to', 'mmseg', *args[1:])
        assert result.returncode == 1 and 'torch.save file' in result.stderr, result.stderr
        assert not (tmp_path / args[0]).exists()


def test_export_folder_keeps_files_save_pretrained_never_writes(mmseg_from_hf, tmp_path):
    from convnext_dense.weights import save_hf_upernet
    out = tmp_path / 'hf_upernet'
    save_hf_upernet(mmseg_from_hf.state_dict(), out, CLASSES)
    (out / 'preprocessor_config.json').write_text('{"image_processor_type": "x"}')
    with pytest.raises(FileExistsError, match='preprocessor_config.json'):
        save_hf_upernet(mmseg_from_hf.state_dict(), out, CLASSES)
    assert (out / 'preprocessor_config.json').is_file()
