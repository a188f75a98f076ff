"""Render one synthetic "shapes" scene: a textured background and occluding shapes of 4 classes.

Classes differ by outline only; colours, shading, rotation and size are random and independent of
the class. Every painted shape pixel belongs to exactly one returned instance (its visible mask), so
instance masks and the semantic label map describe the same picture.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ...model.archs import is_int

SHAPE_CLASSES: Tuple[str, ...] = ('circle', 'triangle', 'square', 'star')
# Drawing colours per class (RGB) for visualisations; images themselves use random colours.
SHAPE_PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (230, 25, 75), (0, 130, 200), (60, 180, 75), (255, 190, 0))

_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point shift: vertices at 1/16 px precision
_MIN_COLOUR_DISTANCE = 80.0  # RGB distance from the background and touching shapes


@dataclass
class ShapeInstance:
    """One shape in a scene.

    Attributes:
        label: Class label, 1-based (``SHAPE_CLASSES[label - 1]``); 0 is the background.
        mask: Visible pixels, bool array of the image's height and width.
        full_mask: The shape's pixels before later shapes covered part of it.
        size: Requested size in pixels: the longer side of the unoccluded shape's box.
    """

    label: int
    mask: np.ndarray
    full_mask: np.ndarray
    size: int


@dataclass
class Scene:
    """A rendered image with its instances.

    Attributes:
        image: RGB image, uint8 array of shape (H, W, 3).
        instances: Shapes in drawing order; all have a non-empty visible mask.
    """

    image: np.ndarray
    instances: List[ShapeInstance]

    def label_map(self) -> np.ndarray:
        """Semantic labels as uint8 (H, W): 0 background, ``k`` for class ``SHAPE_CLASSES[k-1]``."""
        labels = np.zeros(self.image.shape[:2], np.uint8)
        for instance in self.instances:
            labels[instance.mask] = instance.label
        return labels


def _check_range(name: str, value: Sequence[int], low: int) -> Tuple[int, int]:
    if len(value) != 2 or not all(is_int(v) for v in value) or not low <= value[0] <= value[1]:
        raise ValueError(
            f'{name} must be (min, max) integers with {low} <= min <= max, got {value!r}')
    return int(value[0]), int(value[1])


def _unit_outline(label: int, rng: np.random.Generator) -> np.ndarray:
    """Vertices (N, 2) of a shape on the unit circle, randomly rotated."""
    name = SHAPE_CLASSES[label - 1]
    if name == 'circle':
        angles, radii = np.linspace(0, 2 * np.pi, 72, endpoint=False), np.ones(72)
    elif name == 'square':
        angles, radii = np.pi / 4 + np.arange(4) * np.pi / 2, np.ones(4)
    elif name == 'triangle':
        # Irregular but never degenerate: corners 120 +- 14 degrees apart.
        angles = np.arange(3) * 2 * np.pi / 3 + np.r_[0.0, rng.uniform(-0.25, 0.25, 2)]
        radii = np.ones(3)
    else:  # star: 5 spikes with a random inner radius
        angles = np.arange(10) * np.pi / 5
        radii = np.tile([1.0, rng.uniform(0.38, 0.55)], 5)
    angles = angles + rng.uniform(0, 2 * np.pi)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _shape_mask(outline: np.ndarray, size: int, height: int, width: int,
                anchor: Optional[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Scale ``outline`` so its box's longer side covers ``size`` pixels, place it inside the image.

    With ``anchor`` (a pixel position) the shape lands near it, which makes overlaps common.
    """
    points = outline - outline.min(axis=0)
    points *= (size - 1) / points.max()
    span = points.max(axis=0)  # (x, y) extent, the longer one is size - 1
    room = np.array([width - 1, height - 1]) - span
    if anchor is None:
        offset = rng.uniform(0, 1, 2) * room
    else:
        centre = anchor + rng.normal(0, 0.35 * size, 2)
        offset = np.clip(centre - span / 2, 0, room)
    mask = np.zeros((height, width), np.uint8)
    vertices = np.round((points + offset) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [vertices], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return mask.astype(bool)


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Float (H, W, 3) texture: a gradient, stripes or blotchy noise, plus soft colour noise."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    along = xs * np.cos(theta) + ys * np.sin(theta)
    base = rng.uniform(0, 255, 3).astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # linear gradient between two colours
        other = rng.uniform(0, 255, 3).astype(np.float32)
        t = (along - along.min()) / max(float(np.ptp(along)), 1.0)
        image = base * (1 - t[..., None]) + other * t[..., None]
    elif kind == 1:  # soft stripes
        other = np.clip(base + rng.uniform(-90, 90, 3), 0, 255).astype(np.float32)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * along / rng.uniform(5, 24) + rng.uniform(0, 2 * np.pi))
        image = base * (1 - t[..., None]) + other * t[..., None]
    else:  # smooth blotches
        blotches = _smooth_noise(height, width, rng, cell=rng.uniform(8, 32))
        image = base + blotches * rng.uniform(60, 140)
    return image + _smooth_noise(height, width, rng, cell=rng.uniform(16, 48)) * 40


def _smooth_noise(height: int, width: int, rng: np.random.Generator, cell: float) -> np.ndarray:
    """Zero-mean colour noise in about [-0.5, 0.5] varying over ``cell`` pixels."""
    grid = rng.uniform(-0.5, 0.5, (int(height / cell) + 2, int(width / cell) + 2, 3))
    return cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)


def _pick_colour(avoid: List[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A random colour far from every colour in ``avoid`` (the best of 50 tries if none is)."""
    best, best_distance = None, -1.0
    for _ in range(50):
        colour = rng.uniform(0, 255, 3)
        distance = min((float(np.linalg.norm(colour - a)) for a in avoid), default=np.inf)
        if distance >= _MIN_COLOUR_DISTANCE:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def _paint(image: np.ndarray, mask: np.ndarray, colour: np.ndarray,
           rng: np.random.Generator) -> None:
    """Fill ``mask`` with ``colour`` plus a linear shading ramp and some grain."""
    ys, xs = np.nonzero(mask)
    theta = rng.uniform(0, 2 * np.pi)
    along = xs * np.cos(theta) + ys * np.sin(theta)
    ramp = (along - along.mean()) / max(float(np.ptp(along)), 1.0) * rng.uniform(0, 60)
    grain = rng.normal(0, rng.uniform(0, 10), (len(ys), 3))
    image[ys, xs] = colour + ramp[:, None] + grain


def render_scene(height: int,
                 width: int,
                 rng: np.random.Generator,
                 object_size: Tuple[int, int] = (16, 96),
                 num_objects: Tuple[int, int] = (2, 8),
                 min_visible: float = 0.5,
                 overlap_prob: float = 0.4) -> Scene:
    """Draw shapes of random class, size, colour and rotation over a textured background.

    A shape drawn later covers earlier ones; a placement is rejected (and retried) when it would
    leave an earlier shape with less than ``min_visible`` of its pixels, so no instance is fully
    hidden and every visible shape pixel is annotated.

    Args:
        height: Image height in pixels, at least ``object_size[1]``.
        width: Image width in pixels, at least ``object_size[1]``.
        rng: Source of randomness; the scene is a pure function of its state.
        object_size: Range of the longer box side of a whole shape, log-uniform.
        num_objects: Range of the number of shapes wanted (fewer if placements keep failing).
        min_visible: Fraction of each shape that must stay visible, in (0, 1].
        overlap_prob: Chance that a shape is placed near an earlier one rather than anywhere.

    Returns:
        The scene with its instances in drawing order.
    """
    min_size, max_size = _check_range('object_size', object_size, low=3)
    min_count, max_count = _check_range('num_objects', num_objects, low=0)
    for name, value in (('height', height), ('width', width)):
        if not is_int(value) or value < max_size:
            raise ValueError(f'{name} must be an int >= object_size max {max_size}, got {value!r}')
    if not 0 < min_visible <= 1:
        raise ValueError(f'min_visible must be in (0, 1], got {min_visible!r}')
    if not 0 <= overlap_prob <= 1:
        raise ValueError(f'overlap_prob must be in [0, 1], got {overlap_prob!r}')

    canvas = _background(height, width, rng)
    wanted = int(rng.integers(min_count, max_count + 1))
    instances: List[ShapeInstance] = []
    colours: List[np.ndarray] = []
    for _ in range(10 * wanted):
        if len(instances) == wanted:
            break
        label = int(rng.integers(1, len(SHAPE_CLASSES) + 1))
        size = int(round(np.exp(rng.uniform(np.log(min_size), np.log(max_size)))))
        anchor = None
        if instances and rng.random() < overlap_prob:
            ys, xs = np.nonzero(instances[rng.integers(len(instances))].mask)
            anchor = np.array([xs.mean(), ys.mean()])
        full = _shape_mask(_unit_outline(label, rng), size, height, width, anchor, rng)
        if any((inst.mask & ~full).sum() < min_visible * inst.full_mask.sum()
               for inst in instances):
            continue
        touching = cv2.dilate(full.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        avoid = [canvas[full].mean(axis=0)]
        avoid += [c for inst, c in zip(instances, colours) if (inst.mask & touching).any()]
        colour = _pick_colour(avoid, rng)
        for inst in instances:
            inst.mask &= ~full
        _paint(canvas, full, colour, rng)
        instances.append(ShapeInstance(label, full.copy(), full, size))
        colours.append(colour)

    sigma = rng.uniform(0, 0.8)
    if sigma > 0.3:
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
    canvas = canvas + rng.normal(0, rng.uniform(2, 8), canvas.shape)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return Scene(image, instances)
