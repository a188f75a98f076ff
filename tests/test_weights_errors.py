"""Checkpoints that do not fit, are not ConvNeXt, are damaged or carry code fail loudly."""
import os
import pickle
import struct
import warnings
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from convnext_dense import ConvNeXt
from convnext_dense.weights import CheckpointError, load_pretrained, load_state_file
from weights_reference import ARCH, build_hf_classifier, mmpretrain_cls_from_hf, official_from_hf


@pytest.fixture(scope='module')
def official(tmp_path_factory):
    """A small official-layout checkpoint (from the HF reference) and its state dict."""
    state = official_from_hf(build_hf_classifier().state_dict())
    path = tmp_path_factory.mktemp('errors') / 'convnext_official.pth'
    torch.save({'model': state}, path)
    return path, state


def test_wrong_architecture_names_both(official):
    path, _ = official
    with pytest.raises(ValueError) as info:
        load_pretrained(ConvNeXt(arch='base'), str(path))
    message = str(info.value)
    assert 'holds a ConvNeXt with depths 1,1,2,1, channels 16,32,64,128' in message
    assert "configured as 'base' (depths 3,3,27,3, channels 128,256,512,1024)" in message
    assert 'downsample_layers.0.0.weight: checkpoint [16, 3, 4, 4] vs backbone [128, 3, 4, 4]' \
        in message
    assert 'missing keys (279): stages.0.1.gamma, stages.0.1.dwconv.weight' in message


def test_named_architectures_are_recognised(tmp_path):
    path = tmp_path / 'tiny.pth'
    torch.save(ConvNeXt(arch='tiny').state_dict(), path)
    with pytest.raises(ValueError, match=r"holds a ConvNeXt with 'tiny' \(depths 3,3,9,3.*"
                                         r"configured as 'small' \(depths 3,3,27,3"):
        load_pretrained(ConvNeXt(arch='small'), str(path))


def test_resnet_checkpoint_is_not_a_convnext(tmp_path):
    from mmdet.models.backbones import ResNet
    resnet = ResNet(depth=18).state_dict()
    for name, checkpoint in (('resnet18.pth', resnet),
                             ('retinanet.pth', {'state_dict': {'backbone.' + k: v
                                                               for k, v in resnet.items()}})):
        torch.save(checkpoint, tmp_path / name)
        with pytest.raises(ValueError, match=r'not a ConvNeXt checkpoint.*conv1\.weight'):
            load_pretrained(ConvNeXt(arch=ARCH), str(tmp_path / name))


def test_missing_block_is_listed(official, tmp_path):
    _, state = official
    partial = {k: v for k, v in state.items() if not k.startswith('stages.2.1.')}
    torch.save(partial, tmp_path / 'partial.pth')
    with pytest.raises(ValueError, match=r'missing keys \(9\): stages\.2\.1\.'):
        load_pretrained(ConvNeXt(arch=ARCH), str(tmp_path / 'partial.pth'))


def test_unexpected_keys_are_listed_with_v2_hint(official, tmp_path):
    _, state = official
    grn = dict(state, **{'stages.0.0.grn.gamma': torch.zeros(1, 1, 1, 16)})
    torch.save(grn, tmp_path / 'v2.pth')
    with pytest.raises(ValueError,
                       match=r'(?s)unexpected keys \(1\): stages\.0\.0\.grn\.gamma.*V2'):
        load_pretrained(ConvNeXt(arch=ARCH), str(tmp_path / 'v2.pth'))


def test_hugging_face_v2_classifier_gets_the_v2_hint(tmp_path):
    from transformers import ConvNextV2Config, ConvNextV2ForImageClassification
    config = ConvNextV2Config(depths=list(ARCH['depths']), hidden_sizes=list(ARCH['channels']))
    ConvNextV2ForImageClassification(config).save_pretrained(tmp_path / 'v2')  # the hub's form
    with pytest.raises(ValueError, match=r'(?s)unexpected keys.*convnextv2\.encoder\.stages.*'
                                         r'keys with "\.grn\." are ConvNeXt V2 weights'):
        load_pretrained(ConvNeXt(arch=ARCH, layer_scale_init_value=0), str(tmp_path / 'v2'))


def test_missing_layer_scale_says_how_to_configure(official, tmp_path):
    _, state = official
    no_gamma = {k: v for k, v in state.items() if not k.endswith('.gamma')}
    torch.save(no_gamma, tmp_path / 'no_gamma.pth')
    with pytest.raises(ValueError, match='layer_scale_init_value=0'):
        load_pretrained(ConvNeXt(arch=ARCH), str(tmp_path / 'no_gamma.pth'))
    load_pretrained(ConvNeXt(arch=ARCH, layer_scale_init_value=0), str(tmp_path / 'no_gamma.pth'))


@pytest.mark.parametrize('checkpoint_depths, layer_scales', [
    ((1, 1, 3, 1), (1e-6, 1e-6)),  # a block more, both with layer scale: only depths differ
    ((1, 1, 1, 1), (1e-6, 1e-6)),  # a block fewer
    ((1, 1, 3, 1), (0, 0)),
])
def test_depth_mismatch_gives_no_layer_scale_hint(tmp_path, checkpoint_depths, layer_scales):
    checkpoint_scale, backbone_scale = layer_scales
    held = dict(ARCH, depths=checkpoint_depths)
    path = tmp_path / 'deeper.pth'
    torch.save(ConvNeXt(arch=held, layer_scale_init_value=checkpoint_scale).state_dict(), path)
    with pytest.raises(ValueError) as info:
        load_pretrained(ConvNeXt(arch=ARCH, layer_scale_init_value=backbone_scale), str(path))
    message = str(info.value)
    depths = ','.join(map(str, checkpoint_depths))
    assert f'holds a ConvNeXt with depths {depths}, channels 16,32,64,128' in message
    assert 'configured as depths 1,1,2,1, channels 16,32,64,128 (set arch= to match)' in message
    assert 'layer_scale_init_value' not in message


def test_depth_and_layer_scale_mismatch_gives_both_hints(tmp_path):
    path = tmp_path / 'deeper_no_gamma.pth'
    held = dict(ARCH, depths=(1, 1, 3, 1))
    torch.save(ConvNeXt(arch=held, layer_scale_init_value=0).state_dict(), path)
    with pytest.raises(ValueError, match=r'(?s)holds a ConvNeXt with depths 1,1,3,1.*'
                                         r'has no layer scale gamma.*layer_scale_init_value=0'):
        load_pretrained(ConvNeXt(arch=ARCH), str(path))
    torch.save(ConvNeXt(arch=held).state_dict(), path)
    with pytest.raises(ValueError, match=r'(?s)holds a ConvNeXt with depths 1,1,3,1.*'
                                         r'has layer scale gamma.*layer_scale_init_value > 0'):
        load_pretrained(ConvNeXt(arch=ARCH, layer_scale_init_value=0), str(path))


def test_prefix_that_matches_nothing(official):
    path, _ = official
    with pytest.raises(ValueError,
                       match=r"prefix 'backbone\.' matches no key.*downsample_layers\."):
        load_pretrained(ConvNeXt(arch=ARCH), str(path), prefix='backbone.')


@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
def test_truncated_file(official, tmp_path, fmt):
    _, state = official
    whole = tmp_path / f'whole.{fmt}'
    if fmt == 'pth':
        torch.save({'model': state}, whole)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(whole))
    data = whole.read_bytes()
    for cut in (len(data) // 2, len(data) - 100, 10):
        truncated = tmp_path / f'cut.{fmt}'
        truncated.write_bytes(data[:cut])
        message = rf'cut\.{fmt} \({cut} bytes\) is truncated or corrupt'
        with pytest.raises(ValueError, match=message):
            load_pretrained(ConvNeXt(arch=ARCH), str(truncated))


def test_every_damaged_byte_of_the_pickle_is_reported_as_corrupt(tmp_path):
    """One byte of a checkpoint's data.pkl set to 0, 0x33, ... 0xff: each file either loads or
    gives the one error (torch's unpickler raises TypeError, AttributeError or AssertionError on
    some of them)."""
    whole = tmp_path / 'whole.pth'
    torch.save({'model': {f'stages.0.{i}.dwconv.weight': torch.zeros(4, 1, 7, 7)
                          for i in range(3)}}, whole)
    data = whole.read_bytes()
    with zipfile.ZipFile(whole) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith('data.pkl'))
    name_length, extra_length = struct.unpack('<HH', data[info.header_offset + 26:
                                                          info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length
    damaged, others = tmp_path / 'damaged.pth', []
    for position in range(start, start + info.file_size):
        for value in range(0, 256, 51):
            changed = bytearray(data)
            changed[position] = value
            damaged.write_bytes(bytes(changed))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    load_state_file(damaged)
            except CheckpointError as err:
                assert 'damaged.pth' in str(err)
            except Exception as err:  # noqa: BLE001  (what the test looks for)
                others.append((position - start, value, repr(err)[:120]))
    assert not others, others[:5]


def test_html_page_is_not_a_checkpoint(tmp_path):
    page = tmp_path / 'convnext_base_22k_224.pth'
    page.write_text('<!DOCTYPE html><html><body>Access denied</body></html>')
    with pytest.raises(ValueError, match=r"not a PyTorch or safetensors checkpoint .*<!DOCTYPE"):
        load_state_file(page)


@pytest.mark.filterwarnings('ignore:Detected pickle protocol')
def test_file_types_are_told_from_their_bytes_not_their_names(official, tmp_path):
    _, state = official
    misnamed = tmp_path / 'weights.safetensors'  # torch.save output under a safetensors name
    torch.save(state, misnamed)
    assert set(load_state_file(misnamed)) == set(state)
    legacy = tmp_path / 'legacy.pth'
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    assert set(load_state_file(legacy)) == set(state)
    plain = tmp_path / 'plain.pkl'
    plain.write_bytes(pickle.dumps({'a': 1}, protocol=4))
    with pytest.raises(ValueError, match=r'plain\.pkl \(\d+ bytes\) is a plain pickle, not a '
                                         r'torch\.save or safetensors file'):
        load_state_file(plain)
    for text in ('hello', 'just text'):  # torch's unpickler raises KeyError on these
        notes = tmp_path / 'notes.pth'
        notes.write_text(text)
        with pytest.raises(ValueError, match=r'not a PyTorch or safetensors checkpoint'):
            load_state_file(notes)


def test_a_pickle_dump_of_tensors_is_named_as_such(tmp_path):
    dumped = tmp_path / 'dumped.pkl'
    with open(dumped, 'wb') as f:
        pickle.dump(torch.nn.Linear(2, 2).state_dict(), f)
    with pytest.raises(ValueError, match=r'dumped\.pkl \(\d+ bytes\) is a plain pickle of tensors '
                                         r'\(pickle\.dump\), not a torch\.save or safetensors '
                                         r'file: .*`torch\.storage\._load_from_bytes`.*If you trust'):
        load_state_file(dumped)


def test_globals_a_pickle_fetches_from_its_memo_are_named_in_full(tmp_path):
    """pickle pushes 'numpy' once and takes it from the memo for numpy.dtype."""
    from convnext_dense.weights.safe_load import _pickled_globals
    arrays = tmp_path / 'arrays.pkl'
    arrays.write_bytes(pickle.dumps({'a': np.zeros(3), 'b': np.ones(2, np.float32)}, protocol=4))
    names = _pickled_globals(arrays)
    assert names[-2:] == ['numpy.ndarray', 'numpy.dtype'] and len(names) == 3
    assert names[0].endswith('multiarray._reconstruct')


class _Payload:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


@pytest.mark.filterwarnings('ignore:Detected pickle protocol')
@pytest.mark.parametrize('writer', ['torch.save', 'pickle.dump'])
def test_pickle_with_code_is_refused_and_runs_nothing(official, tmp_path, writer):
    _, state = official
    marker = tmp_path / 'payload-ran'
    checkpoint = {'model': dict(state), 'args': _Payload(marker)}
    path = tmp_path / 'evil.pth'
    if writer == 'torch.save':
        torch.save(checkpoint, path)
    else:
        with open(path, 'wb') as f:
            pickle.dump(checkpoint, f)
    backbone = ConvNeXt(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError) as info:
        backbone.init_weights()
    assert 'refused to load' in str(info.value)
    assert '`posix.system`' in str(info.value)
    assert 'nothing from the file was executed' in str(info.value)
    assert not marker.exists()


def test_training_checkpoint_with_its_command_line_loads(official, tmp_path):
    """The official repo's and timm's training checkpoints keep their argparse arguments."""
    import argparse
    _, state = official
    path = tmp_path / 'checkpoint-best.pth'
    args = argparse.Namespace(model='convnext_base', lr=4e-3, input_size=224, layer_scale=1e-6)
    torch.save({'model': dict(state), 'epoch': 29, 'args': args}, path)
    loaded = load_state_file(path)
    assert vars(loaded['args']) == vars(args) and loaded['epoch'] == 29
    backbone = ConvNeXt(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    stem = backbone.downsample_layers[0][0].weight
    assert torch.equal(stem, state['downsample_layers.0.0.weight'])
    marker = tmp_path / 'payload-ran'
    torch.save({'model': dict(state), 'args': argparse.Namespace(hook=_Payload(marker))}, path)
    with pytest.raises(ValueError, match='`posix.system`'):  # only the Namespace itself is allowed
        load_state_file(path)
    assert not marker.exists()


class _Getattr:
    def __reduce__(self):
        return (getattr, ('abc', 'upper'))


def test_getattr_outside_training_logs_is_refused(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'model': {'x': torch.ones(1)}, 'trick': _Getattr()}, path)
    with pytest.raises(ValueError, match='refused to load'):
        load_state_file(path)


def test_bad_argument_types(official):
    path, _ = official
    with pytest.raises(TypeError, match='checkpoint must be'):
        load_pretrained(ConvNeXt(arch=ARCH), 123)
    with pytest.raises(TypeError, match='prefix must be a str'):
        load_pretrained(ConvNeXt(arch=ARCH), str(path), prefix=5)


def test_missing_path_and_directory_without_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match='not an existing file or directory'):
        load_pretrained(ConvNeXt(arch=ARCH), str(tmp_path / 'nope.pth'))
    (tmp_path / 'config.json').write_text('{}')
    with pytest.raises(FileNotFoundError, match=r"none of \['model.safetensors', "
                                                r"'pytorch_model.bin', 'model.safetensors.index"
                                                r".json', .*config.json"):
        load_pretrained(ConvNeXt(arch=ARCH), str(tmp_path))


def test_sharded_hugging_face_directory_loads_whole(tmp_path):
    hf = build_hf_classifier()
    hf.save_pretrained(tmp_path / 'sharded', max_shard_size='20KB')
    shards = sorted(p.name for p in (tmp_path / 'sharded').glob('model-*.safetensors'))
    assert len(shards) > 1
    whole, sharded = ConvNeXt(arch=ARCH), ConvNeXt(arch=ARCH)
    load_pretrained(whole, hf.state_dict())
    assert load_pretrained(sharded, str(tmp_path / 'sharded')).layout == \
        'Hugging Face ConvNextForImageClassification'
    for key, value in whole.state_dict().items():
        assert torch.equal(value, sharded.state_dict()[key]), key
    (tmp_path / 'sharded' / shards[0]).unlink()
    with pytest.raises(FileNotFoundError, match=f'{shards[0]} does not exist'):
        load_pretrained(ConvNeXt(arch=ARCH), str(tmp_path / 'sharded'))
    index = tmp_path / 'sharded' / 'model.safetensors.index.json'
    index.write_text('{"weight_map": {"a": "../elsewhere.safetensors"}}')
    with pytest.raises(ValueError, match="names the shard '../elsewhere.safetensors'"):
        load_state_file(index)


def test_data_parallel_keys_load_through_load_state_dict_and_an_explicit_prefix(official):
    _, state = official
    expected = ConvNeXt(arch=ARCH)
    load_pretrained(expected, {'model': state})
    backbone_only = {k: v for k, v in state.items() if not k.startswith(('norm.', 'head.'))}
    backbone = ConvNeXt(arch=ARCH)
    # a classification backbone saved from DistributedDataParallel: output norms start fresh
    backbone.load_state_dict({'module.' + k: v for k, v in backbone_only.items()})
    for key, value in expected.state_dict().items():
        assert torch.equal(value, backbone.state_dict()[key]), key
    detector = {'module.backbone.' + k: v for k, v in backbone_only.items()}
    detector['module.neck.conv.weight'] = torch.zeros(1)
    conversion = load_pretrained(ConvNeXt(arch=ARCH), {'state_dict': detector},
                                 prefix='module.backbone.')
    assert conversion.layout.startswith('full detector/segmenter checkpoint (module.backbone.*')


def test_a_lone_norm3_is_not_called_a_dense_model_for_sure():
    mmpretrain = mmpretrain_cls_from_hf(build_hf_classifier().state_dict())
    inside = {k[len('backbone.'):]: v for k, v in mmpretrain.items() if k.startswith('backbone.')}
    with pytest.raises(ValueError) as info:
        ConvNeXt(arch=ARCH).load_state_dict(inside)
    message = str(info.value)
    assert "only output norm is norm3: a dense model with out_indices=(3,), or an mmpretrain " \
           'classifier' in message
    assert 'other out_indices; set out_indices to match' not in message


def test_allowlist_is_restored_after_loading(official):
    path, _ = official
    before = torch.serialization.get_safe_globals()
    load_state_file(path)
    assert set(torch.serialization.get_safe_globals()) == set(before)
