"""Whole-model latency: the B configs' detector and segmenter, with our backbone or Hugging Face's.

Both models are the same config and weights; only the backbone module differs (Hugging Face's
``ConvNextBackbone`` holding our backbone's weights, wrapped to return a tuple of contiguous maps,
as glue for mmcv must: its maps are channels-last-strided, which mmcv's CPU RoIAlign reads
wrongly without an error). Inference checks that both models give the same scores. A step handles
two images: inference is ``model.test_step`` (preprocessing, backbone, heads, post-processing);
a training step is the loss forward and backward (no optimizer step). Each step also records the
time spent in the backbone (:class:`BackboneClock`), so the rest (neck, heads, pre- and
post-processing) can be compared between the two models.
"""
import copy
import os.path as osp
import statistics
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .. import REPO_CONFIGS
from .peers import build_huggingface, load_into_ours, peer_available
from .timing import CLOCKS, Timing, per_round_ratios, time_interleaved

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


class BackboneClock:
    """Time spent in ``model.backbone`` during each step, read with ``clock``.

    The forward pass is timed between a forward pre-hook and a forward hook. The backward pass is
    timed from the moment the first gradient reaches one of the backbone's outputs to the end of
    the step: the backbone runs first, so its backward runs last. That span also holds the rest
    of the backward of whatever received those gradients first-hand (an FPN's lateral 1x1
    convolutions), so in training the backbone share is slightly overstated, alike for both models.

    Attributes:
        times: Backbone seconds of each step run through :meth:`timed`, in order.
    """

    def __init__(self, backbone: torch.nn.Module, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.times: List[float] = []
        self.reset()
        backbone.register_forward_pre_hook(self._enter)
        backbone.register_forward_hook(self._leave)

    def reset(self) -> None:
        """Start a new step."""
        self.forward_s = 0.0
        self._entered = 0.0
        self._backward_from: Optional[float] = None

    def seconds(self) -> float:
        """Backbone seconds of the step since :meth:`reset`, read at its end."""
        backward = 0.0 if self._backward_from is None else self.clock() - self._backward_from
        return self.forward_s + backward

    def timed(self, step: Callable[[], None]) -> Callable[[], None]:
        """``step``, appending its backbone seconds to :attr:`times` each time it runs."""
        def run():
            self.reset()
            step()
            self.times.append(self.seconds())
        return run

    def _enter(self, module, args) -> None:
        self._entered = self.clock()

    def _leave(self, module, args, outputs) -> None:
        self.forward_s += self.clock() - self._entered
        for output in outputs:
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(self._gradient_arrived)

    def _gradient_arrived(self, grad: torch.Tensor) -> None:
        if self._backward_from is None:
            self._backward_from = self.clock()


def _num_classes(model: torch.nn.Module) -> int:
    """Classes of a detector's box head (a Cascade's last stage) or a segmenter's decode head."""
    if hasattr(model, 'decode_head'):
        return model.decode_head.num_classes
    head = model.roi_head.bbox_head
    return (head[-1] if isinstance(head, torch.nn.ModuleList) else head).num_classes


def _steps(model: torch.nn.Module, batch: Dict, work: Dict, outputs: Dict,
           backbone_clock: Optional[BackboneClock] = None) -> Dict[str, Callable[[], None]]:
    """Inference and training steps; each records the head work it did in ``work``.

    Every step starts from the same seed, so both backbones' models sample the same proposals
    and RoIs in training; inference records the detections kept (detector) per step in
    ``work`` and the five best scores (detector) or the first logits (segmenter) in ``outputs``.
    With ``backbone_clock`` (on ``model.backbone``), each step records the seconds it spent in
    the backbone there.
    """
    timed = (lambda step: step) if backbone_clock is None else backbone_clock.timed

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
    return {'infer': timed(infer), 'train': timed(train)}


def run_whole_models(tasks: Sequence[str], sizes: Sequence[Tuple[int, int]],
                     modes: Sequence[str] = ('infer', 'train'), repeats: int = 3,
                     warmup: int = 1, clock: str = 'wall',
                     log: Callable[[str], None] = lambda _: None) -> list:
    """Time each task model with our backbone and with Hugging Face's, interleaved.

    Returns rows ``{'task', 'mode', 'size', 'ours_s', 'huggingface_s', 'ratio'}`` with each
    side's spread (interquartile range over the median, None under 4 rounds) and times,
    ``round_ratio``: the median of the rounds' ratios (each round ran both models back to back,
    so drifts of the machine cancel) with its spread ``round_ratio_spread``, ``same_head_work``:
    both models kept as many detections, and for inference ``same_outputs``: their best scores
    or first logits agree (no peer columns when transformers is missing). ``<side>_backbone_s`` is
    the median time spent in the backbone, ``<side>_rest_s`` the median of the rest of each step
    (neck, heads, pre- and post-processing), and ``rest_ratio`` compares the rest: above 1 when
    the neck and heads run slower on our backbone's maps.
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
        backbone_clocks = {name: BackboneClock(model.backbone, CLOCKS[clock])
                           for name, model in models.items()}
        for size in sizes:
            batches = {name: make_batch(model, size) for name, model in models.items()}
            for mode in modes:
                log(f'whole model: {task} {mode} {size[0]}x{size[1]}')
                work = {name: {} for name in models}
                outputs = {name: {} for name in models}
                for backbone_clock in backbone_clocks.values():
                    backbone_clock.times.clear()
                steps = {name: _steps(model, batches[name], work[name], outputs[name],
                                      backbone_clocks[name])[mode]
                         for name, model in models.items()}
                timings = time_interleaved(steps, repeats, warmup, clock=CLOCKS[clock])
                row = {'task': task, 'mode': mode, 'size': list(size), 'repeats': repeats,
                       'clock': clock, 'work': work}
                for name, timing in timings.items():
                    row.update(_side_columns(name, timing, backbone_clocks[name].times[warmup:]))
                if 'huggingface' in timings:
                    row['ratio'] = row['ours_s'] / row['huggingface_s']
                    per_round = per_round_ratios(timings['ours'], timings['huggingface'])
                    row['round_ratio'], row['round_ratio_spread'] = (per_round.median,
                                                                     per_round.spread)
                    row['rest_ratio'] = row['ours_rest_s'] / row['huggingface_rest_s']
                    row['same_head_work'] = work['ours'] == work['huggingface']
                    if mode == 'infer':
                        row['same_outputs'] = bool(torch.allclose(
                            outputs['ours']['values'], outputs['huggingface']['values'],
                            rtol=1e-3, atol=1e-4))
                rows.append(row)
    return rows


def _side_columns(name: str, timing: Timing, backbone_times: Sequence[float]) -> Dict:
    """One model's columns: step time, spread and times, backbone time, time outside it."""
    rest = [total - backbone for total, backbone in zip(timing.times, backbone_times)]
    return {f'{name}_s': timing.median, f'{name}_spread': timing.spread,
            f'{name}_times_s': timing.times,
            f'{name}_backbone_s': statistics.median(backbone_times),
            f'{name}_rest_s': statistics.median(rest)}


def _arch_of(backbone) -> Dict:
    return dict(depths=tuple(backbone.depths), channels=tuple(backbone.channels))


def _drop_path_rate(backbone) -> float:
    rates = [block.drop_path_rate for stage in backbone.stages for block in stage]
    return max(rates) if rates else 0.0
