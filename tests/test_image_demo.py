"""``tools/image_demo.py``: any checkpoint source, class names and palette by one rule, folders of
images, drawings in ``OUT_DIR/vis`` (never over a user's file), devices named."""
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from mmseg.datasets import BaseSegDataset
from safetensors.torch import save_file

from convnext_dense.runtime.class_names import drawing_meta
from convnext_dense.runtime.config import load_config
from convnext_dense.runtime.inference import check_device, draw_predictions
from deploy_helpers import DET_CONFIG, ROOT, SEG_CONFIG, random_checkpoint

SEG_CLASSES = ('background', 'circle', 'triangle', 'square', 'star')  # the demo config's


@pytest.fixture(scope='module')
def segmenter(tmp_path_factory):
    return random_checkpoint(SEG_CONFIG, tmp_path_factory.mktemp('image_demo') / 'upernet.pth')


def _image(path, value=90, size=(64, 96)):
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = np.full(size + (3,), value, np.uint8)
    cv2.circle(picture, (40, 30), 15, (255, 40, 40), -1)
    cv2.imwrite(str(path), picture)
    return path


def test_palette_rule_matches_mmseg_for_classes_without_colours(tmp_path):
    cfg = load_config(str(SEG_CONFIG))
    renamed = tuple(f'kind{i}' for i in range(5))
    # The checkpoint's classes win; the config's palette serves them when the count fits.
    meta = drawing_meta(cfg, 'mmseg', {'dataset_meta': {'classes': renamed}})
    assert meta['classes'] == renamed and meta['palette'] == list(cfg.palette)
    # No meta at all (mmseg's init_model raised KeyError 'meta'): the config's.
    assert drawing_meta(cfg, 'mmseg', None) == {'classes': SEG_CLASSES,
                                                'palette': list(cfg.palette)}
    # Seven classes and no colours anywhere: as mmseg's own datasets colour them.
    seven = tuple(f'kind{i}' for i in range(7))
    reference = BaseSegDataset(metainfo=dict(classes=seven), data_root=str(tmp_path),
                               lazy_init=True).metainfo['palette']
    meta = drawing_meta(cfg, 'mmseg', {'dataset_meta': {'classes': seven}})
    assert meta['palette'] == [tuple(color) for color in reference]
    # mmdet 2.x / mmseg 0.x checkpoints: meta['CLASSES'] and meta['PALETTE'].
    old = drawing_meta(cfg, 'mmseg', {'CLASSES': renamed, 'PALETTE': [[1, 2, 3]] * 5})
    assert old == {'classes': renamed, 'palette': [(1, 2, 3)] * 5}


@pytest.mark.parametrize('meta', [None, {'dataset_meta': {'classes': SEG_CLASSES}}])
def test_segmenter_checkpoint_without_meta_or_palette_is_drawn(segmenter, tmp_path, meta):
    checkpoint = tmp_path / 'model.pth'
    saved = {'state_dict': torch.load(segmenter)['state_dict']}
    if meta is not None:
        saved['meta'] = meta
    torch.save(saved, checkpoint)
    image = _image(tmp_path / 'photo.jpg')
    (drawn,) = draw_predictions(image, SEG_CONFIG, checkpoint, tmp_path / 'out')
    assert drawn == tmp_path / 'out' / 'vis' / 'photo.png'
    assert cv2.imread(str(drawn)).shape == cv2.imread(str(image)).shape


def test_checkpoint_from_a_weights_folder(segmenter, tmp_path):
    folder = tmp_path / 'upernet_weights'
    folder.mkdir()
    state = torch.load(segmenter)['state_dict']
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / 'model.safetensors'))
    (drawn,) = draw_predictions(_image(tmp_path / 'a.jpg'), SEG_CONFIG, folder, tmp_path / 'out')
    assert drawn.is_file()


def test_a_folder_is_drawn_image_by_image_beside_the_users_files(segmenter, tmp_path):
    photos = tmp_path / 'photos'
    first, second = _image(photos / 'cat.jpg', 40), _image(photos / 'dog.png', 200)
    (photos / 'notes.txt').write_text('not an image')
    users = _image(photos / 'cat.png', 10)  # another picture with the stem of cat.jpg
    before = users.read_bytes()
    result = subprocess.run(
        [sys.executable, 'tools/image_demo.py', str(photos), str(SEG_CONFIG), str(segmenter),
         '--out-dir', str(photos)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    # cat.jpg and cat.png would share a drawing: refused before anything is computed.
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert f'{first} and {users} would both be drawn to' in result.stderr
    assert users.read_bytes() == before and not (photos / 'vis').exists()
    users.unlink()
    result = subprocess.run(
        [sys.executable, 'tools/image_demo.py', str(photos), str(SEG_CONFIG), str(segmenter),
         '--out-dir', str(photos)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f'wrote 2 drawings to {photos / "vis"}' in result.stdout
    for image in (first, second):
        drawn = cv2.imread(str(photos / 'vis' / f'{image.stem}.png'))
        assert drawn is not None and drawn.shape == cv2.imread(str(image)).shape
    assert sorted(p.name for p in photos.iterdir()) == ['cat.jpg', 'dog.png', 'notes.txt', 'vis']


def test_detector_checkpoint_without_meta_uses_the_configs_classes(tmp_path):
    checkpoint = random_checkpoint(DET_CONFIG, tmp_path / 'mask_rcnn.pth')
    (drawn,) = draw_predictions(_image(tmp_path / 'photo.jpg'), DET_CONFIG, checkpoint,
                                tmp_path / 'out', score_thr=0.0)
    assert drawn.is_file()
    cfg = load_config(str(DET_CONFIG))
    assert drawing_meta(cfg, 'mmdet', None)['classes'] == tuple(cfg.classes)  # not COCO's 80


@pytest.mark.parametrize('device, said', [
    ('meta', "device 'meta': this machine (or this torch build) has no meta device"),
    ('mps', "device 'mps': this machine (or this torch build) has no mps device"),
    ('gpu', "device 'gpu' is not a torch device"),
])
def test_devices_this_machine_lacks_are_named(device, said, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: False)
    with pytest.raises(ValueError, match=re.escape(said)):
        check_device(device)


def test_folder_without_images_and_config_without_model_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'holds no images \(files ending in .jpg'):
        draw_predictions(tmp_path, SEG_CONFIG, tmp_path / 'x.pth', tmp_path / 'out')
    config = tmp_path / 'no_model.py'
    config.write_text("default_scope = 'mmseg'\n")
    with pytest.raises(ValueError, match='defines no model'):
        draw_predictions(_image(tmp_path / 'a.jpg'), config, tmp_path / 'x.pth', tmp_path / 'o')
