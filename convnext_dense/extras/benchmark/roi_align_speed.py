"""Channels-last RoIAlign against mmcv's CPU op (``tools/benchmark.py --roi-align``).

Each case pools random boxes from random maps: mmcv's ``roi_align`` on the ``(N, C, H, W)`` map,
:func:`~convnext_dense.runtime.channels_last_roi_align.channels_last_roi_align` on the same map
in channels-last, forward alone and forward + backward, timed round-robin in one process. The
boxes' sides are drawn uniformly from the case's range (image pixels; a quarter of that on the
stride-4 map).
"""
from typing import Callable, Dict, List, Sequence

import torch

from .timing import CLOCKS, per_round_ratios, time_interleaved

# The demo Mask R-CNN's RoI extractors at their busiest level (8 images of up to 192 px, 64
# sampled RoIs per image; the mask head's positives), and a COCO-sized map at the B configs'
# FPN width with the RPN's 1000 proposals per image.
CASES = {
    'demo_boxes': dict(maps=(8, 64, 48, 48), rois=512, output_size=(7, 7), sides=(4, 60)),
    'demo_masks': dict(maps=(8, 64, 48, 48), rois=90, output_size=(14, 14), sides=(16, 96)),
    'coco_boxes': dict(maps=(2, 256, 200, 304), rois=2000, output_size=(7, 7), sides=(16, 110)),
}
STRIDE = 4


def random_rois(count: int, batch: int, height: int, width: int, sides, seed: int = 0):
    """``(count, 5)`` boxes on ``batch`` maps of ``height`` x ``width`` at :data:`STRIDE`."""
    g = torch.Generator().manual_seed(seed)
    low, high = sides
    size = torch.rand(count, 2, generator=g) * (high - low) + low
    x1 = torch.rand(count, generator=g) * (width * STRIDE - low)
    y1 = torch.rand(count, generator=g) * (height * STRIDE - low)
    index = torch.randint(0, batch, (count,), generator=g).float()
    return torch.stack([index, x1, y1, x1 + size[:, 0], y1 + size[:, 1]], 1)


def run_roi_align_speed(cases: Sequence[str], repeats: int, warmup: int, clock: str,
                        log: Callable[[str], None] = lambda _: None) -> List[Dict]:
    """Time both ops on each case; one row per case and mode (``forward``, ``train``).

    Each row holds both medians (seconds), the median and spread of the per-round ratios (ours
    over mmcv's) and the largest difference between the two results (forward) or input
    gradients (train).
    """
    from mmcv.ops import roi_align

    from ...runtime.channels_last_roi_align import channels_last_roi_align
    rows = []
    for name in cases:
        case = CASES[name]
        batch, channels, height, width = case['maps']
        output_size = case['output_size']
        maps = torch.randn(case['maps'], generator=torch.Generator().manual_seed(1))
        rois = random_rois(case['rois'], batch, height, width, case['sides'])
        plain = maps.clone().requires_grad_()
        channels_last = maps.contiguous(memory_format=torch.channels_last).requires_grad_()

        def mmcv_op():
            return roi_align(plain, rois, output_size, 1 / STRIDE, 0, 'avg', True)

        def our_op():
            return channels_last_roi_align(channels_last, rois, output_size, 1 / STRIDE)

        grad = torch.randn(mmcv_op().shape, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            difference = float((mmcv_op() - our_op()).abs().max())
        grad_difference = float((torch.autograd.grad(mmcv_op(), plain, grad)[0]
                                 - torch.autograd.grad(our_op(), channels_last, grad)[0])
                                .abs().max())
        for mode, diff in (('forward', difference), ('train', grad_difference)):
            log(f'RoIAlign {name}, {mode}')
            if mode == 'forward':
                steps = {'mmcv': lambda: mmcv_op().detach(), 'ours': lambda: our_op().detach()}
            else:
                steps = {'mmcv': lambda: torch.autograd.grad(mmcv_op(), plain, grad),
                         'ours': lambda: torch.autograd.grad(our_op(), channels_last, grad)}
            timings = time_interleaved(steps, repeats, warmup, clock=CLOCKS[clock])
            ratio = per_round_ratios(timings['ours'], timings['mmcv'])
            rows.append(dict(case=name, mode=mode, maps=list(case['maps']), rois=case['rois'],
                             output_size=list(output_size), threads=torch.get_num_threads(),
                             clock=clock, mmcv_s=timings['mmcv'].median,
                             ours_s=timings['ours'].median, ratio=ratio.median,
                             ratio_spread=ratio.spread, max_difference=diff))
    return rows


def format_rows(rows: Sequence[Dict]) -> str:
    """A markdown table of :func:`run_roi_align_speed`'s rows."""
    lines = ['| case | maps (N, C, H, W) | RoIs | bins | mode | threads | clock | mmcv s | '
             'channels-last s | ours / mmcv (per round, spread) | max difference |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for row in rows:
        spread = 'n/a' if row['ratio_spread'] is None else f"{row['ratio_spread']:.1%}"
        lines.append(
            f"| {row['case']} | {'x'.join(map(str, row['maps']))} | {row['rois']} | "
            f"{row['output_size'][0]}x{row['output_size'][1]} | {row['mode']} | "
            f"{row['threads']} | {row['clock']} | {row['mmcv_s']:.4f} | {row['ours_s']:.4f} | "
            f"{row['ratio']:.2f} ({spread}) | {row['max_difference']:.1e} |")
    return '\n'.join(lines)
