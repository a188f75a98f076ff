"""Backbone and UperNet exported to ONNX give PyTorch eager's outputs under onnxruntime.

Demo-size models (the demo configs, random weights) on generated demo images; the references
are the backbone's forward and mmseg's own ``encode_decode`` / ``inference_model``.
"""
import json
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch
from mmseg.apis import inference_model

from convnext_dense.cpu_fast_paths import fast_paths_enabled
from convnext_dense.extras.demo.shapes import generate_shapes_dataset
from convnext_dense.deploy import ExportError, OnnxModel, export_model
from convnext_dense.deploy.export import build_model
from convnext_dense.deploy.graphs import TwoStageGraph
from convnext_dense.deploy.precision import FP32_OPS
from convnext_dense.runtime.config import load_config
from deploy_helpers import DET_CONFIG, ROOT, SEG_CONFIG, random_checkpoint, with_data_root

LOGIT_TOL = 1e-4


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('deploy_seg') / 'shapes'
    generate_shapes_dataset(root, seed=0, num_train=1, num_val=4)
    return root


@pytest.fixture(scope='module')
def upernet(shapes, tmp_path_factory):
    work = tmp_path_factory.mktemp('upernet_onnx')
    config = with_data_root(SEG_CONFIG, 'seg', shapes, work / 'config.py')
    checkpoint = random_checkpoint(config, work / 'model.pth')
    return config, checkpoint, work


def _max_diff(outputs, references):
    return max(float(np.abs(out - ref.numpy()).max()) for out, ref in zip(outputs, references))


@pytest.mark.parametrize('dynamic', [False, True])
def test_backbone_feature_maps_match_eager(upernet, tmp_path, dynamic):
    config, checkpoint, _ = upernet
    export_model(config, checkpoint, tmp_path, shape=(128, 160), dynamic=dynamic,
                 part='backbone')
    graph = onnx.load(str(tmp_path / 'model.onnx')).graph
    assert not any('mkldnn' in node.op_type.lower() for node in graph.node)
    assert len(graph.output) == 4
    model, _, _ = build_model(config, checkpoint)
    runtime = OnnxModel(tmp_path)
    sizes = [(128, 160), (96, 224)] if dynamic else [(128, 160)]
    for height, width in sizes:
        images = torch.randn(1, 3, height, width)
        with torch.no_grad():
            reference = model.backbone(images)  # eager, with its fast paths
        outputs = list(runtime.run(images.numpy()).values())
        assert [o.shape for o in outputs] == [tuple(r.shape) for r in reference]
        print(f'backbone {height}x{width}: max abs diff {_max_diff(outputs, reference):.2e}')
        assert _max_diff(outputs, reference) <= LOGIT_TOL
    if not dynamic:
        with pytest.raises(ValueError, match=r'exported for \(128, 160\)'):
            runtime.run(np.zeros((1, 3, 96, 96), np.float32))
    # As the backbone itself refuses it (not onnxruntime's error deep in the graph), and before
    # a static export's size check: --dynamic would not help.
    with pytest.raises(ValueError, match=r'\(17, 64\) is smaller than the 32x32'):
        runtime.run(np.zeros((1, 3, 17, 64), np.float32))


@pytest.mark.parametrize('dynamic', [False, True])
def test_segmenter_logits_match_encode_decode(upernet, tmp_path, dynamic):
    config, checkpoint, _ = upernet
    export_model(config, checkpoint, tmp_path, dynamic=dynamic)  # shape: the slide window
    model, _, _ = build_model(config, checkpoint)
    runtime = OnnxModel(tmp_path)
    assert runtime.meta['input']['shape'] == (None if dynamic else [128, 128])
    for height, width in ([(128, 128), (150, 171)] if dynamic else [(128, 128)]):
        images = torch.randn(1, 3, height, width)
        metas = [dict(img_shape=(height, width), pad_shape=(height, width))]
        with torch.no_grad():
            reference = model.encode_decode(images, metas)
        out = runtime.run(images.numpy())['seg_logits']
        assert out.shape == tuple(reference.shape)
        print(f'segmenter {height}x{width}: max abs diff {_max_diff([out], [reference]):.2e}')
        assert _max_diff([out], [reference]) <= LOGIT_TOL


def test_segmenter_slide_masks_match_mmseg_on_demo_images(upernet, shapes, tmp_path):
    config, checkpoint, _ = upernet
    export_model(config, checkpoint, tmp_path)
    model, cfg, _ = build_model(config, checkpoint)
    model.cfg = cfg
    runtime = OnnxModel(tmp_path)
    images = sorted((shapes / 'ade' / 'images' / 'validation').glob('*.jpg'))
    assert len({cv2.imread(str(i)).shape for i in images}) >= 2  # several sizes, one window
    assert _identical_share(model, runtime, images) >= 0.999


def _identical_share(model, runtime, images) -> float:
    """The share of pixels whose class the export predicts as mmseg's inference_model does."""
    same = total = 0
    for image in images:
        with torch.no_grad():
            reference = inference_model(model, str(image)).pred_sem_seg.data
        predicted = runtime.predict(image).pred_sem_seg.data
        assert predicted.shape == reference.shape
        same += (predicted == reference).sum().item()
        total += reference.numel()
    print(f'segmentation masks: {same / total:.6f} of {total} pixels identical')
    return same / total


def test_stock_resize_padding_and_dataset_classes_as_mmseg(upernet, shapes, tmp_path):
    """A Resize(scale=(w, h)) test step (every stock config has one), test-time padding to a
    multiple of 32 and classes from the dataset class: predictions still equal mmseg's."""
    config, checkpoint, _ = upernet
    cfg = load_config(str(config))
    resize = dict(type='Resize', scale=(256, 160), keep_ratio=True)
    cfg.test_pipeline = [cfg.test_pipeline[0], resize, *cfg.test_pipeline[1:]]
    cfg.test_dataloader.dataset.pipeline = cfg.test_pipeline
    cfg.test_dataloader.dataset.update(type='ADE20KDataset', metainfo=None)
    cfg.model.data_preprocessor.test_cfg = dict(size_divisor=32)
    stock_like = tmp_path / 'stock_like.py'
    cfg.dump(str(stock_like))
    export_model(stock_like, checkpoint, tmp_path / 'onnx', dynamic=True)
    runtime = OnnxModel(tmp_path / 'onnx')
    assert runtime.meta['classes'][:2] == ['wall', 'building']  # ADE20KDataset's own
    model, built, _ = build_model(stock_like, checkpoint)
    model.cfg = built
    images = sorted((shapes / 'ade' / 'images' / 'validation').glob('*.jpg'))
    assert _identical_share(model, runtime, images) >= 0.999


def test_grayscale_and_bgra_arrays_are_predicted_as_mmcv_reads_such_files(upernet, shapes,
                                                                          tmp_path):
    config, checkpoint, _ = upernet
    export_model(config, checkpoint, tmp_path)
    runtime = OnnxModel(tmp_path)
    image = sorted((shapes / 'ade' / 'images' / 'validation').glob('*.jpg'))[0]
    gray = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / 'gray.png'), gray)
    from_file = runtime.predict(tmp_path / 'gray.png').seg_logits.data  # mmcv reads it as BGR
    for array in (gray, gray[:, :, None]):
        assert torch.equal(runtime.predict(array).seg_logits.data, from_file)
    bgr = cv2.imread(str(image))
    bgra = np.concatenate([bgr, np.full(bgr.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert torch.equal(runtime.predict(bgra).seg_logits.data,
                       runtime.predict(bgr).seg_logits.data)
    with pytest.raises(ValueError, match=r'image array of shape \(2, 64, 64, 3\): expected'):
        runtime.predict(np.zeros((2, 64, 64, 3), np.uint8))


@pytest.mark.parametrize('part', ['backbone', 'model'])
def test_fp16_keeps_layer_norm_in_fp32_and_stays_close(upernet, tmp_path, part):
    config, checkpoint, _ = upernet
    export_model(config, checkpoint, tmp_path / 'fp32', part=part, shape=(128, 128))
    export_model(config, checkpoint, tmp_path / 'fp16', part=part, shape=(128, 128), fp16=True)
    graph = onnx.load(str(tmp_path / 'fp16' / 'model.onnx')).graph
    fp16_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert fp16_weights, 'no fp16 weights in the fp16 export'
    norms = [node for node in graph.node if node.op_type == 'LayerNormalization']
    assert norms and 'LayerNormalization' in FP32_OPS
    weights = {t.name: t.data_type for t in graph.initializer}
    for node in norms:  # LayerNorm's scale and bias stay fp32, so does its compute
        assert all(weights.get(name, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT
                   for name in node.input[1:]), node.name
    images = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    full = OnnxModel(tmp_path / 'fp32').run(images)
    half = OnnxModel(tmp_path / 'fp16').run(images)
    for name in full:
        scale = float(np.abs(full[name]).max())
        diff = float(np.abs(full[name] - half[name]).max())
        print(f'fp16 vs fp32 {part} {name}: max abs diff {diff:.3e} (max |fp32| {scale:.3e})')
        assert np.isfinite(half[name]).all()
        assert diff <= 0.02 * scale


def test_onnx_demo_draws_a_prediction(upernet, shapes, tmp_path):
    config, checkpoint, _ = upernet
    export_model(config, checkpoint, tmp_path / 'onnx')
    image = sorted((shapes / 'ade' / 'images' / 'validation').glob('*.jpg'))[0]
    result = subprocess.run(
        [sys.executable, 'tools/onnx_demo.py', str(image), str(tmp_path / 'onnx'), '--out-dir',
         str(tmp_path / 'drawn')], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    drawn = cv2.imread(str(tmp_path / 'drawn' / 'vis' / f'{image.stem}.png'))
    assert drawn is not None and drawn.shape == cv2.imread(str(image)).shape
    notes = tmp_path / 'notes.jpg'
    notes.write_text('not a picture')
    result = subprocess.run(
        [sys.executable, 'tools/onnx_demo.py', str(notes), str(tmp_path / 'onnx')], cwd=ROOT,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert f'image {notes} cannot be read as an image' in result.stderr


def test_export_reports_a_missing_checkpoint(tmp_path):
    result = subprocess.run(
        [sys.executable, 'tools/export.py', str(DET_CONFIG), str(tmp_path / 'none.pth'),
         '--out', str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "none.pth' is not an existing file" in result.stderr


def test_missing_deploy_extra_is_named_with_its_install_command(upernet, tmp_path, monkeypatch):
    config, checkpoint, _ = upernet
    export_model(config, checkpoint, tmp_path / 'onnx')
    monkeypatch.setitem(sys.modules, 'onnx', None)  # as if not installed: import raises
    with pytest.raises(ModuleNotFoundError, match=r"onnx is not installed: .*pip install -e "
                                                  r"'\.\[deploy\]'"):
        export_model(config, checkpoint, tmp_path / 'again')
    assert not (tmp_path / 'again').exists()
    cv2.imwrite(str(tmp_path / 'any.jpg'), np.zeros((32, 32, 3), np.uint8))
    script = ("import runpy, sys; sys.modules['onnxruntime'] = None; sys.argv = sys.argv[1:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")
    result = subprocess.run(
        [sys.executable, '-c', script, 'tools/onnx_demo.py', str(tmp_path / 'any.jpg'),
         str(tmp_path / 'onnx')], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith('error: onnxruntime is not installed: ')


def _deploy_json_alone(folder):
    (folder / 'deploy.json').write_text(json.dumps(dict(
        task='segmenter', scope='mmseg', input={}, inputs=['images'], outputs=['seg_logits'])))


def test_onnx_demo_names_a_missing_model_onnx(tmp_path):
    _deploy_json_alone(tmp_path)
    with pytest.raises(FileNotFoundError, match='model.onnx not found'):
        OnnxModel(tmp_path)
    image = tmp_path / 'any.jpg'
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    result = subprocess.run(
        [sys.executable, 'tools/onnx_demo.py', str(image), str(tmp_path), '--out-dir',
         str(tmp_path / 'drawn')], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert f'{tmp_path / "model.onnx"} not found' in result.stderr


def test_onnx_demo_never_draws_over_the_image(tmp_path):
    from convnext_dense.deploy.runtime import draw_predictions
    image = tmp_path / 'vis' / 'photo.png'
    image.parent.mkdir()
    cv2.imwrite(str(image), np.full((32, 32, 3), 7, np.uint8))
    before = image.read_bytes()
    with pytest.raises(ValueError, match=r'photo.png would be written over the image itself'):
        draw_predictions(image, tmp_path / 'onnx', tmp_path)
    assert image.read_bytes() == before
    with pytest.raises(ValueError, match=r'output folder .*photo.png is a file'):
        draw_predictions(image, tmp_path / 'onnx', image)


def test_export_takes_the_checkpoints_classes_as_image_demo_does(upernet, shapes, tmp_path):
    config, checkpoint, _ = upernet
    renamed = [f'kind{i}' for i in range(5)]
    saved = tmp_path / 'renamed.pth'
    torch.save({'state_dict': torch.load(checkpoint)['state_dict'],
                'meta': {'dataset_meta': {'classes': renamed}}}, saved)
    export_model(config, saved, tmp_path / 'onnx')
    meta = json.loads((tmp_path / 'onnx' / 'deploy.json').read_text())
    assert meta['classes'] == renamed
    assert meta['palette'] == [list(c) for c in load_config(str(config)).palette]
    # A folder of images, drawn into OUT_DIR/vis; a damaged graph is named, not a traceback.
    images = shapes / 'ade' / 'images' / 'validation'
    result = subprocess.run(
        [sys.executable, 'tools/onnx_demo.py', str(images), str(tmp_path / 'onnx'), '--out-dir',
         str(tmp_path / 'drawn')], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert sorted(p.stem for p in (tmp_path / 'drawn' / 'vis').iterdir()) == sorted(
        p.stem for p in images.glob('*.jpg'))
    graph = tmp_path / 'onnx' / 'model.onnx'
    graph.write_bytes(graph.read_bytes()[:10000])
    with pytest.raises(ValueError, match=r'onnxruntime cannot load .*model.onnx .*export again'):
        OnnxModel(tmp_path / 'onnx')


def test_parity_refuses_a_config_of_the_other_task(upernet, tmp_path):
    from convnext_dense.deploy.parity import detector_parity, segmenter_parity
    config, checkpoint, _ = upernet
    export_model(config, checkpoint, tmp_path, part='model')
    for parity, args in ((segmenter_parity, ()), (detector_parity, ('ann.json',))):
        with pytest.raises(ValueError, match=r'is an mmdet config, and .* holds an export of an '
                                             r'mmseg segmenter'):
            parity(DET_CONFIG, 'unused.pth', tmp_path, ['a.jpg'], *args)


@pytest.mark.parametrize('text, said', [('{"version": 1}', r"lacks \['task', 'scope'"),
                                         ('{"task": ', 'is not valid JSON')])
def test_a_deploy_json_of_something_else_is_named(tmp_path, text, said):
    (tmp_path / 'deploy.json').write_text(text)
    with pytest.raises(ValueError, match=said):
        OnnxModel(tmp_path)


@pytest.mark.parametrize('threads', [0, '2', 1.5, True, 10 ** 10])
def test_onnx_threads_must_be_a_sensible_int(tmp_path, threads):
    _deploy_json_alone(tmp_path)  # threads are checked before the graph is read
    with pytest.raises(ValueError, match=rf'threads {threads!r} must be an int from 1 to'):
        OnnxModel(tmp_path, threads=threads)


def test_an_export_replaces_only_an_earlier_export(upernet, tmp_path):
    config, checkpoint, _ = upernet
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'notes.txt').write_text('mine')
    (mine / 'model.onnx').write_bytes(b'my own graph')
    with pytest.raises(FileExistsError, match=r'mine already holds notes\.txt: writing there '
                                              r'would delete it'):
        export_model(config, checkpoint, mine)
    assert (mine / 'model.onnx').read_bytes() == b'my own graph'
    export = tmp_path / 'onnx'
    export_model(config, checkpoint, export)
    export_model(config, checkpoint, export, dynamic=True)  # over the static one, whole
    assert sorted(p.name for p in export.iterdir()) == ['deploy.json', 'model.onnx']
    assert OnnxModel(export).meta['input']['shape'] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ['mine', 'onnx']  # nothing left over
    with pytest.raises(ValueError, match=r'slide windows of \(128, 128\), so a static export '
                                         r'must take that size'):
        export_model(config, checkpoint, tmp_path / 'small', shape=(64, 64))


def test_detector_export_needs_a_shape(tmp_path):
    with pytest.raises(ValueError, match=r'--shape H W\); add --dynamic'):
        export_model(DET_CONFIG, None, tmp_path)
    with pytest.raises(ValueError, match=r'--shape H W\)$'):  # --dynamic given: not suggested
        export_model(DET_CONFIG, None, tmp_path, dynamic=True)
    with pytest.raises(ValueError, match=r'shape \(16, 16\) must be two sizes'):
        export_model(DET_CONFIG, None, tmp_path, shape=(16, 16))


def test_unexportable_module_is_named(tmp_path):
    from mmcv.ops import DeformConv2dPack
    model, _, _ = build_model(DET_CONFIG, None)
    model.neck.fpn_convs[0].conv = DeformConv2dPack(64, 64, 3, padding=1)
    from convnext_dense.deploy.export import _check_modules
    with pytest.raises(ExportError, match=r"'neck.fpn_convs.0.conv' \(DeformConv2dPack\)"):
        _check_modules(model)


def test_trace_failure_names_the_module(tmp_path, monkeypatch):
    model, cfg, scope = build_model(SEG_CONFIG, None)

    def broken(*args, **kwargs):
        raise RuntimeError('unsupported operator aten::foo')
    monkeypatch.setattr(model.decode_head.bottleneck, 'forward', broken)
    from convnext_dense.deploy import export as export_module
    monkeypatch.setattr(export_module, 'build_model', lambda *args: (model, cfg, scope))
    with pytest.raises(ExportError, match=r"in module 'segmenter.decode_head.bottleneck' "
                                          r"\(ConvModule\): RuntimeError: unsupported"):
        export_model(SEG_CONFIG, None, tmp_path)


def test_soft_nms_is_refused_by_name():
    model, _, _ = build_model(DET_CONFIG, None)
    model.roi_head.test_cfg.nms = dict(type='soft_nms', iou_threshold=0.5)
    with pytest.raises(ExportError, match='rcnn test_cfg: nms .*soft_nms'):
        TwoStageGraph(model)


def test_fused_paths_are_off_in_the_export(upernet, tmp_path):
    config, checkpoint, _ = upernet
    assert fast_paths_enabled()
    export_model(config, checkpoint, tmp_path, part='backbone', shape=(64, 64))
    assert fast_paths_enabled()  # restored after the export
    ops = {node.op_type for node in onnx.load(str(tmp_path / 'model.onnx')).graph.node}
    assert 'LayerNormalization' in ops and not any('mkldnn' in op.lower() for op in ops)
