"""Run an exported model with onnxruntime, with the config's pre- and post-processing.

Pre-processing is the config's own test pipeline (stored in ``deploy.json``; annotation loading
left out) followed by the data preprocessor's normalisation and padding. Post-processing is
mmseg's slide inference (a loop over windows of the exported model) and resize-then-argmax, and
mmdet's rescale of boxes and pasting of masks (``_do_paste_mask``). Results are mmdet / mmseg data
samples, so the library's visualizers and metrics take them as they are.
"""
import os
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..model.archs import is_int
from .errors import import_deploy_module
from .meta import read_meta

PathLike = Union[str, os.PathLike]
MAX_THREADS = 1 << 16  # onnxruntime takes a C int; more threads than this is a typo
MIN_INPUT_SIZE = 32  # the backbone's total stride: a smaller side vanishes before stage 4


class OnnxModel:
    """A ``tools/export.py`` folder loaded into an onnxruntime session.

    Args:
        model_dir: The folder with ``model.onnx`` and ``deploy.json``.
        threads: onnxruntime intra-op threads (``None``: its default, all cores).

    Raises:
        FileNotFoundError: ``deploy.json`` or ``model.onnx`` is not in ``model_dir``.
        ValueError: ``threads`` is not an int >= 1, or ``deploy.json`` is not an export's.

    Example:
        >>> model = OnnxModel('work_dirs/onnx/upernet')
        >>> sample = model.predict('demo.jpg')   # a SegDataSample (DetDataSample for detectors)
    """

    def __init__(self, model_dir: PathLike, threads: Optional[int] = None):
        ort = import_deploy_module('onnxruntime')
        self.model_dir = Path(model_dir)
        self.meta = read_meta(self.model_dir)
        options = ort.SessionOptions()
        if threads is not None:
            if not is_int(threads) or not 1 <= threads <= MAX_THREADS:
                raise ValueError(f'threads {threads!r} must be an int from 1 to {MAX_THREADS}')
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        graph = self.model_dir / 'model.onnx'
        if not graph.is_file():
            raise FileNotFoundError(f'{graph} not found: {model_dir} has a deploy.json but no '
                                    'model.onnx (an export that did not finish?); export again '
                                    'with tools/export.py')
        try:
            self.session = ort.InferenceSession(str(graph), options,
                                                providers=['CPUExecutionProvider'])
        except Exception as err:  # noqa: BLE001  (onnxruntime's own classes: InvalidProtobuf, ...)
            raise ValueError(f'onnxruntime cannot load {graph} ({type(err).__name__}: '
                             f'{str(err).splitlines()[0] if str(err) else ""}); export again '
                             'with tools/export.py') from None
        self._pipeline = None

    @property
    def task(self) -> str:
        """``'backbone'``, ``'segmenter'`` or ``'detector'``."""
        return self.meta['task']

    def run(self, images: np.ndarray, img_shape=None) -> Dict[str, np.ndarray]:
        """The raw graph outputs for a normalised, padded (1, 3, H, W) float32 batch."""
        shape = self.meta['input']['shape']
        # Too small first: a dynamic export would refuse it too.
        if min(images.shape[2:]) < MIN_INPUT_SIZE:
            raise ValueError(f'input of size {tuple(images.shape[2:])} is smaller than the '
                             f'{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} the backbone\'s four stages need '
                             '(stride 32): resize the image up, or export a config that pads it')
        if shape is not None and list(images.shape[2:]) != list(shape):
            raise ValueError(f'input of size {tuple(images.shape[2:])} given to a model exported '
                             f'for {tuple(shape)}; export with --dynamic for other sizes')
        feed = {'images': np.ascontiguousarray(images, dtype=np.float32)}
        if 'img_shape' in self.meta['inputs']:
            if img_shape is None:
                img_shape = images.shape[2:]
            feed['img_shape'] = np.asarray(img_shape, dtype=np.float32)
        values = self.session.run(None, feed)
        return dict(zip(self.meta['outputs'], values))

    # -- pre-processing -------------------------------------------------------------------
    def load(self, image: Union[PathLike, np.ndarray]) -> dict:
        """Run the config's test pipeline on an image file or BGR array (an (H, W) or (H, W, 1)
        grayscale array is repeated to three channels and a BGRA array's alpha dropped, as
        mmcv's ``imread`` does with such files)."""
        from mmcv.transforms import Compose
        from mmengine.registry import init_default_scope
        init_default_scope(self.meta['scope'])
        steps = [_tuples(step) for step in self.meta['test_pipeline']]
        if isinstance(image, np.ndarray):
            steps[0] = dict(type='LoadImageFromNDArray')
            data = dict(img=as_bgr(image), img_id=0)
        else:
            if not Path(image).is_file():
                raise FileNotFoundError(f'image {image} not found')
            data = dict(img_path=str(image), img_id=0)
        return Compose(steps)(data)

    def normalise(self, inputs: torch.Tensor) -> np.ndarray:
        """The data preprocessor: channel order, ``(x - mean) / std``, padding; (1, 3, H, W)."""
        spec = self.meta['input']
        image = inputs.float()
        if spec['bgr_to_rgb']:
            image = image[[2, 1, 0]]
        mean = torch.tensor(spec['mean']).view(-1, 1, 1)
        std = torch.tensor(spec['std']).view(-1, 1, 1)
        image = (image - mean) / std
        divisor = spec['pad_size_divisor']
        height, width = image.shape[1:]
        pad_h = int(np.ceil(height / divisor)) * divisor - height
        pad_w = int(np.ceil(width / divisor)) * divisor - width
        if spec.get('pad_size'):  # mmseg's test_cfg.size: pad up to it, never crop
            pad_h, pad_w = (max(spec['pad_size'][0] - height, 0),
                            max(spec['pad_size'][1] - width, 0))
        if spec['shape'] is not None and self.task == 'detector':
            # A static detector takes every image padded to its size (as a batch would be).
            if height > spec['shape'][0] or width > spec['shape'][1]:
                raise ValueError(f'image of size {(height, width)} is larger than the exported '
                                 f'input {tuple(spec["shape"])}; export with a larger --shape '
                                 'or --dynamic')
            pad_h, pad_w = spec['shape'][0] - height, spec['shape'][1] - width
        image = F.pad(image, (0, pad_w, 0, pad_h), value=spec['pad_value'])
        return image[None].numpy()

    # -- prediction -----------------------------------------------------------------------
    def predict(self, image: Union[PathLike, np.ndarray]):
        """Predict on one image: a DetDataSample / SegDataSample, or the feature maps (backbone)."""
        data = self.load(image)
        sample = data['data_samples']
        images = self.normalise(data['inputs'])
        if self.task == 'backbone':
            return list(self.run(images).values())
        if self.task == 'segmenter':
            return self._segment(images, sample)
        return self._detect(images, sample)

    def _segment(self, images: np.ndarray, sample):
        from mmengine.structures import PixelData
        spec = self.meta['segmenter']
        height, width = sample.img_shape[:2]
        # As mmseg: inference on the padded image, then the padding's logits cropped away.
        if spec['mode'] == 'slide':
            logits = self.slide(images)
        else:
            logits = torch.from_numpy(self.run(images)['seg_logits'])
        logits = logits[:, :, :height, :width]
        if tuple(logits.shape[2:]) != tuple(sample.ori_shape[:2]):
            logits = F.interpolate(logits, size=sample.ori_shape[:2], mode='bilinear',
                                   align_corners=spec['align_corners'])
        logits = logits[0]
        sample.set_data({'seg_logits': PixelData(data=logits),
                         'pred_sem_seg': PixelData(data=logits.argmax(dim=0, keepdim=True))})
        return sample

    def slide(self, images: np.ndarray) -> torch.Tensor:
        """mmseg's ``slide_inference``: average the logits of overlapping windows."""
        spec = self.meta['segmenter']
        h_stride, w_stride = spec['stride']
        h_crop, w_crop = spec['crop_size']
        _, _, h_img, w_img = images.shape
        h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
        preds, count = None, np.zeros((1, 1, h_img, w_img), dtype=np.float32)
        for h_idx in range(h_grids):
            for w_idx in range(w_grids):
                y2 = min(h_idx * h_stride + h_crop, h_img)
                x2 = min(w_idx * w_stride + w_crop, w_img)
                y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
                logits = self.run(images[:, :, y1:y2, x1:x2])['seg_logits']
                if preds is None:
                    preds = np.zeros((1, logits.shape[1], h_img, w_img), dtype=np.float32)
                preds[:, :, y1:y2, x1:x2] += logits
                count[:, :, y1:y2, x1:x2] += 1
        return torch.from_numpy(preds / count)

    def _detect(self, images: np.ndarray, sample):
        from mmengine.structures import InstanceData
        height, width = sample.img_shape[:2]
        out = self.run(images, img_shape=(height, width))
        boxes = torch.from_numpy(out['boxes']).float()
        scale = boxes.new_tensor(sample.scale_factor).repeat(2)
        boxes = boxes / scale
        ori_h, ori_w = sample.ori_shape[:2]
        masks = paste_masks(torch.from_numpy(out['masks']).float(), boxes, ori_h, ori_w,
                            self.meta['detector']['mask_thr_binary'])
        sample.pred_instances = InstanceData(
            bboxes=boxes, scores=torch.from_numpy(out['scores']).float(),
            labels=torch.from_numpy(out['labels']).long(), masks=masks)
        return sample


def as_bgr(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) image from a grayscale (H, W) / (H, W, 1) or BGRA (H, W, 4) array.

    Raises:
        ValueError: the array has another shape.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[:, :, :3]
    raise ValueError(f'image array of shape {image.shape}: expected (H, W) or (H, W, 1) '
                     'grayscale, (H, W, 3) BGR or (H, W, 4) BGRA')


def _tuples(value):
    """deploy.json's lists back as the config's tuples where they are numbers (mmcv's Resize
    takes ``scale`` as a tuple only); other lists stay lists."""
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [_tuples(item) for item in value]
        numbers = items and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                for v in items)
        return tuple(items) if numbers else items
    return value


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int,
                threshold: float) -> torch.Tensor:
    """mmdet FCNMaskHead's paste on CPU: each (M, M) probability map into its box, thresholded."""
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    full = torch.zeros(len(masks), height, width, dtype=torch.bool)
    for i in range(len(masks)):
        chunk, spatial = _do_paste_mask(masks[i:i + 1, None], boxes[i:i + 1], height, width,
                                        skip_empty=True)
        full[(slice(i, i + 1),) + spatial] = chunk >= threshold
    return full


def draw_predictions(images: PathLike, model_dir: PathLike, out_dir: PathLike,
                     score_thr: float = 0.3) -> List[Path]:
    """Predict on an image, or every image of a folder, with an exported model and draw each as
    ``tools/image_demo.py`` does, to ``out_dir/vis/<image stem>.png``.

    Returns:
        The written files, in the order of the images.

    Raises:
        FileNotFoundError: an image or folder, ``deploy.json`` or ``model.onnx`` is not there.
        ValueError: ``score_thr`` outside [0, 1], an image OpenCV cannot decode or that is a
            drawing's own path, a graph onnxruntime cannot load, or a backbone export (nothing
            to draw).
    """
    from ..runtime.class_names import seeded_palette
    from ..runtime.inference import draw_each, drawing_targets
    files, out_files = drawing_targets(images, out_dir, score_thr)
    model = OnnxModel(model_dir)
    if model.task == 'backbone':
        raise ValueError(f'{model_dir} holds a backbone export: there is nothing to draw')
    if model.meta['scope'] == 'mmdet':
        from mmdet.registry import VISUALIZERS
        visualizer_cfg, draw_args = dict(type='DetLocalVisualizer'), dict(pred_score_thr=score_thr)
    else:
        from mmseg.registry import VISUALIZERS
        visualizer_cfg, draw_args = dict(type='SegLocalVisualizer'), dict(with_labels=True)
    visualizer = VISUALIZERS.build(dict(visualizer_cfg, name=f'onnx_demo_{id(model)}'))
    classes = tuple(model.meta['classes'])
    # JSON lists; the visualizers take (r, g, b) tuples. Exports before palettes were always
    # written may have none.
    palette = model.meta['palette'] or seeded_palette(len(classes))
    visualizer.dataset_meta = {'classes': classes, 'palette': [tuple(c) for c in palette]}
    draw_each(visualizer, files, out_files, model.predict, **draw_args)
    return out_files
