"""Every fast path of the backbone computes what the plain path computes.

fp32: outputs and gradients to 1e-5 (relative to the largest value). bf16: close to float32. The
plain path is the block as the paper draws it (``fast_paths(False)``); Hugging Face's
ConvNextBackbone on the same weights is the outside reference.
"""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import convnext_dense.cpu_fast_paths.cpu_support as cpu_support
import convnext_dense.cpu_fast_paths.fast_grads as fast_grads
import convnext_dense.cpu_fast_paths.fused_ops as fused_ops
import convnext_dense.model.layers as layers
from convnext_dense import ConvNeXt
from convnext_dense.extras.benchmark.peers import build_huggingface, load_into_ours
from convnext_dense.cpu_fast_paths.fast_grads import (DepthwiseConv2d, channels_first,
                                                      depthwise_weight_grad, transposes_per_image)
from convnext_dense.cpu_fast_paths import fast_paths, fast_paths_enabled
from tiny import trained_like

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                reason='the fused CPU path needs a torch build with oneDNN')


def _assert_rel(actual, expected, tol=1e-5, what=''):
    """``max |actual - expected| <= tol * max |expected|``."""
    scale = expected.abs().max().clamp_min(1e-12)
    err = ((actual.float() - expected.float()).abs().max() / scale).item()
    assert err <= tol, f'{what}: relative error {err:.2e} > {tol:.0e}'


def _outputs(model, x, fast, grad_mode=False):
    with fast_paths(fast):
        if grad_mode:
            return model(x)
        with torch.inference_mode():
            return model(x)


@pytest.mark.parametrize('kwargs, size, batch', [
    (dict(), (64, 64), 1),
    (dict(out_indices=(1, 3)), (67, 93), 2),
    (dict(layer_scale=False), (64, 96), 2),
])
def test_fused_inference_matches_plain(tiny_arch, kwargs, size, batch):
    model = trained_like(tiny_arch, **kwargs).eval()
    x = torch.randn(batch, 3, *size)
    for fast, plain in zip(_outputs(model, x, True), _outputs(model, x, False)):
        assert fast.is_contiguous()
        _assert_rel(fast, plain, what='fused inference')


@pytest.mark.parametrize('mode', ['fp32', 'bf16-cast', 'bf16-autocast'])
def test_fused_inference_in_row_chunks_matches_plain(tiny_arch, mode, monkeypatch, request, spy):
    if mode != 'fp32':
        request.getfixturevalue('onednn_bf16_kernels')  # the bf16 kernels themselves
    # GELU in the first matmul's epilogue, which bf16 always takes (AVX2 CPUs would run float32
    # with GELU apart: test_cpu_support.py chunks every route)
    monkeypatch.setattr(cpu_support, 'mlp_route', lambda channels: 'onednn')
    model = trained_like(tiny_arch).eval()
    x = torch.randn(2, 3, 67, 93)  # stage 0: 2 * 16 * 23 = 736 rows
    reference = _outputs(model, x, False)
    if mode == 'bf16-cast':
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    autocast = torch.autocast('cpu', dtype=torch.bfloat16, enabled=mode == 'bf16-autocast')
    with autocast:
        unchunked, plain = _outputs(model, x, True), _outputs(model, x, False)
    calls = spy(fused_ops, 'linear_gelu')
    monkeypatch.setattr(fused_ops, '_MIN_CHUNK_ROWS', 1)
    # 100 rows of stage 0's GELU activations (4 * 16 channels) per chunk, the last one 36.
    itemsize = 4 if mode == 'fp32' else 2
    monkeypatch.setattr(fused_ops, 'HIDDEN_CHUNK_BYTES', 100 * 64 * itemsize)
    with autocast:
        chunked = _outputs(model, x, True)
    assert [hidden.shape[0] for hidden, *_ in calls[:8]] == [100] * 7 + [36]
    for c, u, p, r in zip(chunked, unchunked, plain, reference):
        assert c.dtype == p.dtype and c.is_contiguous()
        _assert_rel(c, u, tol=1e-5 if mode == 'fp32' else 1e-2, what=f'{mode} chunked vs whole')
        _assert_rel(c, p, tol=1e-5 if mode == 'fp32' else 5e-2, what=f'{mode} chunked vs plain')
        _assert_rel(c, r, tol=1e-5 if mode == 'fp32' else 5e-2, what=f'{mode} chunked vs fp32')


def test_fused_path_runs_in_eval_and_for_frozen_blocks_only(tiny_arch, spy):
    calls = spy(layers, 'fused_mlp')
    model = trained_like(tiny_arch, frozen_stages=2).eval()
    x = torch.randn(1, 3, 64, 64)
    model(x)  # grad mode on: only the frozen stages' blocks need no gradient
    with torch.no_grad():
        model(x)
    assert len(calls) == 2 + 5  # frozen stages 0, 1 (one block each); then all five blocks
    calls.clear()
    model.train()
    sum(f.sum() for f in model(x)).backward()
    assert len(calls) == 2  # only the frozen blocks
    assert model.stages[2][0].pwconv1.weight.grad is not None


@pytest.mark.parametrize('drop_path_rate, frozen_stages, size', [
    (0.0, 0, (64, 64)), (0.3, 0, (64, 64)), (0.0, 1, (64, 64)),
    (0.0, 0, (72, 108)),  # maps of odd width: the downsampling drops a column
])
def test_training_path_matches_plain_outputs_and_gradients(tiny_arch, drop_path_rate,
                                                           frozen_stages, size):
    model = trained_like(tiny_arch, drop_path_rate=drop_path_rate, frozen_stages=frozen_stages)
    model.train()
    x = torch.randn(2, 3, *size)
    results = []
    for fast in (True, False):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # same drop-path masks on both paths
        outs = _outputs(model, x, fast, grad_mode=True)
        sum((o * o).mean() for o in outs).backward()
        results.append(([o.detach() for o in outs],
                        {n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None}))
    (fast_outs, fast_grads_), (plain_outs, plain_grads) = results
    for fast, plain in zip(fast_outs, plain_outs):
        _assert_rel(fast, plain, what='training output')
    assert fast_grads_.keys() == plain_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        _assert_rel(fast_grads_[name], grad, what=f'gradient of {name}')


class _CountMatmuls(TorchDispatchMode):
    """Counts matmuls that use one of the given weights."""

    def __init__(self, weights):
        super().__init__()
        self.pointers = {w.data_ptr() for w in weights}
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.addmm.default, torch.ops.aten.mm.default) and any(
                isinstance(a, torch.Tensor) and a.data_ptr() in self.pointers for a in args):
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_with_cp_matches_and_does_not_recompute_pwconv2(tiny_arch):
    plain = trained_like(tiny_arch)
    checkpointed = ConvNeXt(arch=tiny_arch, layer_scale_init_value=1.0, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        outs = model(x)
        sum((o * o).mean() for o in outs).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        _assert_rel(grads[1][name], grad, what=f'with_cp gradient of {name}')

    blocks = [block for stage in checkpointed.stages for block in stage]
    counts = {}
    for fast in (True, False):
        counter = _CountMatmuls([block.pwconv2.weight for block in blocks])
        with fast_paths(fast), counter:
            sum(o.mean() for o in checkpointed(x)).backward()
        counts[fast] = counter.count
    # Matmuls with pwconv2's weight: the forward and the input gradient, 2 per block; plain
    # checkpointing adds the recomputed forward, the fast path keeps that output instead.
    assert counts == {True: 2 * len(blocks), False: 3 * len(blocks)}


@pytest.mark.parametrize('mode', ['cast', 'autocast'])
def test_bf16_inference_close_to_fp32(tiny_arch, mode):
    model = trained_like(tiny_arch).eval()
    x = torch.randn(2, 3, 64, 64)
    reference = _outputs(model, x, False)
    if mode == 'cast':
        model_bf16 = ConvNeXt(arch=tiny_arch, layer_scale_init_value=1.0).eval()
        model_bf16.load_state_dict(model.state_dict())
        model_bf16 = model_bf16.to(torch.bfloat16)
        fast = _outputs(model_bf16, x.to(torch.bfloat16), True)
        plain = _outputs(model_bf16, x.to(torch.bfloat16), False)
    else:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            fast = _outputs(model, x, True)
            plain = _outputs(model, x, False)
    for f, p, r in zip(fast, plain, reference):
        assert f.dtype == p.dtype
        _assert_rel(f, r, tol=5e-2, what=f'bf16 {mode} vs fp32')
        _assert_rel(f, p, tol=5e-2, what=f'bf16 {mode} fast vs plain')


def test_bf16_autocast_training_close_to_plain(tiny_arch):
    model = trained_like(tiny_arch).train()
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for fast in (True, False):
        model.zero_grad(set_to_none=True)
        with fast_paths(fast), torch.autocast('cpu', dtype=torch.bfloat16):
            outs = model(x)
        sum((o.float() ** 2).mean() for o in outs).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[1].items():
        assert grads[0][name].dtype == torch.float32
        _assert_rel(grads[0][name], grad, tol=5e-2, what=f'bf16 autocast gradient of {name}')


@pytest.mark.parametrize('route', ['onednn', 'blas'])
def test_cached_inference_weights_follow_new_data_at_the_old_address(tiny_arch, route,
                                                                     monkeypatch):
    """``param.data = new`` keeps the version counter; a new storage at the address the old one
    freed (as ``model.to(bf16).to(float32)`` sometimes gets) must not bring back the old weights.
    Two tensors over one Python buffer make that address reuse certain."""
    monkeypatch.setattr(fused_ops, '_MIN_CHUNK_ROWS', 1)
    monkeypatch.setattr(fused_ops, 'HIDDEN_CHUNK_BYTES', 2 * 32 * 64 * 4)
    monkeypatch.setattr(cpu_support, '_forced_mlp_route', route)
    model = trained_like(tiny_arch).eval()
    x = torch.randn(1, 3, 64, 64)
    weight = model.stages[1][0].pwconv2.weight
    memory = bytearray(weight.numel() * weight.element_size())

    def over_memory(values):
        tensor = torch.frombuffer(memory, dtype=weight.dtype).view_as(weight)
        return tensor.copy_(values)

    weight.data = over_memory(weight.detach().clone())
    address, version = weight.data_ptr(), weight._version
    _outputs(model, x, True)  # fills the caches
    weight.data = over_memory(weight.detach() * 3.0)
    assert (weight.data_ptr(), weight._version) == (address, version)
    for fast, plain in zip(_outputs(model, x, True), _outputs(model, x, False)):
        _assert_rel(fast, plain, what='new data at the old address')


@pytest.mark.parametrize('route', ['onednn', 'blas'])
def test_cached_inference_weights_follow_parameter_changes(tiny_arch, route, monkeypatch):
    monkeypatch.setattr(fused_ops, '_MIN_CHUNK_ROWS', 1)  # BLAS: full chunks of 32 rows at stage
    monkeypatch.setattr(fused_ops, 'HIDDEN_CHUNK_BYTES', 2 * 32 * 64 * 4)  # 0, on MKL packs
    monkeypatch.setattr(cpu_support, '_forced_mlp_route', route)
    model = trained_like(tiny_arch).eval()
    x = torch.randn(1, 3, 64, 64)
    _outputs(model, x, True)  # fills the caches

    def check(what):
        for fast, plain in zip(_outputs(model, x, True), _outputs(model, x, False)):
            _assert_rel(fast, plain, what=what)

    with torch.no_grad():
        for block in model.stages[1]:
            block.gamma.mul_(3.0)
            block.pwconv2.weight.add_(0.1)
    check('after in-place changes')
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    sum(o.sum() for o in model(x)).backward()
    optimizer.step()
    model.eval()
    check('after an optimizer step')
    model.load_state_dict(trained_like(tiny_arch).state_dict())
    check('after load_state_dict')
    model.load_state_dict(trained_like(tiny_arch).state_dict(), assign=True)
    check('after load_state_dict(assign=True)')
    model.to(torch.bfloat16).to(torch.float32)
    check('after a round trip through bfloat16')
    copied = copy.deepcopy(model)  # the packed oneDNN weights are not copied, but rebuilt
    restored = pickle.loads(pickle.dumps(model))
    for other in (copied, restored):
        for got, want in zip(_outputs(other, x, True), _outputs(model, x, False)):
            _assert_rel(got, want, what='copied model')


@pytest.mark.parametrize('route', ['onednn', 'blas'])
def test_cached_inference_weights_follow_writes_that_keep_the_version(tiny_arch, route,
                                                                      monkeypatch):
    """Writes through ``param.data`` (mmdet's mean teacher, mmengine's EMA) and fused optimizer
    steps leave the version counter as it was; the cached weights must follow them anyway."""
    monkeypatch.setattr(cpu_support, '_forced_mlp_route', route)
    teacher = trained_like(tiny_arch).train().requires_grad_(False)  # a frozen mean teacher
    student = trained_like(tiny_arch)
    x = torch.randn(1, 3, 64, 64)

    def check(model, what):
        for fast, plain in zip(_outputs(model, x, True), _outputs(model, x, False)):
            _assert_rel(fast, plain, what=what)

    weight = teacher.stages[1][0].pwconv2.weight
    for step in range(2):
        _outputs(teacher, x, True)  # fills the caches (training mode, nothing needs a gradient)
        version = weight._version
        for mean, new in zip(teacher.parameters(), student.parameters()):
            mean.data.mul_(0.5).add_(new.data, alpha=0.5)
        assert weight._version == version
        check(teacher, f'after mean-teacher update {step}')
    model = trained_like(tiny_arch).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    for step in range(2):
        _outputs(model, x, True)
        sum(o.sum() for o in model(x)).backward()  # still in eval mode: no cache is cleared
        optimizer.step()
        check(model, f'after fused AdamW step {step}')


LAYERS = ('dwconv', 'norm', 'pwconv1', 'act', 'pwconv2')


@pytest.mark.parametrize('mode', ['inference', 'training'])
def test_hooks_on_the_block_layers_run_and_count(tiny_arch, mode):
    model = trained_like(tiny_arch).train(mode == 'training')
    block = model.stages[2][1]
    x = torch.randn(1, 3, 64, 64)
    called = []
    for name in LAYERS:
        getattr(block, name).register_forward_hook(
            lambda module, args, out, name=name: called.append(name))
    # A hook that changes a layer's output must change the block's output alike.
    block.pwconv2.register_forward_hook(lambda module, args, out: out * 2)
    results = []
    for fast in (True, False):
        called.clear()
        outs = _outputs(model, x, fast, grad_mode=mode == 'training')
        assert called == list(LAYERS), (fast, called)
        results.append(outs)
    for fast, plain in zip(*results):
        _assert_rel(fast.detach(), plain.detach(), what=f'{mode} with an output-editing hook')


def test_a_hook_on_every_module_sees_the_block_layers(tiny_arch):
    model = trained_like(tiny_arch).eval()
    block = model.stages[1][0]
    called = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: called.append(module))
    try:
        _outputs(model, torch.randn(1, 3, 64, 64), True)
    finally:
        handle.remove()
    assert all(any(m is getattr(block, name) for m in called) for name in LAYERS)


def test_matches_huggingface_backbone(tiny_arch):
    peer = build_huggingface(tiny_arch).eval()
    ours = ConvNeXt(arch=tiny_arch).eval()
    load_into_ours(ours, peer)
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        expected = peer(x)
        for fast in (True, False):
            for got, want in zip(_outputs(ours, x, fast), expected):
                _assert_rel(got, want, what=f'fast={fast} vs Hugging Face')


@pytest.fixture
def batched_calls(spy):
    """The arguments of every call of the batched weight gradient (which still runs)."""
    return spy(fast_grads, '_batched_weight_grad')


@pytest.mark.parametrize('batch, size, batched', [
    (1, (8, 8), False), (2, (7, 5), False), (3, (7, 5), True), (2, (2, 9), True)])
def test_depthwise_conv_function_gradcheck(batch, size, batched, batched_calls, monkeypatch):
    monkeypatch.setattr(fast_grads, '_TILE_FLOATS', 1)  # several row tiles, a short last one
    monkeypatch.setattr(fast_grads, '_MIN_TILE_ROWS', 3)
    # Tiles: no map counts as small; batched: every one does.
    monkeypatch.setattr(fast_grads, '_BATCHED_MAX_IMAGE_FLOATS', 1 << 30 if batched else 0)
    x = torch.randn(batch, 3, *size, dtype=torch.double).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(3, 1, 7, 7, dtype=torch.double, requires_grad=True)
    bias = torch.randn(3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(DepthwiseConv2d.apply, (x, weight, bias, 3), fast_mode=True)
    assert bool(batched_calls) == batched


@pytest.mark.parametrize('shape', [(16, 64, 16, 16), (2, 32, 40, 56)])
def test_depthwise_weight_grad_picks_batched_conv_for_small_maps(shape, batched_calls):
    x, grad = (torch.randn(shape).contiguous(memory_format=torch.channels_last) for _ in 'xg')
    want = torch.ops.aten.convolution_backward(
        grad, x, torch.empty(shape[1], 1, 7, 7), None, (1, 1), (3, 3), (1, 1), False, (0, 0),
        shape[1], (False, True, False))[1]
    _assert_rel(depthwise_weight_grad(x, grad, 3), want, what=f'weight gradient {shape}')
    small = shape[1] * shape[2] * shape[3] <= fast_grads._BATCHED_MAX_IMAGE_FLOATS
    assert bool(batched_calls) == small == (shape[0] == 16)


def test_depthwise_conv_function_matches_conv2d_in_fp32():
    conv = torch.nn.Conv2d(32, 32, 7, padding=3, groups=32)
    x = torch.randn(2, 32, 40, 56).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 32, 40, 56)
    results = []
    for function in (lambda t: DepthwiseConv2d.apply(t, conv.weight, conv.bias, 3), conv):
        conv.zero_grad()
        leaf = x.clone().requires_grad_()
        out = function(leaf)
        out.backward(grad)
        results.append((out.detach(), leaf.grad, conv.weight.grad.clone(), conv.bias.grad.clone()))
    for got, want, what in zip(results[0], results[1], ('output', 'input', 'weight', 'bias')):
        _assert_rel(got, want, what=f'depthwise {what}')
    weight_grad = depthwise_weight_grad(x, grad.contiguous(memory_format=torch.channels_last), 3)
    _assert_rel(weight_grad, results[1][2], what='weight gradient, channels-last gradient')


@pytest.mark.parametrize('batched', [False, True])
def test_depthwise_weight_gradient_has_the_weights_strides(batched, monkeypatch):
    """DDP's reducer compares every stride of a gradient with its bucket's (laid out like the
    weight): a size-1 dim's stride counts there, though autograd ignores it."""
    monkeypatch.setattr(fast_grads, '_BATCHED_MAX_IMAGE_FLOATS', 1 << 30 if batched else 0)
    for layout in (torch.channels_last, torch.contiguous_format):
        # What the backbone's weights get from .to(memory_format=...): strides (49, 1, 7, 1).
        weight = torch.randn(8, 1, 7, 7).to(memory_format=layout).requires_grad_()
        x = torch.randn(2, 8, 9, 9).contiguous(memory_format=torch.channels_last)
        DepthwiseConv2d.apply(x, weight, None, 3).sum().backward()
        assert weight.grad.stride() == weight.stride(), layout


def test_channels_first_values_and_gradient():
    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = channels_first(x)
    assert out.is_contiguous() and torch.equal(out, x.detach().contiguous())
    grad = torch.randn(2, 8, 5, 7)
    out.backward(grad)
    assert torch.equal(x.grad, grad)
    plain = torch.randn(2, 8, 5, 7)
    assert channels_first(plain) is plain


@pytest.mark.parametrize('shape, per_image', [((4, 16, 64, 64), False), ((2, 32, 64, 64), True)])
def test_channels_first_copies_per_image_only_large_maps(shape, per_image):
    # 64k floats per image is the limit: torch's own copy is faster on smaller maps.
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert transposes_per_image(x) is per_image
    out = channels_first(x)
    assert out.is_contiguous() and torch.equal(out, x.detach().contiguous())
    assert (type(out.grad_fn).__name__ == 'ChannelsFirstBackward') is per_image
    grad = torch.randn(shape)
    out.backward(grad)
    assert torch.equal(x.grad, grad)


def test_fast_paths_switch():
    assert fast_paths_enabled()
    with fast_paths(False):
        assert not fast_paths_enabled()
        with fast_paths(True):
            assert fast_paths_enabled()
        assert not fast_paths_enabled()
    assert fast_paths_enabled()
    with pytest.raises(TypeError, match='True or False'):
        with fast_paths('no'):
            pass


def test_plain_path_is_the_textbook_block():
    block = layers.ConvNeXtBlock(16, layer_scale_init_value=0.5).eval()
    x = torch.randn(1, 16, 9, 9)
    y = block.dwconv(x).permute(0, 2, 3, 1)
    y = block.pwconv2(F.gelu(block.pwconv1(F.layer_norm(y, (16,), block.norm.weight,
                                                         block.norm.bias, 1e-6))))
    expected = x + (y * block.gamma).permute(0, 3, 1, 2)
    with fast_paths(False):
        torch.testing.assert_close(block(x), expected, rtol=0, atol=0)


@pytest.mark.slow
def test_torch_compile_traces_the_plain_ops_without_graph_breaks(tiny_arch):
    import torch._dynamo
    model = trained_like(tiny_arch, drop_path_rate=0.1).eval()
    x = torch.randn(2, 3, 64, 64)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0
    compiled = torch.compile(model)
    with torch.no_grad():
        for got, want in zip(compiled(x), _outputs(model, x, False)):
            _assert_rel(got, want, what='compiled')


def test_weight_gradient_tiles_follow_the_l2_cache(monkeypatch):
    size = fast_grads.l2_cache_bytes()
    assert size > 0 and fast_grads._TILE_FLOATS == max(16 * 1024, size // 16)

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(fast_grads.os, 'sysconf', no_sysconf)
    sysfs = '/sys/devices/system/cpu/cpu0/cache'
    expected = fast_grads._DEFAULT_L2_BYTES
    for index in range(8):
        try:
            with open(f'{sysfs}/index{index}/level') as level:
                if level.read().strip() == '2':
                    with open(f'{sysfs}/index{index}/size') as text:
                        text = text.read().strip()
                    expected = int(text[:-1]) * {'K': 1024, 'M': 1 << 20}[text[-1]]
                    break
        except OSError:
            break
    assert fast_grads.l2_cache_bytes() == expected  # read from /sys, or the 1 MiB default
