"""A small dataset of awkward images (odd size, grayscale, RGBA, no objects) in COCO and ADE layouts."""
import json
from pathlib import Path

import cv2
import numpy as np

# (file name, height, width, colour mode, number of objects)
AWKWARD_IMAGES = [
    ('odd_size.jpg', 333, 517, 'rgb', 2),
    ('gray.jpg', 160, 176, 'gray', 2),
    ('rgba.png', 144, 192, 'rgba', 1),
    ('empty.jpg', 128, 128, 'rgb', 0),
]


def _draw_objects(rng, height, width, count):
    image = rng.integers(40, 90, size=(height, width, 3), dtype=np.uint8)
    label = np.zeros((height, width), dtype=np.uint8)
    objects = []
    for index in range(count):
        size = int(rng.integers(24, 48))
        x0 = int(rng.integers(0, width - size)) if index == 0 else max(0, width - size - 10)
        y0 = int(rng.integers(0, height - size))
        square = index % 2 == 0
        mask = np.zeros((height, width), dtype=np.uint8)
        if square:
            mask[y0:y0 + size, x0:x0 + size] = 1
        else:
            cv2.circle(mask, (x0 + size // 2, y0 + size // 2), size // 2, 1, -1)
        mask[label > 0] = 0
        class_id = 3 if square else 1  # 'square' / 'circle' of the demo classes
        image[mask > 0] = (200, 180, 40) if square else (30, 200, 220)
        label[mask > 0] = class_id
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        polygon = max(contours, key=cv2.contourArea).reshape(-1).astype(float).tolist()
        ys, xs = np.nonzero(mask)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1)]
        objects.append(dict(category_id=class_id, bbox=bbox, segmentation=[polygon],
                            area=float(mask.sum()), iscrowd=0))
    return image, label, objects


def _save(path, image, mode):
    if mode == 'gray':
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    elif mode == 'rgba':
        alpha = np.full(image.shape[:2] + (1,), 255, dtype=np.uint8)
        cv2.imwrite(str(path), np.concatenate([image, alpha], axis=2))
    else:
        cv2.imwrite(str(path), image)


def write_awkward_dataset(root: Path, seed: int = 0) -> Path:
    """Write ``root/coco`` (train = val) and ``root/ade`` with the images of AWKWARD_IMAGES."""
    rng = np.random.default_rng(seed)
    coco = dict(images=[], annotations=[], categories=[
        dict(id=i + 1, name=name) for i, name in enumerate(('circle', 'triangle', 'square', 'star'))])
    for split in ('train', 'val'):
        (root / 'coco' / split).mkdir(parents=True, exist_ok=True)
    (root / 'coco' / 'annotations').mkdir(parents=True, exist_ok=True)
    for ade_split in ('training', 'validation'):
        (root / 'ade' / 'images' / ade_split).mkdir(parents=True, exist_ok=True)
        (root / 'ade' / 'annotations' / ade_split).mkdir(parents=True, exist_ok=True)
    for image_id, (name, height, width, mode, count) in enumerate(AWKWARD_IMAGES, start=1):
        image, label, objects = _draw_objects(rng, height, width, count)
        for split in ('train', 'val'):
            _save(root / 'coco' / split / name, image, mode)
        for ade_split in ('training', 'validation'):
            # mmseg pairs images and label maps by stem, with one image suffix per dataset.
            _save(root / 'ade' / 'images' / ade_split / (Path(name).stem + '.jpg'), image, mode)
            cv2.imwrite(str(root / 'ade' / 'annotations' / ade_split / (Path(name).stem + '.png')),
                        label)
        coco['images'].append(dict(id=image_id, file_name=name, height=height, width=width))
        for obj in objects:
            coco['annotations'].append(dict(obj, id=len(coco['annotations']) + 1, image_id=image_id))
    for split in ('train', 'val'):
        (root / 'coco' / 'annotations' / f'instances_{split}.json').write_text(json.dumps(coco))
    return root
