"""Run a trained detector or segmenter on one image and draw its predictions (tools/image_demo.py).

The config's ``default_scope`` decides: mmdet configs go through ``init_detector`` /
``inference_detector`` and DetLocalVisualizer, mmseg configs through ``init_model`` /
``inference_model`` and SegLocalVisualizer.
"""
import os
from pathlib import Path
from typing import Union

import cv2
import mmcv
import torch

from .config import load_config, task_scope

PathLike = Union[str, os.PathLike]


def draw_prediction(image: PathLike, config: PathLike, checkpoint: PathLike, out_dir: PathLike,
                    device: str = 'cpu', score_thr: float = 0.3) -> Path:
    """Predict on ``image`` and write the drawing to ``out_dir/<image stem>.png``.

    Args:
        image: An image file.
        config: An mmdet or mmseg config file (or ``mmdet::`` / ``mmseg::`` name).
        checkpoint: Weights of that model (an mmengine checkpoint).
        out_dir: Folder for the drawing (created).
        device: Torch device, e.g. ``'cpu'`` or ``'cuda:0'``.
        score_thr: Detections below this score are not drawn (detection only).

    Returns:
        The written file.

    Raises:
        FileNotFoundError: the image or the checkpoint does not exist.
        ValueError: the config is neither mmdet nor mmseg, ``score_thr`` is not in [0, 1],
            ``device`` is no torch device or not on this machine, the image cannot be read or
            is the drawing's own path.
    """
    for name, path in (('image', image), ('checkpoint', checkpoint)):
        if not Path(path).is_file():
            raise FileNotFoundError(f'{name} {path} not found')
    if not 0 <= score_thr <= 1:
        raise ValueError(f'score_thr {score_thr!r} is out of range [0, 1]')
    _check_device(device)
    out_file = drawing_path(image, out_dir)
    picture = read_rgb_image(image)
    cfg = load_config(str(config))
    scope = task_scope(cfg)
    # Weights come from `checkpoint`: do not fetch the backbone's pretrained ones as well.
    cfg.model.backbone.init_cfg = None
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if scope == 'mmdet':
        from mmdet.apis import inference_detector, init_detector
        from mmdet.registry import VISUALIZERS
        model = init_detector(cfg, str(checkpoint), device=device)
        result = inference_detector(model, str(image))
        draw_args = dict(pred_score_thr=score_thr)
    else:
        from mmseg.apis import inference_model, init_model
        from mmseg.registry import VISUALIZERS
        model = init_model(cfg, str(checkpoint), device=device)
        result = inference_model(model, str(image))
        draw_args = dict(with_labels=True)
    visualizer_cfg = dict(model.cfg.visualizer, name=f'image_demo_{id(model)}',
                          vis_backends=None, save_dir=None)
    visualizer = VISUALIZERS.build(visualizer_cfg)
    visualizer.dataset_meta = model.dataset_meta
    visualizer.add_datasample('prediction', picture, data_sample=result, draw_gt=False,
                              show=False, out_file=str(out_file), **draw_args)
    return out_file


def drawing_path(image: PathLike, out_dir: PathLike) -> Path:
    """``out_dir/<image stem>.png``, where the drawing of ``image`` goes.

    Raises:
        ValueError: ``out_dir`` is a file, or the drawing's path is ``image`` itself (a ``.png``
            in ``out_dir``): the drawing would replace the picture it is drawn on.
    """
    if Path(out_dir).is_file():
        raise ValueError(f'output folder {out_dir} is a file: give a folder for the drawing')
    out_file = Path(out_dir) / f'{Path(image).stem}.png'
    if out_file.exists() and os.path.samefile(out_file, image):
        raise ValueError(f'the drawing of {image} would be written over the image itself '
                         f'({out_file}): choose another output folder')
    return out_file


def _check_device(device: str) -> None:
    """Refuse a device string torch does not know, or a CUDA device this machine lacks.

    Raises:
        ValueError: naming ``device`` and what would work.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; use e.g. 'cpu', 'cuda' or "
                         "'cuda:0'") from None
    if parsed.type != 'cuda':
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(f"device {device!r}: there is no CUDA device here; use 'cpu'")
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(f'device {device!r}: this machine has {count} CUDA device(s), '
                         f'cuda:0 to cuda:{count - 1}')


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
