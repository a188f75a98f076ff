"""Pre-train the demo's ConvNeXt on shape classification: the demo's stand-in for ImageNet.

The real configs start from ImageNet-22k classification weights. The demo cannot download them,
so it makes its own: a ConvNeXt with the official classification tail (global average pool,
LayerNorm ``norm``, Linear ``head``) learns to name the shape in crops around objects. As
ImageNet is to COCO and ADE20K, the pre-training set is larger than the dense datasets and apart
from them: scenes rendered on the fly by the same generator under another seed
(:meth:`ObjectCrops.rendered`), never the validation images. The result is saved as the official
checkpoints are (``{'model': state_dict}``, keys ``downsample_layers.*``, ``stages.*``,
``norm.*``, ``head.*``), and the dense configs load it through
``init_cfg=dict(type='Pretrained', checkpoint=...)`` like the 22k weights.
"""
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import ConvNeXt
from .scene import SHAPE_CLASSES
from .shapes import JPEG_QUALITY, render_image

PathLike = Union[str, os.PathLike]
# ImageNet statistics, as the dense configs' data preprocessors use (RGB).
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


@dataclass
class PretrainSettings:
    """How the classifier is trained.

    Attributes:
        iters: Optimizer steps.
        batch_size: Crops per step.
        lr: Peak AdamW learning rate (ConvNeXt with layer scale 1.0 diverges from ~2e-3 here).
        weight_decay: AdamW weight decay (not on norms, biases and layer-scale gammas).
        warmup_iters: Linear warmup, then cosine decay to 0.
        crop_size: Side of the square crops, in pixels.
        context: Range of the crop side over the object's longer box side.
        seed: Seed of the crop sampling and of the initial weights.
    """

    iters: int = 800
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_iters: int = 50
    crop_size: int = 64
    context: Tuple[float, float] = (1.2, 2.0)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ('iters', 'batch_size', 'crop_size'):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        if not isinstance(self.warmup_iters, int) or self.warmup_iters < 0:
            raise ValueError(f'warmup_iters must be an int >= 0, got {self.warmup_iters!r}')
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f'lr must be > 0 and weight_decay >= 0, got {self.lr!r}, '
                             f'{self.weight_decay!r}')
        low, high = self.context
        if not 1.0 <= low <= high:
            raise ValueError(f'context must be (low, high) with 1 <= low <= high, got '
                             f'{self.context!r}')


class ObjectCrops:
    """Square crops around objects, with their class index (0-based, in ``SHAPE_CLASSES`` order).

    Build it from a COCO annotation file (:meth:`from_coco`) or from scenes rendered on the fly
    (:meth:`rendered`, the demo's large pre-training set).

    Args:
        images: RGB uint8 images.
        objects: ``(image index, (x, y, w, h) box, class index)`` per object.
        crop_size: Side of the crops.
        classes: Class names, in class-index order.
    """

    def __init__(self, images: Sequence[np.ndarray], objects: Sequence[Tuple[int, Tuple, int]],
                 crop_size: int, classes: Sequence[str]) -> None:
        if not objects:
            raise ValueError('no objects to crop')
        self.images = list(images)
        self.objects = list(objects)
        self.crop_size = crop_size
        self.classes = list(classes)

    @classmethod
    def from_coco(cls, ann_file: PathLike, image_dir: PathLike, crop_size: int) -> 'ObjectCrops':
        """Crops around the (non-crowd) objects of a COCO instances file."""
        coco = json.loads(Path(ann_file).read_text(encoding='utf-8'))
        categories = sorted(coco['categories'], key=lambda c: c['id'])
        label_of = {c['id']: i for i, c in enumerate(categories)}
        images, index_of = [], {}
        for info in coco['images']:
            path = Path(image_dir) / info['file_name']
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f'cannot read image {path} listed in {ann_file}')
            index_of[info['id']] = len(images)
            images.append(np.ascontiguousarray(image[..., ::-1]))  # RGB
        objects = [(index_of[a['image_id']], tuple(a['bbox']), label_of[a['category_id']])
                   for a in coco['annotations'] if not a.get('iscrowd', 0)]
        if not objects:
            raise ValueError(f'{ann_file} has no objects to crop')
        return cls(images, objects, crop_size, [c['name'] for c in categories])

    @classmethod
    def rendered(cls, seed: int, count: int, crop_size: int) -> 'ObjectCrops':
        """Crops around the objects of ``count`` scenes rendered by the demo's generator.

        The scenes come from the generator's training stream under ``seed`` (pass a seed other
        than the dataset's to keep them apart from its images) and go through the same JPEG
        encoding as the dataset's files; boxes are those of the visible masks.
        """
        images, objects = [], []
        for index in range(count):
            scene = render_image(seed, 'train', index)
            ok, jpeg = cv2.imencode('.jpg', np.ascontiguousarray(scene.image[..., ::-1]),
                                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f'cv2 could not encode rendered scene {index}')
            images.append(np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1]))
            for instance in scene.instances:
                ys, xs = np.nonzero(instance.mask)
                box = (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                       float(ys.max() - ys.min() + 1))
                objects.append((index, box, instance.label - 1))
        return cls(images, objects, crop_size, SHAPE_CLASSES)

    def __len__(self) -> int:
        return len(self.objects)

    def crop(self, index: int, context: float, flip: bool = False) -> np.ndarray:
        """Normalised float32 (S, S, 3) crop, the object's longer side ``S / context`` pixels."""
        image_index, (x, y, w, h), _ = self.objects[index]
        size = self.crop_size
        scale = size / (max(w, h) * context)
        matrix = np.array([[scale, 0, size / 2 - (x + w / 2) * scale],
                           [0, scale, size / 2 - (y + h / 2) * scale]], np.float32)
        if flip:  # mirror the output column u to size - 1 - u
            matrix[0] = [-scale, 0, size - 1 - matrix[0, 2]]
        patch = cv2.warpAffine(self.images[image_index], matrix, (size, size),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return (patch.astype(np.float32) - MEAN) / STD

    def batch(self, indices, contexts, flips) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, S, S)`` crops and ``(N,)`` labels."""
        crops = np.stack([self.crop(i, c, f) for i, c, f in zip(indices, contexts, flips)])
        labels = torch.tensor([self.objects[i][2] for i in indices])
        return torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous(), labels


class ConvNeXtClassifier(nn.Module):
    """ConvNeXt with the official classification tail: pool, LayerNorm ``norm``, Linear ``head``.

    Args:
        arch: ConvNeXt arch name or ``dict(depths=..., channels=...)``.
        num_classes: Outputs of ``head``.
        layer_scale_init_value: Initial layer-scale ``gamma`` (the dense configs use 1.0).
    """

    def __init__(self, arch: Union[str, Mapping], num_classes: int,
                 layer_scale_init_value: float = 1.0) -> None:
        super().__init__()
        self.backbone = ConvNeXt(arch=dict(arch) if isinstance(arch, Mapping) else arch,
                                 out_indices=(3,), layer_scale_init_value=layer_scale_init_value)
        self.backbone.init_weights()
        channels = self.backbone.channels[-1]
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.head = nn.Linear(channels, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)[-1]  # (N, C, H, W), after the stage's output norm
        return self.head(self.norm(features.mean((2, 3))))

    def official_state_dict(self) -> Dict[str, torch.Tensor]:
        """Weights under the official checkpoint's names (backbone keys at the top level)."""
        state = {k: v.detach().clone() for k, v in self.backbone.state_dict().items()}
        state.update({f'norm.{k}': v.detach().clone() for k, v in self.norm.state_dict().items()})
        state.update({f'head.{k}': v.detach().clone() for k, v in self.head.state_dict().items()})
        return state


def _param_groups(model: nn.Module, weight_decay: float) -> List[Dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name.endswith('.bias') else decay).append(param)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.)]


def _lr_factor(step: int, settings: PretrainSettings) -> float:
    if step < settings.warmup_iters:
        return (step + 1) / settings.warmup_iters
    progress = (step - settings.warmup_iters) / max(1, settings.iters - settings.warmup_iters)
    return 0.5 * (1 + math.cos(math.pi * progress))


def evaluate(model: nn.Module, crops: ObjectCrops, context: float, batch_size: int = 256
             ) -> float:
    """Top-1 accuracy on every object of ``crops`` at a fixed ``context``."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(crops), batch_size):
            indices = range(start, min(start + batch_size, len(crops)))
            x, y = crops.batch(indices, [context] * len(indices), [False] * len(indices))
            correct += int((model(x).argmax(1) == y).sum())
    model.train()
    return correct / len(crops)


def pretrain_classifier(train: ObjectCrops, arch: Union[str, Mapping], out_file: PathLike,
                        settings: Optional[PretrainSettings] = None,
                        val: Optional[ObjectCrops] = None,
                        log: Optional[Callable[[str], None]] = None,
                        log_interval: int = 100) -> Dict:
    """Train :class:`ConvNeXtClassifier` on ``train`` crops and save it in the official layout.

    Args:
        train: Training crops.
        arch: The ConvNeXt arch of the dense configs that will load the weights.
        out_file: ``.pth`` to write: ``{'model': state_dict, 'meta': {...}}``.
        settings: Training settings; None uses the defaults.
        val: Crops to report the accuracy on at the end.
        log: Receives progress lines; None is silent.
        log_interval: Steps between progress lines.

    Returns:
        The ``meta`` saved with the weights (settings, accuracies, seconds).
    """
    settings = settings or PretrainSettings()
    log = log or (lambda line: None)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = ConvNeXtClassifier(arch, len(train.classes))
    optimizer = torch.optim.AdamW(_param_groups(model, settings.weight_decay), lr=settings.lr)
    start = time.perf_counter()
    losses, hits = [], []
    for step in range(settings.iters):
        for group in optimizer.param_groups:
            group['lr'] = settings.lr * _lr_factor(step, settings)
        indices = rng.integers(0, len(train), settings.batch_size)
        x, y = train.batch(indices, rng.uniform(*settings.context, settings.batch_size),
                           rng.random(settings.batch_size) < 0.5)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        hits.append(float((logits.argmax(1) == y).float().mean()))
        if (step + 1) % log_interval == 0 or step + 1 == settings.iters:
            elapsed = time.perf_counter() - start
            eta = elapsed / (step + 1) * (settings.iters - step - 1)
            log(f'pretrain [{step + 1:>4}/{settings.iters}] loss {np.mean(losses):.3f} '
                f'train acc {np.mean(hits):.3f} lr {optimizer.param_groups[0]["lr"]:.2e} '
                f'eta {eta:.0f} s')
            losses, hits = [], []
    meta = dict(task='shape classification', classes=list(train.classes),
                settings=asdict(settings), arch=dict(arch) if isinstance(arch, Mapping) else arch,
                seconds=round(time.perf_counter() - start, 1))
    context = sum(settings.context) / 2
    if val is not None:
        meta['val_accuracy'] = round(evaluate(model, val, context), 4)
        log(f'pretrain: validation accuracy {meta["val_accuracy"]:.3f} '
            f'({len(val)} objects)')
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f'.{out_file.name}.tmp')
    torch.save({'model': model.official_state_dict(), 'meta': json.loads(json.dumps(meta))}, tmp)
    os.replace(tmp, out_file)
    return meta
