"""The training step's matmul route: oneDNN where torch's BLAS runs its generic code (x86 CPUs
not made by Intel), torch's own elsewhere; both give the plain path's outputs and gradients."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import convnext_dense.cpu_fast_paths.cpu_support as cpu_support
import convnext_dense.cpu_fast_paths.train_matmuls as train_matmuls
from convnext_dense import ConvNeXt
from convnext_dense.cpu_fast_paths import fast_paths, patch_matmul, train_matmul
from convnext_dense.cpu_fast_paths.train_matmuls import OnednnLinear, onednn_training_applies
from convnext_dense.extras.benchmark.cases import Case, make_images, make_step, prepare
from convnext_dense.extras.benchmark.report import format_summary
from convnext_dense.extras.benchmark.runner import BenchmarkConfig, plan_groups, summarize
from convnext_dense.model.layers import ConvNeXtBlock
from tiny import TINY_ARCH, trained_like

pytestmark = pytest.mark.skipif(not train_matmuls.ONEDNN_LINEAR,
                                reason='the oneDNN route needs a torch build with oneDNN')
ONEDNN_OP = torch.ops.mkldnn._linear_pointwise.default
BLAS_OPS = (torch.ops.aten.addmm.default, torch.ops.aten.mm.default)


def _rel(actual, expected):
    scale = expected.abs().max().clamp_min(1e-12)
    return ((actual - expected).abs().max() / scale).item()


class _CountOps(TorchDispatchMode):
    """Counts calls per matmul operator, optionally only those that take one of ``weights``."""

    def __init__(self, weights=None):
        super().__init__()
        self.pointers = None if weights is None else {w.data_ptr() for w in weights}
        self.counts = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (ONEDNN_OP,) + BLAS_OPS and (self.pointers is None or any(
                isinstance(a, torch.Tensor) and a.data_ptr() in self.pointers for a in args)):
            self.counts[func] = self.counts.get(func, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def every_size(monkeypatch):
    """The tiny test models' matmuls take the oneDNN route too (they are below its threshold)."""
    monkeypatch.setattr(train_matmuls, 'MIN_MULTIPLY_ADDS', 0)


@pytest.mark.parametrize('machine, vendor, route', [
    ('x86_64', 'AuthenticAMD', 'onednn'),  # MKL's generic branch
    ('x86_64', 'HygonGenuine', 'onednn'),
    ('x86_64', 'unknown', 'onednn'),
    ('x86_64', 'GenuineIntel', 'blas'),  # MKL's own branch, where the ratios were measured
    ('aarch64', 'unknown', 'blas'),
])
def test_route_follows_the_cpu_vendor(monkeypatch, machine, vendor, route):
    monkeypatch.setattr(cpu_support.platform, 'machine', lambda: machine)
    monkeypatch.setattr(cpu_support, 'cpu_vendor', lambda: vendor)
    assert cpu_support.train_matmul_route() == route
    assert cpu_support.describe()['train_matmul_route'] == route


def test_forced_and_environment_routes_override_the_choice(monkeypatch, route_env):
    monkeypatch.setattr(cpu_support, 'cpu_vendor', lambda: 'GenuineIntel')
    monkeypatch.setattr(cpu_support.platform, 'machine', lambda: 'x86_64')
    inference_route = cpu_support.mlp_route(1024)
    route_env(cpu_support.TRAIN_MATMUL_ROUTE_ENV, 'onednn')
    assert cpu_support.train_matmul_route() == 'onednn'
    with cpu_support.force_train_matmul_route('blas'):  # the benchmark's forced route wins
        assert cpu_support.train_matmul_route() == 'blas'
        with cpu_support.force_train_matmul_route(None):
            assert cpu_support.train_matmul_route() == 'onednn'
    route_env(cpu_support.TRAIN_MATMUL_ROUTE_ENV, '')
    assert cpu_support.train_matmul_route() == 'blas'  # unset or empty: this CPU's default
    route_env(cpu_support.TRAIN_MATMUL_ROUTE_ENV, 'mkl')
    with pytest.raises(ValueError, match=r"CONVNEXT_DENSE_TRAIN_MATMUL_ROUTE='mkl' is not one "
                                         r"of \('onednn', 'blas'\)"):
        cpu_support.train_matmul_route()
    with pytest.raises(ValueError, match=r"training matmul route 'mkl' is not one of"):
        with cpu_support.force_train_matmul_route('mkl'):
            pass
    assert cpu_support.mlp_route(1024) == inference_route  # that is another setting


@pytest.mark.parametrize('in_features, out_features, bias', [
    (64, 256, True),  # narrow input: the weight gradient stays torch's matmul
    (256, 64, False),  # the weight gradient through oneDNN too
])
def test_onednn_linear_matches_f_linear(in_features, out_features, bias):
    torch.manual_seed(0)
    x = torch.randn(300, in_features, requires_grad=True)
    weight = torch.randn(out_features, in_features, requires_grad=True)
    b = torch.randn(out_features, requires_grad=True) if bias else None
    grad = torch.randn(out_features, 300).t()  # not contiguous, as gradients may come
    inputs = [t for t in (x, weight, b) if t is not None]
    expected_out = F.linear(x, weight, b)
    expected = torch.autograd.grad(expected_out, inputs, grad)
    with _CountOps() as ops:
        out = OnednnLinear.apply(x, weight, b)
        got = torch.autograd.grad(out, inputs, grad)
    assert _rel(out, expected_out) < 1e-5
    for name, g, e in zip(('x', 'weight', 'bias'), got, expected):
        assert _rel(g, e) < 1e-5, name
    onednn_weight_grad = in_features >= train_matmuls.GRAD_WEIGHT_MIN_IN_FEATURES
    assert ops.counts.get(ONEDNN_OP) == (3 if onednn_weight_grad else 2)
    assert ops.counts.get(torch.ops.aten.mm.default, 0) == (0 if onednn_weight_grad else 1)


def test_onednn_route_only_for_float32_steps_large_enough(monkeypatch):
    monkeypatch.setattr(cpu_support, '_forced_train_matmul_route', 'onednn')
    weight = torch.randn(1024, 256, requires_grad=True)
    large = torch.randn(4, 8, 8, 256)  # 256 rows x 256 x 1024: 67 M multiply-adds
    assert onednn_training_applies(large, weight)
    assert not onednn_training_applies(large[:, :1, :1], weight)  # 1 M: oneDNN's call costs more
    assert not onednn_training_applies(large.bfloat16(), weight.bfloat16())
    with torch.no_grad():
        assert not onednn_training_applies(large, weight)
    assert not onednn_training_applies(large, weight.detach())  # nothing needs a gradient
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not onednn_training_applies(large, weight)  # autocast's bf16 matmuls are oneDNN's
    with fast_paths(False):
        assert not onednn_training_applies(large, weight)
    monkeypatch.setattr(cpu_support, '_forced_train_matmul_route', 'blas')
    assert not onednn_training_applies(large, weight)
    out = train_matmul(large, weight)
    assert out.shape == (4, 8, 8, 1024) and _rel(out, F.linear(large, weight)) == 0


@pytest.mark.parametrize('route', cpu_support.TRAIN_MATMUL_ROUTES)
@pytest.mark.parametrize('with_cp, drop_path_rate', [(False, 0.0), (False, 0.3), (True, 0.0)])
def test_training_step_matches_plain_on_each_route(every_size, route, with_cp, drop_path_rate):
    model = trained_like(TINY_ARCH, drop_path_rate=drop_path_rate, with_cp=with_cp).train()
    x = torch.randn(2, 3, 64, 72)
    results = []
    for fast in (True, False):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # same drop-path masks on both paths
        with fast_paths(fast), cpu_support.force_train_matmul_route(route), _CountOps() as ops:
            outs = model(x)
            sum((o * o).mean() for o in outs).backward()
        results.append(([o.detach() for o in outs],
                        {n: p.grad.clone() for n, p in model.named_parameters()}, ops.counts))
    (fast_outs, fast_grads, fast_ops), (plain_outs, plain_grads, _) = results
    for fast, plain in zip(fast_outs, plain_outs):
        assert _rel(fast, plain) < 1e-5
    for name, grad in plain_grads.items():
        assert _rel(fast_grads[name], grad) < 1e-5, name
    assert (fast_ops.get(ONEDNN_OP, 0) > 0) is (route == 'onednn')


def test_with_cp_keeps_pwconv2_output_on_the_onednn_route(every_size):
    model = ConvNeXt(arch=TINY_ARCH, with_cp=True).train()
    blocks = [block for stage in model.stages for block in stage]
    counts = {}
    for route in cpu_support.TRAIN_MATMUL_ROUTES:
        with cpu_support.force_train_matmul_route(route):
            loss = sum(o.mean() for o in model(torch.randn(2, 3, 64, 64)))
            with _CountOps([block.pwconv2.weight for block in blocks]) as ops:
                loss.backward()
        counts[route] = sum(ops.counts.values())
    # the input gradient only: pwconv2's recomputed forward is kept, on either route
    assert counts == {'onednn': len(blocks), 'blas': len(blocks)}


def test_downsampling_matmul_takes_the_route(every_size):
    conv = torch.nn.Conv2d(32, 64, kernel_size=2, stride=2)
    x = torch.randn(2, 32, 9, 12).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    expected = conv(x)
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, conv.weight, conv.bias))
    with cpu_support.force_train_matmul_route('onednn'), _CountOps() as ops:
        out = patch_matmul(x, conv.weight, conv.bias)
        grads = torch.autograd.grad(out.square().sum(), (x, conv.weight, conv.bias))
    assert ops.counts.get(ONEDNN_OP, 0) >= 2 and _rel(out, expected) < 1e-5
    for got, want in zip(grads, expected_grads):
        assert _rel(got, want) < 1e-5


def test_a_real_size_block_takes_the_route_without_help():
    block = ConvNeXtBlock(256).train()
    x = torch.randn(1, 256, 16, 16, requires_grad=True)  # 256 rows: 67 M multiply-adds a layer
    with cpu_support.force_train_matmul_route('onednn'), _CountOps() as ops:
        block(x).sum().backward()
    assert ops.counts.get(ONEDNN_OP) == 6 and not ops.counts.get(torch.ops.aten.addmm.default)


def test_benchmark_times_each_training_route_and_names_a_faster_one():
    config = BenchmarkConfig(variants=('train_routes',), precisions=('fp32', 'bf16'))
    groups = plan_groups(config, ['ours', 'huggingface'])
    assert [(g.task, g.family) for g in groups] == [('train', 'fp32')]
    assert [c.label() for c in groups[0].cases] == [
        'ours+onednn_matmuls', 'ours+blas_matmuls', 'huggingface']
    for bad in (dict(train_route='mkl'), dict(train_route='onednn_separate_gelu'),
                dict(train_route='blas', impl='huggingface'),
                dict(train_route='blas', task='infer')):
        with pytest.raises(ValueError, match='train_route'):
            Case(**{**dict(impl='ours', task='train', precision='fp32', size=(64, 64)), **bad})
    case = Case('ours', 'train', 'fp32', (64, 64), train_route='onednn')
    step = make_step(prepare(ConvNeXt(TINY_ARCH), case), case, make_images(case))
    with _CountOps() as ops:
        step()  # the tiny model is below the threshold: torch's matmuls, under the forced route
    assert ops.counts.get(torch.ops.aten.mm.default)

    def row(route, seconds):
        case = dict(impl='ours', precision='fp32', train_route=route)
        return dict(group='train fp32 train_routes 512x512', case=case, median_s=seconds)
    results = dict(machine=dict(train_matmul_route='blas'),
                   rows=[row('onednn', 1.0), row('blas', 1.5)])
    entry, = summarize(results)
    assert entry['route_hint'] == 'CONVNEXT_DENSE_TRAIN_MATMUL_ROUTE=onednn'
    assert 'training matmul routes: onednn 1.000 s, blas 1.500 s' in format_summary([entry], [])
