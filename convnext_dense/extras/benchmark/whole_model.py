"""Whole-model latency: the B configs' detector and segmenter, with our backbone or Hugging Face's.

Both models are the same config and weights; only the backbone module differs (Hugging Face's
``ConvNextBackbone`` holding our backbone's weights, wrapped to return a tuple of contiguous maps,
as glue for mmcv must: its maps are channels-last-strided, which mmcv's CPU RoIAlign reads
wrongly without an error). Inference checks that both models give the same scores. A step handles
two images: inference is ``model.test_step`` (preprocessing, backbone, heads, post-processing);
a training step is the loss forward and backward (no optimizer step).
"""
import copy
import os.path as osp
from typing import Callable, Dict, Sequence, Tuple

import torch

from .. import REPO_CONFIGS
from .peers import build_huggingface, load_into_ours, peer_available
from .timing import CLOCKS, time_interleaved

TASK_CONFIGS = {
    'detector': osp.join(REPO_CONFIGS, 'cascade_mask_rcnn',
                         'cascade-mask-rcnn_convnext-b-in22k_fpn_4conv1fc-giou_ms-crop-3x_coco.py'),
    'segmenter': osp.join(REPO_CONFIGS, 'upernet',
                          'upernet_convnext-b-in22k_8xb2-160k_ade20k-640x640.py'),
}


def build_task_model(config_path: str) -> torch.nn.Module:
    """The config's model with random weights (nothing downloaded), in its registry's scope.

    A detector keeps every detection (score threshold 0), so the count does not depend on how
    random weights happen to score.
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from ...runtime.config import task_registry, task_scope
    cfg = Config.fromfile(config_path)
    cfg.model.backbone.init_cfg = None
    rcnn = cfg.model.get('test_cfg', {}).get('rcnn')
    if rcnn is not None:
        # Random weights score near the 0.05 threshold, where the last-digit differences between
        # two backbones decide how many boxes survive (4 against 0 seen): with no threshold both
        # keep max_per_img per image, so their box and mask heads do the same work.
        rcnn.score_thr = 0.0
    scope = task_scope(cfg)
    init_default_scope(scope)
    return task_registry(scope).build(cfg.model)


def make_batch(model: torch.nn.Module, size: Tuple[int, int], batch_size: int = 2,
               seed: int = 0) -> Dict:
    """Packed images with random boxes and masks (detector) or label maps (segmenter).

    Two images, as the configs train (``8xb2``); mmseg's pooling head cannot train on one.
    """
    torch.manual_seed(seed)
    if hasattr(model, 'roi_head') or hasattr(model, 'rpn_head'):
        from mmdet.testing import demo_mm_inputs
        return demo_mm_inputs(batch_size=batch_size, image_shapes=(3, *size),
                              num_items=[5] * batch_size, num_classes=_num_classes(model),
                              with_mask=True, use_box_type=True)
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    height, width = size
    inputs, samples = [], []
    for _ in range(batch_size):
        sample = SegDataSample(metainfo=dict(img_shape=size, ori_shape=size, pad_shape=size))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, _num_classes(model), (1, height, width)))
        inputs.append(torch.randint(0, 256, (3, height, width), dtype=torch.uint8))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


class ContiguousMaps(torch.nn.Module):
    """A peer backbone whose maps are made contiguous ``(N, C, H, W)``, as mmcv's ops read them."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(f.contiguous() for f in self.backbone(x))


def _num_classes(model: torch.nn.Module) -> int:
    """Classes of a detector's box head (a Cascade's last stage) or a segmenter's decode head."""
    if hasattr(model, 'decode_head'):
        return model.decode_head.num_classes
    head = model.roi_head.bbox_head
    return (head[-1] if isinstance(head, torch.nn.ModuleList) else head).num_classes


def _steps(model: torch.nn.Module, batch: Dict, work: Dict,
           outputs: Dict) -> Dict[str, Callable[[], None]]:
    """Inference and training steps; each records the head work it did in ``work``.

    Every step starts from the same seed, so both backbones' models sample the same proposals
    and RoIs in training; inference records the detections kept (detector) per step in
    ``work`` and the five best scores (detector) or the first logits (segmenter) in ``outputs``.
    """
    def infer():
        model.eval()
        torch.manual_seed(0)
        with torch.inference_mode():
            results = model.test_step(copy.deepcopy(batch))
        if hasattr(results[0], 'pred_instances'):
            work['detections'] = sum(len(r.pred_instances) for r in results)
            outputs['values'] = torch.cat([r.pred_instances.scores[:5] for r in results])
        else:
            outputs['values'] = torch.cat([r.seg_logits.data.flatten()[:1000] for r in results])

    def train():
        model.train()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        data = model.data_preprocessor(copy.deepcopy(batch), True)
        losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        loss.backward()
    return {'infer': infer, 'train': train}


def run_whole_models(tasks: Sequence[str], sizes: Sequence[Tuple[int, int]],
                     modes: Sequence[str] = ('infer', 'train'), repeats: int = 3,
                     warmup: int = 1, clock: str = 'wall',
                     log: Callable[[str], None] = lambda _: None) -> list:
    """Time each task model with our backbone and with Hugging Face's, interleaved.

    Returns rows ``{'task', 'mode', 'size', 'ours_s', 'huggingface_s', 'ratio'}`` with each
    side's spread (interquartile range over the median) and times, ``same_head_work``: both
    models kept as many detections, and for inference ``same_outputs``: their best scores or
    first logits agree (no peer columns when transformers is missing).
    """
    rows = []
    for task in tasks:
        if task not in TASK_CONFIGS:
            raise ValueError(f"whole-model task '{task}' is not one of {sorted(TASK_CONFIGS)}")
        ours = build_task_model(TASK_CONFIGS[task])
        models = {'ours': ours}
        if peer_available('huggingface'):
            backbone = ours.backbone
            peer = build_huggingface(_arch_of(backbone), backbone.out_indices,
                                     drop_path_rate=_drop_path_rate(backbone))
            load_into_ours(backbone, peer)
            with_peer = copy.deepcopy(ours)
            with_peer.backbone = ContiguousMaps(peer)
            models['huggingface'] = with_peer
        for size in sizes:
            batches = {name: make_batch(model, size) for name, model in models.items()}
            for mode in modes:
                log(f'whole model: {task} {mode} {size[0]}x{size[1]}')
                work = {name: {} for name in models}
                outputs = {name: {} for name in models}
                steps = {name: _steps(model, batches[name], work[name], outputs[name])[mode]
                         for name, model in models.items()}
                timings = time_interleaved(steps, repeats, warmup, clock=CLOCKS[clock])
                row = {'task': task, 'mode': mode, 'size': list(size),
                       'ours_s': timings['ours'].median, 'ours_spread': timings['ours'].spread,
                       'ours_times_s': timings['ours'].times, 'repeats': repeats,
                       'clock': clock, 'work': work}
                if 'huggingface' in timings:
                    row['huggingface_s'] = timings['huggingface'].median
                    row['huggingface_spread'] = timings['huggingface'].spread
                    row['huggingface_times_s'] = timings['huggingface'].times
                    row['ratio'] = row['ours_s'] / row['huggingface_s']
                    row['same_head_work'] = work['ours'] == work['huggingface']
                    if mode == 'infer':
                        row['same_outputs'] = bool(torch.allclose(
                            outputs['ours']['values'], outputs['huggingface']['values'],
                            rtol=1e-3, atol=1e-4))
                rows.append(row)
    return rows


def _arch_of(backbone) -> Dict:
    return dict(depths=tuple(backbone.depths), channels=tuple(backbone.channels))


def _drop_path_rate(backbone) -> float:
    rates = [block.drop_path_rate for stage in backbone.stages for block in stage]
    return max(rates) if rates else 0.0
