"""The demo's pre-training: rendered scenes, the conv-BN-ReLU teacher, hint distillation."""
import dataclasses
import re

import cv2
import numpy as np
import pytest
import torch

from convnext_dense import ConvNeXt
from convnext_dense.extras.demo import pretrain
from convnext_dense.extras.demo.pretrain import (HINT_CHANNELS, MEAN, STD, PretrainSettings,
                                          ShapeTeacher, distill_backbone, distill_draw,
                                          multi_object_scenes, pretrain_backbone, render_scenes,
                                          single_object_scene, single_object_scenes,
                                          teacher_hint_table, train_teacher, worker_processes)
from convnext_dense.extras.demo.shapes import generate_shapes_dataset
from convnext_dense.weights import load_pretrained

from tiny import TINY_ARCH

TINY = dict(teacher_iters=3, distill_iters=3, teacher_batch_size=4, distill_batch_size=2,
            single_object_images=8, scene_images=4, warmup_iters=1)


@pytest.mark.parametrize('kwargs, named', [
    (dict(teacher_iters=0), 'teacher_iters'), (dict(distill_batch_size=1.5), 'distill_batch_size'),
    (dict(single_object_every=-1), 'single_object_every'), (dict(lr=0), 'lr'),
    (dict(hint_weights=(1, 1, 1)), 'hint_weights'),
    (dict(hint_weights=(1, -1, 1, 1)), 'hint_weights'),
    (dict(scene_crop=160), 'scene_crop'), (dict(scene_crop=16), 'scene_crop'),
    (dict(single_object_size=32), 'single_object_size'), (dict(warmup_iters=True), 'warmup_iters')])
def test_pretrain_settings_reject_bad_values(kwargs, named):
    with pytest.raises(ValueError, match=named):
        PretrainSettings(**kwargs)


def test_single_object_scenes_are_seeded_and_hold_every_class():
    images, labels = single_object_scenes(seed=3, count=40)
    again, again_labels = single_object_scenes(seed=3, count=40)
    assert images.shape == (40, 3, 64, 64) and images.dtype == torch.float32
    assert torch.equal(images, again) and torch.equal(labels, again_labels)
    assert set(labels.tolist()) == {0, 1, 2, 3}
    other, _ = single_object_scenes(seed=4, count=40)
    assert not torch.equal(images, other)


def test_single_object_scenes_hold_one_whole_shape_centred_or_anywhere():
    offsets = {}
    for centred in (False, True):
        rng = np.random.default_rng(0)
        offsets[centred] = []
        for _ in range(100):
            image, mask, label = single_object_scene(rng, size=64, centred=centred)
            assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and 0 <= label < 4
            ys, xs = np.nonzero(mask)
            assert len(ys) > 16 * 16 / 4  # a whole shape of at least 16 px (a triangle: ~1/3)
            offsets[centred].append(max(abs(ys.min() + ys.max() - 63),
                                        abs(xs.min() + xs.max() - 63)) / 2)
    anywhere, centred = np.array(offsets[False]), np.array(offsets[True])
    assert np.mean(centred <= 2) > 0.2 > 0.05 > np.mean(anywhere <= 2)
    assert np.median(centred) + 3 < np.median(anywhere)


def test_multi_object_scenes_are_crops_of_the_generators_scenes(tmp_path):
    # Under the dataset's own seed the scenes are the dataset's images: each crop is a window.
    generate_shapes_dataset(tmp_path / 'shapes', seed=0, num_train=2, num_val=1)
    crops = multi_object_scenes(seed=0, count=2, crop=128)
    assert crops.shape == (2, 3, 128, 128)
    images = []
    for index in range(2):
        image = cv2.imread(str(tmp_path / 'shapes/coco/train' / f'shapes_train_{index:06d}.jpg'))
        images.append((image[..., ::-1].astype(np.float32) - MEAN) / STD)

    def best_fit(image, crop):
        crop = crop.permute(1, 2, 0).numpy()
        return min(np.abs(image[y:y + 128, x:x + 128] - crop).mean()
                   for y in range(image.shape[0] - 127) for x in range(image.shape[1] - 127))

    for index, crop in enumerate(crops):
        assert best_fit(images[index], crop) < 0.07  # JPEG of the window ~ window of the JPEG
        assert best_fit(images[1 - index], crop) > 0.2  # the other image has no such window


@pytest.mark.parametrize('size', [(64, 64), (128, 96), (160, 192)])
def test_teacher_hints_have_the_backbone_strides(size):
    teacher, backbone = ShapeTeacher().eval(), ConvNeXt(arch=TINY_ARCH).eval()
    x = torch.rand(2, 3, *size)
    hints, _ = teacher.hints(x)
    features = backbone(x)
    assert [h.shape[1] for h in hints] == list(HINT_CHANNELS)
    assert [h.shape[2:] for h in hints] == [f.shape[2:] for f in features]


def _losses(lines, phase):
    return [[float(v) for v in re.search(r'(?:hint losses \(strides 4 8 16 32\)|loss) '
                                         r'([\d. ]+?) (?:lr|train)', line).group(1).split()]
            for line in lines if line.startswith(phase)]


def test_teacher_and_distillation_learn():
    settings = PretrainSettings(teacher_iters=60, distill_iters=60, teacher_batch_size=16,
                                distill_batch_size=4, warmup_iters=5, lr=2e-3)
    images, labels = single_object_scenes(seed=0, count=16)
    lines = []
    teacher = train_teacher(images, labels, settings, lines.append, log_interval=20)
    losses = _losses(lines, 'teacher')
    assert len(losses) == 3 and losses[-1][0] < 0.5 * losses[0][0]  # memorises 16 images
    assert not teacher.training
    scenes = multi_object_scenes(seed=5, count=4)
    lines = []
    backbone = distill_backbone(teacher, TINY_ARCH, scenes, images, settings, lines.append,
                                log_interval=20)
    losses = np.array(_losses(lines, 'distill'))
    assert losses.shape == (3, 4) and (losses[-1] < losses[0]).all()
    assert backbone.out_indices == (0, 1, 2, 3)
    assert all(not p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize('every', [0, 1, 2, 3])
def test_distillation_mirrors_each_kind_of_scene_half_the_time(every):
    settings = PretrainSettings(distill_iters=24, distill_batch_size=2, single_object_every=every)
    generator = torch.Generator().manual_seed(0)
    draws = [distill_draw(step, settings, dict(singles=5, scenes=3), generator)
             for step in range(settings.distill_iters)]
    for kind, size, count in (('singles', 5, 8), ('scenes', 3, 2)):
        mirrored = [m for k, m, index in draws if k == kind]
        if (kind == 'singles' and every == 0) or (kind == 'scenes' and every == 1):
            assert not mirrored
            continue
        assert sum(mirrored) == len(mirrored) // 2 and len(mirrored) >= 8
        indices = torch.cat([index for k, _, index in draws if k == kind])
        assert len(indices) == count * len(mirrored) and 0 <= indices.min() <= indices.max() < size


@pytest.mark.parametrize('mirrored', [False, True])
def test_teacher_hint_table_rows_are_the_hints_of_drawn_batches(mirrored):
    torch.manual_seed(0)
    teacher = ShapeTeacher().to(memory_format=torch.channels_last).eval()
    pool = torch.randn(11, 3, 64, 64)
    table = teacher_hint_table(teacher, pool, mirrored, batch_size=4)
    assert [t.shape[:2] for t in table] == [(11, c) for c in HINT_CHANNELS]
    index = torch.tensor([10, 3, 3, 7])
    x = pool[index].flip(3) if mirrored else pool[index]
    with torch.no_grad():
        hints, _ = teacher.hints(x)
    for got, want in zip(table, hints):
        torch.testing.assert_close(got[index], want, rtol=1e-5, atol=1e-6)


def test_distillation_feeds_the_drawn_scenes_to_the_student(monkeypatch):
    seen = []

    class RecordingConvNeXt(ConvNeXt):
        def forward(self, x):
            seen.append(x.clone())
            return super().forward(x)

    monkeypatch.setattr(pretrain, 'ConvNeXt', RecordingConvNeXt)
    single = torch.arange(64.).repeat(3, 64, 1)[None]  # left-to-right ramp: mirroring shows
    scene = torch.arange(128.).repeat(3, 128, 1)[None]
    settings = PretrainSettings(distill_iters=8, distill_batch_size=2)
    distill_backbone(ShapeTeacher(), TINY_ARCH, scene, single, settings, lambda line: None)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    for step, x in enumerate(seen):
        kind, mirrored, index = distill_draw(step, settings, dict(singles=1, scenes=1),
                                             generator)
        ramp = (single if kind == 'singles' else scene)[0]
        assert x.shape == (len(index), *ramp.shape)
        assert bool((x == (ramp.flip(2) if mirrored else ramp)).all())
    assert len(seen) == settings.distill_iters


def test_pretrained_backbone_loads_into_a_dense_backbone(tmp_path):
    out = tmp_path / 'distilled.pth'
    lines = []
    meta = pretrain_backbone(TINY_ARCH, out, PretrainSettings(**TINY), log=lines.append)
    assert 0 <= meta['teacher_accuracy'] <= 1 and meta['settings']['distill_iters'] == 3
    assert any(line.startswith('teacher: accuracy') for line in lines)
    assert [p.name for p in tmp_path.iterdir()] == ['distilled.pth']  # no temporary file left
    saved = torch.load(out, weights_only=True)
    assert {'downsample_layers.0.0.weight', 'norm0.weight', 'norm3.weight'} <= set(saved['model'])
    backbone = ConvNeXt(arch=TINY_ARCH)
    load_pretrained(backbone, str(out))
    state = backbone.state_dict()
    assert set(state) == set(saved['model'])
    for key, value in state.items():
        assert torch.equal(value, saved['model'][key]), key


def test_scenes_rendered_in_worker_processes_are_the_scenes_rendered_here(tmp_path):
    # make demo renders them in worker processes, beside the dataset's generation.
    settings = PretrainSettings(**TINY)
    here = render_scenes(settings)  # torch's thread pool is started here, before the fork
    with worker_processes(2) as pool:
        there = render_scenes(settings, pool)
    for field in dataclasses.fields(here):
        mine, theirs = getattr(here, field.name), getattr(there, field.name)
        assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), field.name
    assert here.singles.shape == (8, 3, 64, 64) and here.scenes.shape == (4, 3, 128, 128)
    assert here.val_singles.shape[0] == 500 and not torch.equal(here.singles, here.centred)
    # pretrain_backbone trains on the scenes it is given as on those it renders itself.
    lines = []
    pretrain_backbone(TINY_ARCH, tmp_path / 'distilled.pth', settings, log=lines.append, scenes=there)
    assert not any(line.startswith('rendered') for line in lines)
