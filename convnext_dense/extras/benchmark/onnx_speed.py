"""onnxruntime against PyTorch eager on the same exported module (``tools/benchmark.py --onnx``).

Targets: ``backbone`` (ConvNeXt-B, random weights, at the benchmark size), ``segmenter`` and
``detector`` (the demo UperNet at its 128 x 128 slide window, the demo Mask R-CNN at 160 x 192).
Each runs with one thread and with all cores, fp32. With one thread the requested clock is used
(``cpu``: this process's CPU time, robust to other jobs); with all cores the clock is wall time,
since CPU time would add the threads up.
"""
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from .. import REPO_CONFIGS
from .timing import CLOCKS, time_interleaved

TARGETS = ('backbone', 'segmenter', 'detector')
DEMO_CONFIGS = {'segmenter': REPO_CONFIGS / 'demo/upernet_convnext-demo_shapes.py',
                'detector': REPO_CONFIGS / 'demo/mask-rcnn_convnext-demo_shapes.py'}
DEMO_SIZES = {'segmenter': (128, 128), 'detector': (160, 192)}


def _graph(target: str, size: Tuple[int, int], arch: str):
    from ...deploy.export import build_model
    from ...deploy.graphs import BackboneGraph, SegmenterGraph, TwoStageGraph
    if target == 'backbone':
        from ...model.backbone import ConvNeXt
        return BackboneGraph(ConvNeXt(arch=arch).eval()), size
    model, _, _ = build_model(DEMO_CONFIGS[target], None)
    if target == 'segmenter':
        return SegmenterGraph(model), DEMO_SIZES[target]
    return TwoStageGraph(model), DEMO_SIZES[target]


def _inputs(target: str, size: Tuple[int, int]) -> Dict[str, torch.Tensor]:
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    inputs = {'images': images}
    if target == 'detector':
        inputs['img_shape'] = torch.tensor(size, dtype=torch.float32)
    return inputs


def _export(graph, inputs: Dict[str, torch.Tensor], path: Path) -> None:
    import warnings
    from ...cpu_fast_paths import fast_paths
    from ...deploy.export import OPSET
    with fast_paths(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(graph, tuple(inputs.values()), str(path), dynamo=False,
                          opset_version=OPSET, input_names=list(inputs))


def run_onnx_speed(targets: Sequence[str], size: Tuple[int, int], repeats: int, warmup: int,
                   clock: str, arch: str = 'base',
                   log: Callable[[str], None] = print) -> List[Dict]:
    """Time each target in PyTorch eager and onnxruntime, one thread and all cores.

    Returns:
        One row per (target, threads): seconds of each side (medians), ratio onnx / eager.
    """
    import onnxruntime as ort
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(f'--onnx targets {unknown} are not among {TARGETS}')
    rows = []
    all_cores = os.cpu_count() or 1
    previous_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        for target in targets:
            graph, shape = _graph(target, size, arch)
            graph.eval()  # the exporter restores the wrapper's mode on every submodule
            inputs = _inputs(target, shape)
            path = Path(tmp) / f'{target}.onnx'
            log(f'exporting {target} at {shape[0]}x{shape[1]}')
            _export(graph, inputs, path)
            feed = {name: value.numpy() for name, value in inputs.items()}
            for threads in (1, all_cores):
                torch.set_num_threads(threads)
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                session = ort.InferenceSession(str(path), options,
                                               providers=['CPUExecutionProvider'])
                used_clock = clock if threads == 1 else 'wall'

                def eager():
                    with torch.no_grad():
                        graph(*inputs.values())

                log(f'timing {target}, {threads} thread(s), {used_clock} clock')
                timings = time_interleaved({'eager': eager,
                                            'onnxruntime': lambda run=session.run: run(None, feed)},
                                           repeats, warmup, clock=CLOCKS[used_clock])
                eager_s, onnx_s = timings['eager'].median, timings['onnxruntime'].median
                rows.append(dict(target=target, size=list(shape), threads=threads,
                                 clock=used_clock, eager_s=eager_s, onnxruntime_s=onnx_s,
                                 ratio=onnx_s / eager_s))
            del session
    torch.set_num_threads(previous_threads)
    return rows


def format_rows(rows: Sequence[Dict]) -> str:
    """A markdown table of :func:`run_onnx_speed`'s rows."""
    lines = ['| model | size | threads | clock | PyTorch eager s | onnxruntime s | '
             'onnxruntime / eager |', '|---|---|---|---|---|---|---|']
    for row in rows:
        lines.append(f"| {row['target']} | {row['size'][0]}x{row['size'][1]} | "
                     f"{row['threads']} | {row['clock']} | {row['eager_s']:.4f} | "
                     f"{row['onnxruntime_s']:.4f} | {row['ratio']:.2f} |")
    return '\n'.join(lines)
