"""Write ``model.onnx`` and ``deploy.json`` for a config and checkpoint (``tools/export.py``).

The config's ``default_scope`` decides the graph: mmseg -> :class:`SegmenterGraph` (logits at the
input size), mmdet -> :class:`TwoStageGraph` (boxes, scores, labels, masks after NMS); ``part=
'backbone'`` exports the backbone alone (its feature maps). The TorchScript-based exporter is
used (``torch.onnx.export(..., dynamo=False)``, opset 17): see README "Deploy" for why.
"""
import contextlib
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
from mmengine.registry import init_default_scope

from ..atomic_files import atomic_dir, check_replaceable
from ..cpu_fast_paths import fast_paths
from ..runtime.class_names import drawing_meta
from ..runtime.config import load_config, task_scope
from ..runtime.device import replace_sync_bn
from ..weights.model_loader import load_model_checkpoint
from .errors import ExportError, import_deploy_module
from .graphs import DET_OUTPUTS, BackboneGraph, SegmenterGraph, TwoStageGraph
from .meta import META_FILE, build_meta, write_meta
from .precision import to_fp16

PathLike = Union[str, os.PathLike]
OPSET = 17  # RoiAlign's half_pixel mode (mmcv aligned=True) needs opset 16 or later
PARTS = ('model', 'backbone')
ONNX_FILE = 'model.onnx'
# What an export writes: an earlier export in the output folder may be replaced, nothing else.
EXPORT_FILES = frozenset({ONNX_FILE, META_FILE})
# Modules with no standard ONNX operator: refused before tracing, by name.
UNEXPORTABLE = {
    'DeformConv2d': 'deformable convolution has no standard ONNX operator',
    'ModulatedDeformConv2d': 'modulated deformable convolution has no standard ONNX operator',
    'DeformConv2dPack': 'deformable convolution has no standard ONNX operator',
    'ModulatedDeformConv2dPack': 'modulated deformable convolution has no standard ONNX operator',
    'CARAFEPack': 'CARAFE upsampling has no standard ONNX operator',
}


def build_model(config: PathLike, checkpoint: Optional[PathLike]):
    """The config's model in eval mode with ``checkpoint``'s weights: ``(model, cfg, scope)``.

    ``checkpoint`` is any source :func:`~convnext_dense.weights.load_model_checkpoint` reads
    (file, URL, Hugging Face folder or hub id), loaded strictly; the model's ``dataset_meta``
    holds the classes and palette to draw with (:func:`~..runtime.class_names.drawing_meta`).
    """
    cfg = load_config(str(config))
    scope = task_scope(cfg)
    cfg.model.backbone.init_cfg = None  # the weights come from `checkpoint`
    replace_sync_bn(cfg.model)  # SyncBN needs a process group; in eval it is BN
    init_default_scope(scope)
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    saved_meta = None
    if checkpoint is not None:
        saved_meta = load_model_checkpoint(model, checkpoint, 'evaluate').meta
    model.dataset_meta = drawing_meta(cfg, scope, saved_meta)
    return model.eval(), cfg, scope


def _check_modules(model: torch.nn.Module) -> None:
    for name, module in model.named_modules():
        why = UNEXPORTABLE.get(type(module).__name__)
        if why:
            raise ExportError(f'cannot export module {name!r} ({type(module).__name__}): {why}')


@contextlib.contextmanager
def _module_trail(model: torch.nn.Module):
    """Record the modules entered and not yet left, so a failure can name the innermost one."""
    names = {module: name for name, module in model.named_modules()}
    stack = []
    handles = []

    def enter(module, args) -> None:
        stack.append(module)

    def leave(module, args, output) -> None:  # returns None: the output is left as it is
        if stack and stack[-1] is module:
            stack.pop()

    for module in names:
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    try:
        yield lambda: [(names[m], type(m).__name__) for m in stack]
    finally:
        for handle in handles:
            handle.remove()


def default_shape(cfg, scope: str, part: str) -> Optional[Tuple[int, int]]:
    """The input size a static export gets without ``--shape``: the slide window for mmseg."""
    if scope == 'mmseg' and part == 'model' and cfg.model.test_cfg.get('mode') == 'slide':
        return tuple(int(v) for v in cfg.model.test_cfg.crop_size)
    return None


def export_model(config: PathLike, checkpoint: Optional[PathLike], out_dir: PathLike,
                 shape: Optional[Sequence[int]] = None, dynamic: bool = False,
                 fp16: bool = False, part: str = 'model') -> Path:
    """Export the model of ``config`` with ``checkpoint``'s weights to ``out_dir/model.onnx``.

    Args:
        config: An mmdet or mmseg config file.
        checkpoint: The trained weights (an mmengine checkpoint); ``None`` keeps the random init.
        out_dir: Folder for ``model.onnx`` and ``deploy.json`` (created; an earlier export there
            is replaced once the new one is complete).
        shape: Input (H, W) to trace with; the static input size unless ``dynamic``. Default:
            the slide window for mmseg slide configs; required otherwise.
        dynamic: Export with dynamic input height and width.
        fp16: Store weights and compute in fp16, with LayerNorm, softmax and sigmoid in fp32
            (backbone and segmenter).
        part: ``'model'`` (the segmenter or detector) or ``'backbone'`` (its feature maps).

    Returns:
        The written ``model.onnx``.

    Raises:
        ExportError: a module or operator of the model cannot be exported (named in the message).
        ValueError: a bad ``shape`` or ``part``; a static shape other than a slide
            segmenter's window.
        FileExistsError: ``out_dir`` holds files other than an earlier export (checked first).
        ModuleNotFoundError: onnx is not installed (the ``deploy`` extra).
    """
    if part not in PARTS:
        raise ValueError(f'part {part!r} is not one of {PARTS}')
    import_deploy_module('onnx')  # torch's exporter needs it; say so before building anything
    check_replaceable(out_dir, EXPORT_FILES.__contains__)
    model, cfg, scope = build_model(config, checkpoint)
    window = default_shape(cfg, scope, part)
    if shape is None:
        shape = window
        if shape is None:
            raise ValueError('give the input size to trace with (--shape H W)'
                             + ('' if dynamic else '; add --dynamic for images of any size'))
    if len(shape) != 2 or min(int(v) for v in shape) < 32:
        raise ValueError(f'shape {tuple(shape)} must be two sizes (H, W) of at least 32')
    height, width = (int(v) for v in shape)
    if window is not None and not dynamic and (height, width) != window:
        raise ValueError(f'shape {(height, width)}: this segmenter infers in slide windows of '
                         f'{window}, so a static export must take that size; leave --shape out '
                         'or add --dynamic')
    _check_modules(model)
    if part == 'backbone':
        graph, task = BackboneGraph(model.backbone), 'backbone'
        outputs = tuple(f'feat{i}' for i in model.backbone.out_indices)
    elif scope == 'mmseg':
        graph, task, outputs = SegmenterGraph(model), 'segmenter', ('seg_logits',)
    else:
        graph, task, outputs = TwoStageGraph(model), 'detector', DET_OUTPUTS
    graph.eval()  # the exporter restores the wrapper's train/eval mode on every submodule
    if fp16 and task == 'detector':
        raise ExportError('--fp16 is not supported for detectors: box decoding and NMS in fp16 '
                          'lose whole pixels at COCO sizes; export the detector in fp32')
    images = torch.zeros(1, 3, height, width)
    inputs = {'images': images}
    if task == 'detector':
        inputs['img_shape'] = torch.tensor([height, width], dtype=torch.float32)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {'images': {2: 'height', 3: 'width'}}
        if task == 'detector':
            dynamic_axes.update({name: {0: 'detections'} for name in outputs})
        elif task == 'segmenter':
            dynamic_axes['seg_logits'] = {2: 'height', 3: 'width'}
        else:
            dynamic_axes.update({name: {2: f'{name}_h', 3: f'{name}_w'} for name in outputs})
    meta = build_meta(cfg, scope, task, inputs=tuple(inputs), outputs=outputs,
                      shape=None if dynamic else (height, width), fp16=fp16, opset=OPSET,
                      config=str(config), dataset_meta=model.dataset_meta)
    # The graph and its deploy.json appear together, or an earlier export stays as it was.
    with atomic_dir(out_dir, EXPORT_FILES.__contains__) as work:
        onnx_file = work / ONNX_FILE
        _trace(graph, inputs, outputs, dynamic_axes, onnx_file)
        _check_graph(onnx_file)
        if fp16:
            to_fp16(onnx_file)
        write_meta(work, meta)
    return Path(out_dir) / ONNX_FILE


def _trace(graph, inputs: dict, outputs, dynamic_axes, onnx_file: Path) -> None:
    import warnings
    with _module_trail(graph) as trail, fast_paths(False), torch.no_grad(), \
            warnings.catch_warnings():
        warnings.simplefilter('ignore')  # tracer and deprecation warnings; failures raise
        try:
            torch.onnx.export(graph, tuple(inputs.values()), str(onnx_file), dynamo=False,
                              opset_version=OPSET, input_names=list(inputs),
                              output_names=list(outputs), dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
        except ExportError:
            raise
        except Exception as err:  # the exporter raises many types; say where it happened
            where = trail()
            place = (f' in module {where[-1][0]!r} ({where[-1][1]})' if where and where[-1][0]
                     else '')
            first = str(err).strip().splitlines()[0] if str(err).strip() else ''
            first = first.split('  [Caused by')[0]  # the exporter appends a graph dump
            raise ExportError(f'ONNX export failed{place}: {type(err).__name__}: {first}') \
                from err


def _check_graph(onnx_file: Path) -> None:
    import onnx
    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model)
    custom = sorted({f'{n.domain}::{n.op_type}' for n in model.graph.node
                     if n.domain not in ('', 'ai.onnx')})
    if custom:
        raise ExportError(f'the exported graph uses non-standard operators {custom}; '
                          'plain onnxruntime cannot run it')
    fused = sorted({n.op_type for n in model.graph.node if 'mkldnn' in n.op_type.lower()})
    if fused:
        raise ExportError(f'the exported graph contains oneDNN operators {fused}')
