"""Run a trained detector or segmenter on images and draw its predictions (tools/image_demo.py).

The config's ``default_scope`` decides: mmdet configs go through ``init_detector`` /
``inference_detector`` and DetLocalVisualizer, mmseg configs through ``init_model`` /
``inference_model`` and SegLocalVisualizer.
"""
import os
import warnings
from pathlib import Path
from typing import Callable, List, Tuple, Union

import cv2
import mmcv
import torch

from ..weights.model_loader import load_model_checkpoint
from .class_names import drawing_meta
from .config import load_config, task_scope

PathLike = Union[str, os.PathLike]
# What mmdet's image demo reads from a folder.
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
# Drawings go to a folder of their own, as mmdet's demo's, never beside the user's files.
DRAWINGS = 'vis'


def draw_predictions(images: PathLike, config: PathLike, checkpoint: PathLike,
                     out_dir: PathLike, device: str = 'cpu', score_thr: float = 0.3
                     ) -> List[Path]:
    """Predict on an image, or on every image of a folder, and draw each prediction to
    ``out_dir/vis/<image stem>.png``.

    Args:
        images: An image file, or a folder of them (:data:`IMAGE_SUFFIXES`).
        config: An mmdet or mmseg config file (or ``mmdet::`` / ``mmseg::`` name).
        checkpoint: Weights of that model: a file, URL, Hugging Face folder or hub id, in any
            layout :func:`~convnext_dense.weights.load_model_checkpoint` reads; loaded strictly.
        out_dir: Folder for the drawings (created).
        device: Torch device, e.g. ``'cpu'`` or ``'cuda:0'``.
        score_thr: Detections below this score are not drawn (detection only).

    Classes and palette: :func:`~.class_names.drawing_meta` (the checkpoint's, else the
    config's), as ``tools/export.py`` writes them for ``tools/onnx_demo.py``.

    Returns:
        The written files, in the order of the images.

    Raises:
        FileNotFoundError: the image, folder or checkpoint does not exist.
        ValueError: the config is neither mmdet nor mmseg or has no model, ``score_thr`` is not
            in [0, 1], ``device`` is no torch device or not on this machine, an image cannot be
            read or is a drawing's own path, or two images would share a drawing.
    """
    files, out_files = drawing_targets(images, out_dir, score_thr)
    check_device(device)
    cfg = load_config(str(config))
    scope = task_scope(cfg)
    if not isinstance(cfg.get('model'), dict):
        raise ValueError(f'config {config} defines no model')
    # Weights come from `checkpoint`: do not fetch the backbone's pretrained ones as well.
    cfg.model.backbone.init_cfg = None
    if scope == 'mmdet':
        from mmdet.apis import inference_detector as infer
        from mmdet.apis import init_detector as init
        from mmdet.registry import VISUALIZERS
        draw_args = dict(pred_score_thr=score_thr)
    else:
        from mmseg.apis import inference_model as infer
        from mmseg.apis import init_model as init
        from mmseg.registry import VISUALIZERS
        draw_args = dict(with_labels=True)
    with warnings.catch_warnings():  # mmdet: "checkpoint is None, use COCO classes by default"
        warnings.filterwarnings('ignore', message='checkpoint is None')
        model = init(cfg, None, device=device)
    saved = load_model_checkpoint(model, checkpoint, 'evaluate')
    model.dataset_meta = drawing_meta(cfg, scope, saved.meta)
    visualizer = VISUALIZERS.build(dict(model.cfg.visualizer, name=f'image_demo_{id(model)}',
                                        vis_backends=None, save_dir=None))
    visualizer.dataset_meta = model.dataset_meta
    draw_each(visualizer, files, out_files, lambda path: infer(model, path), **draw_args)
    return out_files


def drawing_targets(images: PathLike, out_dir: PathLike, score_thr: float
                    ) -> Tuple[List[Path], List[Path]]:
    """The images to draw (:func:`image_files`) and their drawings (:func:`drawing_paths`),
    checked before any model is built: ``score_thr`` in [0, 1], every image readable.

    Raises:
        FileNotFoundError, ValueError: as those functions and :func:`read_rgb_image`.
    """
    files = image_files(images)
    if not 0 <= score_thr <= 1:
        raise ValueError(f'score_thr {score_thr!r} is out of range [0, 1]')
    out_files = drawing_paths(files, out_dir)
    for path in files:  # decoded again, one at a time, when drawn
        read_rgb_image(path)
    return files, out_files


def draw_each(visualizer, files: List[Path], out_files: List[Path],
              predict: Callable[[str], object], **draw_args) -> None:
    """Draw ``predict(image path)`` on each image into its drawing, one image at a time."""
    out_files[0].parent.mkdir(parents=True, exist_ok=True)
    for path, out_file in zip(files, out_files):
        visualizer.add_datasample('prediction', read_rgb_image(path),
                                  data_sample=predict(str(path)), draw_gt=False, show=False,
                                  out_file=str(out_file), **draw_args)


def image_files(images: PathLike) -> List[Path]:
    """``[images]`` for a file; for a folder, its images (:data:`IMAGE_SUFFIXES`), sorted.

    Raises:
        FileNotFoundError: no such file or folder, or a folder without images.
    """
    path = Path(images)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f'image {images} not found')
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f'folder {images} holds no images (files ending in '
                                f'{", ".join(IMAGE_SUFFIXES)})')
    return files


def drawing_paths(images: List[Path], out_dir: PathLike) -> List[Path]:
    """``out_dir/vis/<image stem>.png`` for each image, where its drawing goes.

    Raises:
        ValueError: ``out_dir`` or ``out_dir/vis`` is a file, a drawing's path is an image
            itself (a ``.png`` in ``out_dir/vis``), or two images have the same stem.
    """
    folder = Path(out_dir) / DRAWINGS
    for where in (Path(out_dir), folder):
        if where.is_file():
            raise ValueError(f'output folder {where} is a file: give a folder for the drawings')
    out_files, drawn_from = [], {}
    for image in images:
        out_file = folder / f'{Path(image).stem}.png'
        if out_file in drawn_from:
            raise ValueError(f'{drawn_from[out_file]} and {image} would both be drawn to '
                             f'{out_file}: give them names with different stems')
        if out_file.exists() and os.path.samefile(out_file, image):
            raise ValueError(f'the drawing of {image} would be written over the image itself '
                             f'({out_file}): choose another output folder')
        drawn_from[out_file] = image
        out_files.append(out_file)
    return out_files


def check_device(device: str) -> None:
    """Refuse a device string torch does not know, or a device this machine lacks.

    Raises:
        ValueError: naming ``device`` and what would work.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; use e.g. 'cpu', 'cuda' or "
                         "'cuda:0'") from None
    if parsed.type == 'cpu':
        return
    if parsed.type != 'cuda':
        if not _backend_available(parsed.type):
            raise ValueError(f"device {device!r}: this machine (or this torch build) has no "
                             f"{parsed.type} device; use 'cpu'")
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(f"device {device!r}: there is no CUDA device here; use 'cpu'")
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(f'device {device!r}: this machine has {count} CUDA device(s), '
                         f'cuda:0 to cuda:{count - 1}')


def _backend_available(kind: str) -> bool:
    # torch.xpu.is_available(), torch.backends.mps.is_available(), ...; 'meta' holds no data.
    for module in (getattr(torch, kind, None), getattr(torch.backends, kind, None)):
        available = getattr(module, 'is_available', None)
        if callable(available):
            return bool(available())
    return False


def read_rgb_image(image: PathLike):
    """``image`` as an RGB array.

    Raises:
        FileNotFoundError: no such file.
        ValueError: OpenCV cannot decode it (a text or truncated file, say); names the file.
    """
    if not Path(image).is_file():
        raise FileNotFoundError(f'image {image} not found')
    try:
        picture = mmcv.imread(str(image), channel_order='rgb')
    except cv2.error:  # OpenCV cannot decode it (an empty or text file, say)
        picture = None
    if picture is None:
        raise ValueError(f'image {image} cannot be read as an image (OpenCV cannot decode it)')
    return picture
