"""tools/publish_model.py: a training checkpoint stripped to meta + state_dict, named by its hash,
loadable with a plain weights-only torch.load (which mmdet's and mmseg's own script cannot read
from on torch >= 2.6)."""
import datetime
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convnext_dense.convert.publish import publish_checkpoint
from weights_reference import build_hf_classifier, dense_norms, detector_from_hf

REPO = Path(__file__).resolve().parents[1]
DAY = datetime.date(2026, 11, 30)
PLAIN_LOAD = ('import sys, torch; c = torch.load(sys.argv[1], weights_only=True); '
              'print(sorted(c), type(c["meta"]["seed"]).__name__)')


@pytest.fixture(scope='module')
def training_checkpoint(tmp_path_factory):
    """What mmengine's Runner writes: message_hub with numpy logs, optimizer, numpy seed."""
    path = tmp_path_factory.mktemp('publish') / 'epoch_12.pth'
    torch.save(detector_from_hf(build_hf_classifier().state_dict(), dense_norms()), path)
    return path


def _plain_load(path):
    return subprocess.run([sys.executable, '-c', PLAIN_LOAD, str(path)], capture_output=True,
                          text=True, timeout=120)


def test_publish_keeps_meta_and_weights_and_names_the_file_by_its_hash(training_checkpoint,
                                                                       tmp_path):
    published = publish_checkpoint(training_checkpoint, tmp_path / 'out' / 'mask-rcnn.pth',
                                   date=DAY)
    data = published.path.read_bytes()
    assert published.sha256 == hashlib.sha256(data).hexdigest()
    assert published.path == tmp_path / 'out' / f'mask-rcnn_20261130-{published.sha256[:8]}.pth'
    assert published.removed == ('message_hub', 'optimizer')
    assert published.size_out == len(data) < published.size_in
    assert [p.name for p in published.path.parent.iterdir()] == [published.path.name]

    source = torch.load(training_checkpoint, weights_only=False)
    result = torch.load(published.path, weights_only=False)
    assert set(result) == {'meta', 'state_dict'}
    assert result['state_dict'].keys() == source['state_dict'].keys()
    assert all(torch.equal(v, source['state_dict'][k]) for k, v in result['state_dict'].items())
    assert result['meta']['dataset_meta'] == source['meta']['dataset_meta']
    assert type(result['meta']['seed']) is int and result['meta']['seed'] == 0


def test_published_file_loads_with_a_plain_weights_only_load(training_checkpoint, tmp_path):
    refused = _plain_load(training_checkpoint)  # what publish_model.py of mmdet / mmseg hits
    assert refused.returncode != 0 and 'Unsupported global' in refused.stderr
    published = publish_checkpoint(training_checkpoint, tmp_path / 'm.pth', date=DAY)
    loaded = _plain_load(published.path)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["['meta',", "'state_dict']", 'int']


def test_more_keys_on_request_and_state_dict_always(training_checkpoint, tmp_path):
    published = publish_checkpoint(training_checkpoint, tmp_path / 'm.pth',
                                   save_keys=('meta', 'state_dict', 'optimizer'), date=DAY)
    assert published.removed == ('message_hub',)
    assert 'optimizer' in torch.load(published.path, weights_only=True)
    with pytest.raises(ValueError, match=r"save_keys \['meta'\] must include 'state_dict'"):
        publish_checkpoint(training_checkpoint, tmp_path / 'm.pth', save_keys=('meta',))
    with pytest.raises(ValueError, match=r"has no \['param_schedulers'\]; its keys are"):
        publish_checkpoint(training_checkpoint, tmp_path / 'm.pth',
                           save_keys=('state_dict', 'param_schedulers'))
    for folder in (tmp_path, f'{tmp_path}/sub/'):  # not OUT_date-hash.pth beside the folder
        with pytest.raises(ValueError, match=r'is a folder: give the name to publish under'):
            publish_checkpoint(training_checkpoint, folder, date=DAY)


def test_tool_publishes_and_names_bad_input_in_one_line(training_checkpoint, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, str(REPO / 'tools' / 'publish_model.py'),
                               *map(str, args)], cwd=REPO, capture_output=True, text=True,
                              timeout=120)

    done = run(training_checkpoint, tmp_path / 'det.pth')
    assert done.returncode == 0, done.stderr
    assert 'removed: message_hub, optimizer' in done.stdout
    written = Path(done.stdout.strip().splitlines()[-1].removeprefix('wrote '))
    assert written.is_file() and written.parent == tmp_path
    assert written.name.startswith('det_') and written.name.endswith('.pth')

    bare = tmp_path / 'bare.pth'
    torch.save({'conv.weight': torch.zeros(2)}, bare)
    (tmp_path / 'afile').write_text('a file where a folder is wanted')
    (tmp_path / 'afolder').mkdir()
    for args, error in [((bare, tmp_path / 'x.pth'), "holds no 'state_dict'"),
                        ((tmp_path / 'nope.pth', tmp_path / 'x.pth'), 'does not exist'),
                        ((tmp_path / 'afolder', tmp_path / 'x.pth'), 'is a folder, not a file'),
                        ((training_checkpoint, tmp_path / 'afile' / 'x.pth'),
                         f'{tmp_path / "afile"} is a file, so ')]:
        result = run(*args)
        assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
        assert result.stderr.startswith('error: ') and error in result.stderr
    assert not list(tmp_path.glob('x*'))
