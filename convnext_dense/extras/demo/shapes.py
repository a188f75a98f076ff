"""Write the demo "shapes" dataset in COCO instance and ADE20K semantic layouts, atomically.

Layout under ``out_dir`` (the same images in both)::

    meta.json                                 parameters, classes, statistics (written last)
    coco/annotations/instances_{train,val}.json   COCO instances, masks as compressed RLE
    coco/{train,val}/shapes_{split}_NNNNNN.jpg
    ade/classes.json                          classes for labels 1..K, palette
    ade/images/{training,validation}/shapes_{split}_NNNNNN.jpg
    ade/annotations/{training,validation}/shapes_{split}_NNNNNN.png   uint8, 0 = background

Image ``i`` of a split depends only on ``(seed, split, i)``, so more images extend a set without
changing the first ones, and the same arguments give the same bytes.
"""
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import cv2
import numpy as np
from mmengine.logging import print_log
from pycocotools import mask as mask_utils

from ...atomic_files import atomic_dir
from ...model.archs import is_int
from .scene import SHAPE_CLASSES, SHAPE_PALETTE, Scene, render_scene

DEFAULT_OUT_DIR = 'data/demo_shapes'
GENERATOR = 'convnext_dense.extras.demo.shapes'
# What a dataset of this module holds at its top: regenerating replaces these and nothing else.
DATASET_ENTRIES = frozenset({'ade', 'coco', 'meta.json'})
# Bump when the rendering or the layout changes: existing datasets are then regenerated.
GENERATOR_VERSION = 1
IMAGE_SIZE_RANGE = (128, 192)
JPEG_QUALITY = 95
# split name -> (COCO image folder, ADE20K folder)
SPLITS = {'train': ('train', 'training'), 'val': ('val', 'validation')}
_SPLIT_SEEDS = {'train': 0, 'val': 1}


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of one image: a pure function of ``(seed, split, index)``."""
    return np.random.default_rng([seed, _SPLIT_SEEDS[split], index])


def render_image(seed: int, split: str, index: int) -> Scene:
    """Render image ``index`` of ``split``: about half square, sides in ``IMAGE_SIZE_RANGE``."""
    rng = image_rng(seed, split, index)
    low, high = IMAGE_SIZE_RANGE
    height = int(rng.integers(low, high + 1))
    width = height if rng.random() < 0.5 else int(rng.integers(low, high + 1))
    return render_scene(height, width, rng)


def encode_image(image: np.ndarray, ext: str) -> bytes:
    """The bytes of an RGB (or single-channel) uint8 image as the dataset stores it (``ext``:
    ``'.jpg'`` at ``JPEG_QUALITY`` or ``'.png'``)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == '.jpg' else []
    if image.ndim == 3:
        image = image[..., ::-1]  # cv2 writes BGR
    ok, buffer = cv2.imencode(ext, np.ascontiguousarray(image), params)
    if not ok:
        raise RuntimeError(f'cv2 could not encode a {image.shape} image as {ext}')
    return buffer.tobytes()


def _write_json(path: Path, obj: Dict) -> None:
    path.write_text(json.dumps(obj, indent=1) + '\n', encoding='utf-8')


def _coco_annotation(mask: np.ndarray, label: int, image_id: int, ann_id: int) -> Dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=label,
        segmentation=dict(size=[int(s) for s in rle['size']], counts=rle['counts'].decode('ascii')),
        area=float(mask_utils.area(rle)),
        bbox=[float(v) for v in mask_utils.toBbox(rle)],
        iscrowd=0)


def _split_stats(scenes_info: List[Dict]) -> Dict:
    """Summary numbers of one split from per-image records."""
    counts = np.array([len(info['labels']) for info in scenes_info])
    labels = np.concatenate([info['labels'] for info in scenes_info]).astype(int)
    sides = np.concatenate([info['visible_sides'] for info in scenes_info])
    full = np.concatenate([info['sizes'] for info in scenes_info])
    occluded = np.concatenate([info['occluded'] for info in scenes_info])
    pixels = np.sum([info['pixels'] for info in scenes_info], axis=0)
    heights = [info['height'] for info in scenes_info]
    widths = [info['width'] for info in scenes_info]
    return dict(
        images=len(scenes_info),
        instances=int(counts.sum()),
        objects_per_image=dict(min=int(counts.min()), mean=round(float(counts.mean()), 2),
                               max=int(counts.max())),
        instances_per_class={name: int((labels == k + 1).sum())
                             for k, name in enumerate(SHAPE_CLASSES)},
        pixel_fraction={name: round(float(pixels[k] / pixels.sum()), 4)
                        for k, name in enumerate(('background',) + SHAPE_CLASSES)},
        object_size=dict(min=int(full.min()), max=int(full.max())),
        visible_box_long_side=dict(min=int(sides.min()), max=int(sides.max())),
        occluded_instances=round(float(occluded.mean()), 3),
        images_with_overlap=round(
            float(np.mean([info['occluded'].any() for info in scenes_info])), 3),
        image_height=dict(min=min(heights), max=max(heights)),
        image_width=dict(min=min(widths), max=max(widths)),
        non_square_images=int(sum(h != w for h, w in zip(heights, widths))))


def _write_split(root: Path, seed: int, split: str, count: int) -> Dict:
    coco_folder, ade_folder = SPLITS[split]
    folders = (root / 'coco' / coco_folder, root / 'ade' / 'images' / ade_folder,
               root / 'ade' / 'annotations' / ade_folder)
    for folder in folders + (root / 'coco' / 'annotations',):
        folder.mkdir(parents=True, exist_ok=True)
    images, annotations, infos = [], [], []
    for index in range(count):
        scene = render_image(seed, split, index)
        height, width = scene.image.shape[:2]
        stem = f'shapes_{split}_{index:06d}'
        jpeg = encode_image(scene.image, '.jpg')
        (folders[0] / f'{stem}.jpg').write_bytes(jpeg)
        (folders[1] / f'{stem}.jpg').write_bytes(jpeg)
        label_map = scene.label_map()
        (folders[2] / f'{stem}.png').write_bytes(encode_image(label_map, '.png'))
        image_id = index + 1
        images.append(dict(id=image_id, file_name=f'{stem}.jpg', height=height, width=width))
        image_anns = [_coco_annotation(inst.mask, inst.label, image_id, len(annotations) + i + 1)
                      for i, inst in enumerate(scene.instances)]
        annotations += image_anns
        infos.append(dict(
            height=height, width=width,
            labels=np.array([inst.label for inst in scene.instances], int),
            sizes=np.array([inst.size for inst in scene.instances], int),
            visible_sides=np.array([max(ann['bbox'][2:]) for ann in image_anns], int),
            occluded=np.array([inst.mask.sum() < inst.full_mask.sum() for inst in scene.instances]),
            pixels=np.bincount(label_map.ravel(), minlength=len(SHAPE_CLASSES) + 1)))
    categories = [dict(id=k + 1, name=name, supercategory='shape')
                  for k, name in enumerate(SHAPE_CLASSES)]
    coco = dict(
        info=dict(description=f'convnext_dense demo shapes ({split})',
                  version=str(GENERATOR_VERSION), seed=seed),
        licenses=[], images=images, annotations=annotations, categories=categories)
    _write_json(root / 'coco' / 'annotations' / f'instances_{split}.json', coco)
    return _split_stats(infos)


def read_meta(out_dir: Union[str, Path]) -> Optional[Dict]:
    """The ``meta.json`` of a complete dataset made by this module, or None."""
    try:
        meta = json.loads((Path(out_dir) / 'meta.json').read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get('generator') == GENERATOR else None


def _check_count(name: str, value: int, low: int) -> None:
    if not is_int(value) or value < low:
        raise ValueError(f'{name} must be an int >= {low}, got {value!r}')


def generate_shapes_dataset(out_dir: Union[str, Path] = DEFAULT_OUT_DIR,
                            seed: int = 0,
                            num_train: int = 400,
                            num_val: int = 100,
                            force: bool = False) -> Tuple[Dict, bool]:
    """Generate the shapes dataset unless ``out_dir`` already holds the same one.

    The dataset is written to a hidden temporary folder next to ``out_dir`` and renamed into place
    when complete, so an interrupted run never leaves a dataset that looks finished.

    Args:
        out_dir: Destination folder. If it exists it must be empty or a dataset made by this
            function (which is replaced when the arguments differ or ``force`` is set).
        seed: Non-negative seed; together with the split and index it fixes every image.
        num_train: Number of training images (>= 1).
        num_val: Number of validation images (>= 1).
        force: Regenerate even if an identical dataset is already there.

    Returns:
        ``(meta, created)``: the dataset's meta (as in ``meta.json``) and whether it was written.

    Raises:
        ValueError: a bad seed or count.
        FileExistsError: ``out_dir`` is a file or a non-empty folder of something else.

    Example:
        >>> meta, _ = generate_shapes_dataset('data/demo_shapes', seed=0)
        >>> meta['classes']
        ['circle', 'triangle', 'square', 'star']
    """
    _check_count('seed', seed, 0)
    _check_count('num_train', num_train, 1)
    _check_count('num_val', num_val, 1)
    target = Path(out_dir).resolve()
    params = dict(generator=GENERATOR, version=GENERATOR_VERSION, seed=seed,
                  num_train=num_train, num_val=num_val)
    existing = read_meta(target)
    if existing is not None and not force and all(existing.get(k) == v for k, v in params.items()):
        return existing, False
    if target.is_file() or (existing is None and target.is_dir() and any(target.iterdir())):
        raise FileExistsError(
            f'{out_dir} exists and is not a demo shapes dataset (no meta.json from {GENERATOR}); '
            'remove it or choose another output folder')

    print_log(f'generating demo shapes dataset in {out_dir}: {num_train} train / {num_val} val '
              f'images, seed {seed}', logger='current')
    with atomic_dir(target, replaceable=DATASET_ENTRIES.__contains__) as work:
        stats = {split: _write_split(work, seed, split, count)
                 for split, count in (('train', num_train), ('val', num_val))}
        _write_json(work / 'ade' / 'classes.json', dict(
            classes=list(SHAPE_CLASSES),
            label_ids={name: k + 1 for k, name in enumerate(SHAPE_CLASSES)},
            background_label=0, palette=[list(c) for c in SHAPE_PALETTE]))
        meta = dict(params, classes=list(SHAPE_CLASSES), palette=[list(c) for c in SHAPE_PALETTE],
                    stats=stats)
        _write_json(work / 'meta.json', meta)  # last: its presence marks a complete dataset
    return read_meta(target), True
