"""The demo shapes dataset: deterministic, valid COCO and ADE20K layouts that mmdet / mmseg load."""
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmengine.registry import DefaultScope
from pycocotools.coco import COCO

from convnext_dense.extras.demo import shapes
from convnext_dense.extras.demo.scene import SHAPE_CLASSES, render_scene
from convnext_dense.extras.demo.shapes import generate_shapes_dataset, read_meta, render_image
from tool_modules import load_tool

NUM_TRAIN, NUM_VAL = 8, 4
K = len(SHAPE_CLASSES)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo') / 'shapes'
    generate_shapes_dataset(root, seed=0, num_train=NUM_TRAIN, num_val=NUM_VAL)
    return root


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def _coco(root: Path, split: str) -> COCO:
    return COCO(str(root / 'coco' / 'annotations' / f'instances_{split}.json'))


def test_same_seed_gives_same_bytes_and_another_seed_other_images(tmp_path):
    def make(name, seed):
        generate_shapes_dataset(tmp_path / name, seed=seed, num_train=3, num_val=2)
        return _hashes(tmp_path / name)

    first, second, other = make('a', 3), make('b', 3), make('c', 4)
    assert first == second
    assert len(first) == 3 * (3 + 2) + 4  # jpg, jpg, png per image; 2 COCO json, classes, meta
    assert set(other) == set(first)
    images = [name for name in first if name.endswith(('.jpg', '.png'))]
    assert all(first[name] != other[name] for name in images)


def test_more_images_extend_the_set_without_changing_earlier_ones():
    for index in range(2):
        a, b = render_image(0, 'train', index), render_image(0, 'train', index)
        assert np.array_equal(a.image, b.image)
    assert not np.array_equal(render_image(0, 'train', 0).image[:128, :128],
                              render_image(0, 'val', 0).image[:128, :128])


@pytest.mark.parametrize('split, count', [('train', NUM_TRAIN), ('val', NUM_VAL)])
def test_coco_masks_decode_and_match_boxes_and_areas(dataset, split, count):
    coco = _coco(dataset, split)
    assert len(coco.getImgIds()) == count
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
    assert coco.getCatIds() == list(range(1, K + 1))
    for image in coco.loadImgs(coco.getImgIds()):
        pixels = cv2.imread(str(dataset / 'coco' / split / image['file_name']))
        assert pixels.shape == (image['height'], image['width'], 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image['id']))
        assert anns, f'{image["file_name"]} has no objects'
        covered = np.zeros((image['height'], image['width']), int)
        for ann in anns:
            mask = coco.annToMask(ann)
            ys, xs = np.nonzero(mask)
            tight = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            np.testing.assert_allclose(ann['bbox'], tight, atol=1)
            assert ann['area'] == mask.sum() > 0
            assert ann['iscrowd'] == 0 and 1 <= ann['category_id'] <= K
            covered += mask
        assert covered.max() == 1, 'visible masks of one image must not overlap'
    ann_ids = coco.getAnnIds()
    assert len(set(ann_ids)) == len(ann_ids)


@pytest.mark.parametrize('split, ade_split', [('train', 'training'), ('val', 'validation')])
def test_ade_label_maps_agree_with_coco_masks(dataset, split, ade_split):
    coco = _coco(dataset, split)
    for image in coco.loadImgs(coco.getImgIds()):
        stem = Path(image['file_name']).stem
        ade_image = dataset / 'ade' / 'images' / ade_split / f'{stem}.jpg'
        coco_image = dataset / 'coco' / split / image['file_name']
        assert ade_image.read_bytes() == coco_image.read_bytes()
        labels = cv2.imread(str(dataset / 'ade' / 'annotations' / ade_split / f'{stem}.png'),
                            cv2.IMREAD_UNCHANGED)
        assert labels.dtype == np.uint8 and labels.shape == (image['height'], image['width'])
        assert set(np.unique(labels)) <= set(range(K + 1)) and 0 in labels
        expected = np.zeros_like(labels)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image['id'])):
            expected[coco.annToMask(ann).astype(bool)] = ann['category_id']
        np.testing.assert_array_equal(labels, expected)


def test_classes_sizes_occlusion_and_image_shapes(dataset):
    coco = _coco(dataset, 'train')
    anns = coco.loadAnns(coco.getAnnIds())
    assert {ann['category_id'] for ann in anns} == set(range(1, K + 1))
    long_sides = [max(ann['bbox'][2:]) for ann in anns]
    assert max(long_sides) <= 96 and min(long_sides) >= 8
    assert min(long_sides) < 32 and max(long_sides) > 64
    heights = [img['height'] for img in coco.loadImgs(coco.getImgIds())]
    widths = [img['width'] for img in coco.loadImgs(coco.getImgIds())]
    assert min(heights + widths) >= 128 and max(heights + widths) <= 192
    assert any(h != w for h, w in zip(heights, widths))
    occluded = 0
    for index in range(NUM_TRAIN):
        for inst in render_image(0, 'train', index).instances:
            ys, xs = np.nonzero(inst.full_mask)
            assert max(xs.max() - xs.min(), ys.max() - ys.min()) + 1 == inst.size
            assert 16 <= inst.size <= 96
            assert inst.mask.sum() >= 0.5 * inst.full_mask.sum()
            assert not (inst.mask & ~inst.full_mask).any()
            occluded += inst.mask.sum() < inst.full_mask.sum()
    assert occluded >= 3


def test_colour_does_not_give_the_class_away():
    """Every class appears in dark and bright, reddish and bluish instances alike."""
    colours = {label: [] for label in range(1, K + 1)}
    for index in range(30):
        scene = render_image(1, 'train', index)
        for inst in scene.instances:
            colours[inst.label].append(scene.image[inst.mask].mean(axis=0))
    for label, values in colours.items():
        values = np.array(values)
        assert len(values) >= 10
        assert (values.max(axis=0) - values.min(axis=0) > 120).all(), SHAPE_CLASSES[label - 1]


def test_meta_and_class_files(dataset):
    meta = read_meta(dataset)
    assert meta['classes'] == list(SHAPE_CLASSES)
    assert (meta['seed'], meta['num_train'], meta['num_val']) == (0, NUM_TRAIN, NUM_VAL)
    train = meta['stats']['train']
    assert train['images'] == NUM_TRAIN
    assert sum(train['instances_per_class'].values()) == train['instances']
    assert len(_coco(dataset, 'train').getAnnIds()) == train['instances']
    ade = json.loads((dataset / 'ade' / 'classes.json').read_text())
    assert ade['classes'] == list(SHAPE_CLASSES) and ade['background_label'] == 0
    assert ade['label_ids'] == {name: k + 1 for k, name in enumerate(SHAPE_CLASSES)}


def test_second_call_skips_and_other_arguments_regenerate(tmp_path):
    out = tmp_path / 'shapes'
    _, created = generate_shapes_dataset(out, seed=0, num_train=2, num_val=1)
    assert created
    marker = out / 'coco' / 'untouched'
    marker.write_text('x')
    assert generate_shapes_dataset(out, seed=0, num_train=2, num_val=1)[1] is False
    assert marker.exists()
    meta, created = generate_shapes_dataset(out, seed=0, num_train=3, num_val=1)
    assert created and meta['num_train'] == 3 and not marker.exists()
    assert len(list((out / 'coco' / 'train').iterdir())) == 3
    assert generate_shapes_dataset(out, seed=0, num_train=3, num_val=1, force=True)[1] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ['shapes']  # no temporary folders left


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    out = tmp_path / 'shapes'
    out.mkdir()  # an empty folder may be filled

    def fail(root, seed, split, count):
        (root / 'coco').mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, '_write_split', fail)
    with pytest.raises(KeyboardInterrupt):
        generate_shapes_dataset(out, num_train=2, num_val=1)
    assert list(tmp_path.iterdir()) == [out] and not any(out.iterdir())
    assert read_meta(out) is None


def test_regenerating_keeps_files_the_user_added_beside_the_dataset(tmp_path):
    out = tmp_path / 'shapes'
    generate_shapes_dataset(out, seed=0, num_train=1, num_val=1)
    (out / 'NOTES.txt').write_text('mine')
    with pytest.raises(FileExistsError, match=r'shapes already holds NOTES\.txt'):
        generate_shapes_dataset(out, seed=1, num_train=1, num_val=1)
    assert (out / 'NOTES.txt').read_text() == 'mine' and read_meta(out)['seed'] == 0


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / 'notes.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='not a demo shapes dataset'):
        generate_shapes_dataset(tmp_path, num_train=1, num_val=1)
    assert (tmp_path / 'notes.txt').read_text() == 'keep me'


@pytest.mark.parametrize('kwargs, message', [
    (dict(seed=-1), r'seed must be an int >= 0, got -1'),
    (dict(num_train=0), r'num_train must be an int >= 1, got 0'),
    (dict(num_val=2.0), r'num_val must be an int >= 1, got 2.0'),
    (dict(num_train=True), r'num_train must be an int >= 1, got True'),
])
def test_bad_generator_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_shapes_dataset(tmp_path / 'x', **kwargs)
    assert not (tmp_path / 'x').exists()


@pytest.mark.parametrize('kwargs, message', [
    (dict(height=64), r'height must be an int >= object_size max 96, got 64'),
    (dict(object_size=(32, 16)), r'object_size must be \(min, max\) integers'),
    (dict(num_objects=(1,)), r'num_objects must be \(min, max\)'),
    (dict(num_objects=(True, 3)), r'num_objects must be \(min, max\) integers'),
    (dict(width=True), r'width must be an int >= object_size max 96, got True'),
    (dict(min_visible=0), r'min_visible must be in \(0, 1\], got 0'),
    (dict(overlap_prob=1.5), r'overlap_prob must be in \[0, 1\], got 1.5'),
])
def test_bad_scene_arguments(kwargs, message):
    args = dict(height=128, width=128, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=message):
        render_scene(**{**args, **kwargs})


def test_cli_generates_then_reports_up_to_date(tmp_path, capsys):
    tool = load_tool('make_demo_data')
    args = [str(tmp_path / 'd'), '--seed', '1', '--num-train', '2', '--num-val', '1']
    tool.main(args)
    tool.main(args)
    out = capsys.readouterr().out
    assert 'generated in' in out and 'already up to date' in out and 'train: 2 images' in out
    assert read_meta(tmp_path / 'd')['seed'] == 1
    with pytest.raises(SystemExit):  # argparse error, not a traceback
        tool.main([str(tmp_path / 'd'), '--num-val', '0'])
    assert 'num_val must be an int >= 1, got 0' in capsys.readouterr().err


def test_mmdet_coco_dataset_loads_masks_and_boxes(dataset):
    import mmdet.datasets  # noqa: F401  registers CocoDataset and the transforms
    from mmdet.registry import DATASETS
    with DefaultScope.overwrite_default_scope('mmdet'):
        det = DATASETS.build(dict(
            type='CocoDataset', data_root=str(dataset / 'coco'),
            ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
            metainfo=dict(classes=SHAPE_CLASSES),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', with_bbox=True, with_mask=True)]))
    assert len(det) == NUM_VAL
    coco = _coco(dataset, 'val')
    for index in (0, NUM_VAL - 1):
        item = det[index]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=item['img_id']))
        assert item['img'].shape[:2] == (item['height'], item['width'])
        labels = [a['category_id'] - 1 for a in anns]
        np.testing.assert_array_equal(item['gt_bboxes_labels'], labels)
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)]
        np.testing.assert_allclose(item['gt_bboxes'].numpy(), boxes)
        np.testing.assert_array_equal(item['gt_masks'].masks, [coco.annToMask(a) for a in anns])
        assert not item['gt_ignore_flags'].any()


def test_mmseg_ade_style_dataset_reduces_zero_label(dataset):
    import mmseg.datasets  # noqa: F401  registers BaseSegDataset and the transforms
    from mmseg.registry import DATASETS
    with DefaultScope.overwrite_default_scope('mmseg'):
        seg = DATASETS.build(dict(
            type='BaseSegDataset', data_root=str(dataset / 'ade'),
            data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
            img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True,
            metainfo=dict(classes=SHAPE_CLASSES),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]))
    assert len(seg) == NUM_VAL and seg.metainfo['classes'] == SHAPE_CLASSES
    item = seg[1]
    raw = cv2.imread(item['seg_map_path'], cv2.IMREAD_UNCHANGED)
    expected = np.where(raw == 0, 255, raw.astype(int) - 1)
    np.testing.assert_array_equal(item['gt_seg_map'], expected)
    assert set(np.unique(item['gt_seg_map'])) <= set(range(K)) | {255}
    assert item['img'].shape[:2] == raw.shape
