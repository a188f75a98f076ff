"""Pre-train the demo's ConvNeXt: the demo's stand-in for the ImageNet-22k weights.

The real configs start from ImageNet-22k classification weights; the demo cannot download them,
so it makes its own, on shapes rendered on the fly by the dataset's generator under another seed
(never the dataset's images). Trained from scratch on shape classification the ConvNeXt learns
slowly here: with an object anywhere in the image it stays near chance for thousands of steps
(so does the same network as Hugging Face's ``ConvNextForImageClassification``), and a plain
conv-BN-ReLU network with LayerNorm in place of BatchNorm stalls the same way, while with
BatchNorm it learns the task (it leaves chance after about 700 steps with a global-max-pooling
head, 1500 with global average pooling). So the demo pre-trains in two phases:

1. :class:`ShapeTeacher`, a small conv-BN-ReLU network, learns to name the shape in single-object
   scenes (:func:`single_object_scenes`), half of them with the shape nearer the middle, which
   it learns sooner;
2. the ConvNeXt learns to reproduce the teacher's feature maps at strides 4, 8, 16 and 32 from
   its own stage outputs through 1x1 convolutions (hint distillation, as FitNets), on
   multi-object scenes and single-object scenes.

Only the ConvNeXt is saved, as a backbone checkpoint in the official key layout
(``downsample_layers.*``, ``stages.*``, and the trained output norms ``norm0``-``norm3``); the
dense configs load it through ``init_cfg=dict(type='Pretrained', checkpoint=...)`` like the 22k
weights.
"""
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...atomic_files import atomic_path
from ...model.archs import IMAGENET_MEAN, IMAGENET_STD, is_int
from ...model.backbone import ConvNeXt
from .scene import SHAPE_CLASSES, render_scene
from .shapes import IMAGE_SIZE_RANGE, encode_image, render_image

PathLike = Union[str, os.PathLike]
# ImageNet statistics, as the dense configs' data preprocessors use (RGB).
MEAN = np.array(IMAGENET_MEAN, np.float32)
STD = np.array(IMAGENET_STD, np.float32)
# Channels of the teacher's hints at strides 4, 8, 16 and 32 (the last is the stride-16 hint
# average-pooled).
HINT_CHANNELS = (64, 128, 256, 256)


@dataclass
class PretrainSettings:
    """How the teacher and the ConvNeXt are trained.

    Attributes:
        teacher_iters: Teacher optimizer steps.
        teacher_batch_size: Single-object scenes per teacher step.
        distill_iters: ConvNeXt optimizer steps.
        distill_batch_size: Multi-object scenes per distillation step; the steps that use
            single-object scenes take 4 times as many (a quarter of the pixels each).
        single_object_every: Every this many distillation steps uses single-object scenes
            (0: never).
        hint_weights: Loss weights of the hints at strides 4, 8, 16, 32.
        lr: Peak AdamW learning rate of both phases.
        weight_decay: AdamW weight decay (not on norms, biases and layer-scale gammas).
        warmup_iters: Linear warmup of each phase, then cosine decay to 0.
        single_object_images: Single-object scenes rendered with the shape anywhere, and as
            many with it nearer the middle (the teacher learns from both, sooner from the
            latter; the distillation uses the first kind).
        scene_images: Multi-object scenes rendered for the distillation. The distillation keeps
            the teacher's hints of every scene, plain and mirrored: about 0.95 MB per
            multi-object scene and 0.24 MB per single-object one at the default sizes (2.4 GB
            with the default counts).
        single_object_size: Side of the single-object scenes.
        scene_crop: Side of the square crop taken from each multi-object scene.
        seed: Seed of the rendering, the sampling and the initial weights.
    """

    teacher_iters: int = 1500
    teacher_batch_size: int = 64
    distill_iters: int = 1000
    distill_batch_size: int = 16
    single_object_every: int = 2
    hint_weights: Tuple[float, float, float, float] = (0.25, 0.5, 1.0, 1.0)
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_iters: int = 50
    single_object_images: int = 4000
    scene_images: int = 1500
    single_object_size: int = 64
    scene_crop: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ('teacher_iters', 'teacher_batch_size', 'distill_iters',
                     'distill_batch_size', 'single_object_images', 'scene_images',
                     'single_object_size', 'scene_crop'):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        for name in ('warmup_iters', 'single_object_every', 'seed'):
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                raise ValueError(f'{name} must be an int >= 0, got {value!r}')
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f'lr must be > 0 and weight_decay >= 0, got {self.lr!r}, '
                             f'{self.weight_decay!r}')
        if len(self.hint_weights) != 4 or any(not w >= 0 for w in self.hint_weights):
            raise ValueError(f'hint_weights must be 4 weights >= 0 (strides 4, 8, 16, 32), got '
                             f'{self.hint_weights!r}')
        if self.single_object_size < 48:
            raise ValueError(f'single_object_size must be >= 48, got {self.single_object_size!r}')
        low, high = 32, IMAGE_SIZE_RANGE[0]
        if not low <= self.scene_crop <= high:
            raise ValueError(f'scene_crop must be in [{low}, {high}] (the generator\'s smallest '
                             f'scene side is {high}), got {self.scene_crop!r}')


def _normalise(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 image as the dense configs feed it: JPEG-stored like the dataset, normalised."""
    jpeg = np.frombuffer(encode_image(image, '.jpg'), np.uint8)
    stored = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1]
    return (stored.astype(np.float32) - MEAN) / STD


def _to_tensor(images: List[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def single_object_scene(rng: np.random.Generator, size: int = 64, centred: bool = False
                        ) -> Tuple[np.ndarray, np.ndarray, int]:
    """One shape (16 to ``size * 5 / 8`` px) on a textured background, anywhere or near the middle.

    With ``centred`` the scene is the window of a scene 1.5 times as large that best centres the
    shape's box: exactly centred when the shape lies far enough from that scene's borders (about
    a quarter of the scenes); over all scenes the box centre's median distance from the middle is
    8 px instead of 13 px at ``size`` 64.

    Returns:
        ``(image, mask, label)``: RGB uint8 ``(size, size, 3)``, the shape's bool mask, its class
        index (0-based, in ``SHAPE_CLASSES`` order).
    """
    margin = size // 2 if centred else 0
    scene = render_scene(size + margin, size + margin, rng, object_size=(16, size * 5 // 8),
                         num_objects=(1, 1))
    mask = scene.instances[0].mask
    top = left = 0
    if centred:
        ys, xs = np.nonzero(mask)
        top = int(np.clip(round((ys.min() + ys.max() - size) / 2), 0, margin))
        left = int(np.clip(round((xs.min() + xs.max() - size) / 2), 0, margin))
    window = np.s_[top:top + size, left:left + size]
    return scene.image[window], mask[window], scene.instances[0].label - 1


def single_object_scenes(seed: int, count: int, size: int = 64, centred: bool = False
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``count`` :func:`single_object_scene` s as ``(N, 3, size, size)`` normalised images and
    ``(N,)`` class indices."""
    rng = np.random.default_rng([seed, 2 + int(centred)])
    images, labels = [], []
    for _ in range(count):
        image, _, label = single_object_scene(rng, size, centred)
        images.append(_normalise(image))
        labels.append(label)
    return _to_tensor(images), torch.tensor(labels)


def multi_object_scenes(seed: int, count: int, crop: int = 128) -> torch.Tensor:
    """``(N, 3, crop, crop)`` normalised crops of the generator's training scenes under ``seed``.

    Pass a seed other than the dataset's: under the dataset's own seed these are its images.
    """
    rng = np.random.default_rng([seed, 4])
    crops = []
    for index in range(count):
        image = render_image(seed, 'train', index).image
        top = int(rng.integers(0, image.shape[0] - crop + 1))
        left = int(rng.integers(0, image.shape[1] - crop + 1))
        crops.append(_normalise(image[top:top + crop, left:left + crop]))
    return _to_tensor(crops)


@dataclass
class PretrainScenes:
    """The rendered scenes both phases learn from: normalised ``(N, 3, H, W)`` images and ``(N,)``
    class indices (see :func:`render_scenes`)."""

    singles: torch.Tensor
    labels: torch.Tensor
    centred: torch.Tensor
    centred_labels: torch.Tensor
    val_singles: torch.Tensor
    val_labels: torch.Tensor
    scenes: torch.Tensor


def _single_threaded() -> None:
    # One torch and one OpenCV thread, as DataLoader workers: a forked child that entered the
    # OpenMP pool its parent had started hung here.
    torch.set_num_threads(1)
    cv2.setNumThreads(0)


def worker_processes(count: int = 2) -> ProcessPoolExecutor:
    """Worker processes for :func:`render_scenes` (and other work beside it): forked, so they
    need nothing the parent has not imported, each on one torch and one OpenCV thread."""
    return ProcessPoolExecutor(max_workers=count, mp_context=multiprocessing.get_context('fork'),
                               initializer=_single_threaded)


def _rendered_as_arrays(render: Callable, *args):
    """``render(*args)`` with its tensors as numpy arrays: they leave a worker process by pickle,
    not through torch's shared-memory files."""
    result = render(*args)
    if isinstance(result, torch.Tensor):
        return result.numpy()
    return tuple(t.numpy() for t in result)


def _as_tensors(result):
    if isinstance(result, np.ndarray):
        return torch.from_numpy(result)
    return tuple(torch.from_numpy(a) for a in result)


def render_scenes(settings: PretrainSettings, executor: Optional[Executor] = None
                  ) -> PretrainScenes:
    """Render the pre-training scenes: single-object ones (shape anywhere / nearer the middle /
    500 held out under ``seed + 1``) and crops of multi-object ones.

    Each set is a pure function of its seed, so rendering them in ``executor``'s worker
    processes (:func:`worker_processes`; the demo overlaps them with the dataset's generation)
    gives the same tensors as rendering them here, one after the other.
    """
    size = settings.single_object_size
    jobs = {  # the longest first: they finish sooner side by side
        'scenes': (multi_object_scenes, (settings.seed, settings.scene_images,
                                         settings.scene_crop)),
        'centred': (single_object_scenes, (settings.seed, settings.single_object_images, size,
                                           True)),
        'singles': (single_object_scenes, (settings.seed, settings.single_object_images, size)),
        'val': (single_object_scenes, (settings.seed + 1, 500, size)),
    }
    if executor is None:
        done = {name: render(*args) for name, (render, args) in jobs.items()}
    else:
        futures = {name: executor.submit(_rendered_as_arrays, render, *args)
                   for name, (render, args) in jobs.items()}
        done = {name: _as_tensors(future.result()) for name, future in futures.items()}
    return PretrainScenes(*done['singles'], *done['centred'], *done['val'], done['scenes'])


def _conv_bn(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU())


class ShapeTeacher(nn.Module):
    """A small conv-BN-ReLU shape classifier whose feature maps the ConvNeXt learns to reproduce.

    Its head is a linear layer on the global maximum of the last map.

    Args:
        num_classes: Outputs of the linear head (after global max pooling).
    """

    HINT_LAYERS = (2, 4, 5)  # the layers ending at strides 4, 8 and 16

    def __init__(self, num_classes: int = len(SHAPE_CLASSES)) -> None:
        super().__init__()
        self.layers = nn.ModuleList([
            _conv_bn(3, 32, 2), _conv_bn(32, 64, 2), _conv_bn(64, 64),
            _conv_bn(64, 128, 2), _conv_bn(128, 128), _conv_bn(128, 256, 2)])
        self.head = nn.Linear(256, num_classes)

    def hints(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Normalised (BatchNorm, before ReLU) maps at strides 4, 8, 16, 32, and the last map."""
        hints = []
        for index, (conv, norm, relu) in enumerate(self.layers):
            x = norm(conv(x))
            if index in self.HINT_LAYERS:
                hints.append(x)
            x = relu(x)
        hints.append(F.avg_pool2d(hints[-1], 2, ceil_mode=True))
        return hints, x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Global max pooling: the strongest response anywhere names the shape. With average
        # pooling the teacher stayed near chance for about 1500 steps (3000 needed); with max
        # pooling it names 97 % of held-out scenes after 1500.
        return self.head(self.hints(x)[1].amax((2, 3)))


class HintAdapters(nn.Module):
    """1x1 convolutions from the ConvNeXt's four stage outputs to the teacher's hint channels."""

    def __init__(self, channels) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, h, 1) for c, h in zip(channels, HINT_CHANNELS))

    def forward(self, features) -> List[torch.Tensor]:
        return [conv(f) for conv, f in zip(self.convs, features)]


def _param_groups(model: nn.Module, weight_decay: float) -> List[Dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name.endswith('.bias') else decay).append(param)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.)]


def _set_lr(optimizer: torch.optim.Optimizer, step: int, iters: int,
            settings: PretrainSettings) -> float:
    """Linear warmup, then cosine decay to 0 over ``iters`` steps."""
    warmup = min(settings.warmup_iters, iters)
    if step < warmup:
        factor = (step + 1) / warmup
    else:
        factor = 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, iters - warmup)))
    for group in optimizer.param_groups:
        group['lr'] = settings.lr * factor
    return settings.lr * factor


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 256) -> float:
    """Top-1 accuracy of a classifier in eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(images[i:i + batch_size]).argmax(1)
                        == labels[i:i + batch_size]).sum())
                   for i in range(0, len(images), batch_size))
    model.train(was_training)
    return hits / len(images)


def _adamw(model: nn.Module, settings: PretrainSettings) -> torch.optim.AdamW:
    # fused: one kernel per parameter instead of a dozen ops (the UperNet demo's 1.8 M
    # parameters: 1.8 against 8.4 ms a step on one thread).
    return torch.optim.AdamW(_param_groups(model, settings.weight_decay), lr=settings.lr,
                             fused=True)


def train_teacher(images: torch.Tensor, labels: torch.Tensor, settings: PretrainSettings,
                  log: Callable[[str], None], log_interval: int = 200) -> ShapeTeacher:
    """Phase 1: :class:`ShapeTeacher` on single-object scenes, every other batch mirrored."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    # Channels-last: oneDNN's convolutions train faster in it on CPU (15 % a step here).
    teacher = ShapeTeacher().to(memory_format=torch.channels_last)
    optimizer = _adamw(teacher, settings)
    losses, hits = [], []
    start = time.perf_counter()
    for step in range(settings.teacher_iters):
        lr = _set_lr(optimizer, step, settings.teacher_iters, settings)
        index = torch.randint(0, len(images), (settings.teacher_batch_size,), generator=generator)
        x, y = images[index], labels[index]
        if step % 2:
            x = x.flip(3)
        logits = teacher(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        hits.append(float((logits.argmax(1) == y).float().mean()))
        if (step + 1) % log_interval == 0 or step + 1 == settings.teacher_iters:
            log(_progress('teacher', step, settings.teacher_iters, start,
                          f'loss {np.mean(losses):.3f} train acc {np.mean(hits):.3f} '
                          f'lr {lr:.2e}'))
            losses, hits = [], []
    return teacher.eval()


def teacher_hint_table(teacher: ShapeTeacher, pool: torch.Tensor, mirrored: bool,
                       batch_size: int) -> List[torch.Tensor]:
    """The teacher's hints (:meth:`ShapeTeacher.hints`) of every image of ``pool``, mirrored or
    not.

    Computed in batches of ``batch_size``, the size the distillation draws, so that each row is
    what the teacher gives that image in a drawn batch (oneDNN's convolutions compute each image
    of a batch on its own: the rows were bitwise equal on an AVX2 AMD EPYC, where this was
    measured).
    """
    parts = []
    with torch.no_grad():
        for start in range(0, len(pool), batch_size):
            x = pool[start:start + batch_size]
            parts.append(teacher.hints(x.flip(3) if mirrored else x)[0])
    return [torch.cat(level) for level in zip(*parts)]


def distill_draw(step: int, settings: PretrainSettings, sizes: Mapping[str, int],
                 generator: torch.Generator) -> Tuple[str, bool, torch.Tensor]:
    """What distillation step ``step`` trains on: ``(kind, mirrored, index)``.

    Every ``single_object_every``-th step draws ``'singles'`` (4 times the batch), the others
    ``'scenes'``; rounds of ``single_object_every`` steps alternate between plain and mirrored
    inputs, so each kind is mirrored half the time.
    """
    every = settings.single_object_every
    if every and step % every == 0:
        kind, count = 'singles', 4 * settings.distill_batch_size
    else:
        kind, count = 'scenes', settings.distill_batch_size
    index = torch.randint(0, sizes[kind], (count,), generator=generator)
    # Not step % 2: with every=2 one kind would never be mirrored.
    mirrored = bool((step // max(every, 1)) % 2)
    return kind, mirrored, index


def distill_backbone(teacher: ShapeTeacher, arch: Union[str, Mapping], scenes: torch.Tensor,
                     singles: torch.Tensor, settings: PretrainSettings,
                     log: Callable[[str], None], log_interval: int = 200) -> ConvNeXt:
    """Phase 2: a ConvNeXt whose stage outputs predict the teacher's hints.

    Each step's inputs come from :func:`distill_draw`. The teacher is frozen and the pools are
    fixed, so its hints are computed once per image and mirroring (:func:`teacher_hint_table`,
    on first use) instead of once per draw: each image is drawn 2.7-4 times on average, and
    the teacher's forward pass took a fifth of a step. The tables take about 2.4 GB with the
    default settings.

    Returns:
        The ConvNeXt (``out_indices=(0, 1, 2, 3)``, layer scale 1.0 as the dense configs use).
    """
    for param in teacher.parameters():
        param.requires_grad_(False)
    teacher.eval()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    backbone = ConvNeXt(arch=dict(arch) if isinstance(arch, Mapping) else arch,
                        out_indices=(0, 1, 2, 3), layer_scale_init_value=1.0)
    backbone.init_weights()
    adapters = HintAdapters(backbone.channels).to(memory_format=torch.channels_last)
    student = nn.ModuleDict(dict(backbone=backbone, adapters=adapters))
    optimizer = _adamw(student, settings)
    weights = settings.hint_weights
    pools = dict(singles=singles, scenes=scenes)
    sizes = {kind: len(pool) for kind, pool in pools.items()}
    hint_tables: Dict[Tuple[str, bool], List[torch.Tensor]] = {}
    losses = []
    start = time.perf_counter()
    for step in range(settings.distill_iters):
        lr = _set_lr(optimizer, step, settings.distill_iters, settings)
        kind, mirrored, index = distill_draw(step, settings, sizes, generator)
        table = hint_tables.get((kind, mirrored))
        if table is None:
            table = hint_tables[kind, mirrored] = teacher_hint_table(
                teacher, pools[kind], mirrored, len(index))
        x = pools[kind][index]
        if mirrored:
            x = x.flip(3)
        targets = [level[index] for level in table]
        predictions = adapters(backbone(x))
        parts = [F.mse_loss(p, t) for p, t in zip(predictions, targets)]
        loss = sum(w * part for w, part in zip(weights, parts))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append([part.item() for part in parts])
        if (step + 1) % log_interval == 0 or step + 1 == settings.distill_iters:
            per_stride = ' '.join(f'{v:.3f}' for v in np.mean(losses, axis=0))
            log(_progress('distill', step, settings.distill_iters, start,
                          f'hint losses (strides 4 8 16 32) {per_stride} lr {lr:.2e}'))
            losses = []
    return backbone.eval()


def _progress(phase: str, step: int, iters: int, start: float, message: str) -> str:
    elapsed = time.perf_counter() - start
    eta = elapsed / (step + 1) * (iters - step - 1)
    return f'{phase} [{step + 1:>4}/{iters}] {message} eta {eta:.0f} s'


def pretrain_backbone(arch: Union[str, Mapping], out_file: PathLike,
                      settings: Optional[PretrainSettings] = None,
                      log: Optional[Callable[[str], None]] = None,
                      scenes: Optional[PretrainScenes] = None) -> Dict:
    """Both phases; saves the ConvNeXt as ``{'model': state_dict, 'meta': {...}}`` (official keys).

    Args:
        arch: The ConvNeXt arch of the dense configs that will load the weights.
        out_file: ``.pth`` to write (atomically).
        settings: Training settings; None uses the defaults.
        log: Receives progress lines; None is silent.
        scenes: :func:`render_scenes` of ``settings``, rendered already; None renders them here.

    Returns:
        The ``meta`` saved with the weights (settings, teacher accuracy, seconds).
    """
    settings = settings or PretrainSettings()
    log = log or (lambda line: None)
    start = time.perf_counter()
    if scenes is None:
        scenes = render_scenes(settings)
        log(f'rendered 2 x {len(scenes.singles)} single-object (shape anywhere / nearer the '
            f'middle) and {len(scenes.scenes)} multi-object scenes '
            f'({time.perf_counter() - start:.0f} s)')
    teacher = train_teacher(torch.cat([scenes.singles, scenes.centred]),
                            torch.cat([scenes.labels, scenes.centred_labels]), settings, log)
    teacher_accuracy = accuracy(teacher, scenes.val_singles, scenes.val_labels)
    log(f'teacher: accuracy {teacher_accuracy:.3f} on {len(scenes.val_labels)} held-out '
        'single-object scenes, shape anywhere (chance 0.25)')
    if teacher_accuracy < 0.5:
        log(f'WARNING: the teacher names only {teacher_accuracy:.0%} of the shapes; the backbone '
            'will learn little from it (more teacher_iters?)')
    backbone = distill_backbone(teacher, arch, scenes.scenes, scenes.singles, settings, log)
    meta = dict(task='hint distillation from a shape-classifying conv-BN-ReLU teacher',
                classes=list(SHAPE_CLASSES), settings=asdict(settings),
                arch=dict(arch) if isinstance(arch, Mapping) else arch,
                teacher_accuracy=round(teacher_accuracy, 4),
                seconds=round(time.perf_counter() - start, 1))
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    with atomic_path(out_file) as tmp:
        torch.save({'model': state, 'meta': json.loads(json.dumps(meta))}, tmp)
    return meta
