"""bfloat16 works on every CPU: natively where oneDNN has bf16, in float32 where it is emulated.

The decision (:func:`convnext_dense.cpu_fast_paths.cpu_support.native_bf16`) is forced both ways
here, so the float32 fallback is exercised on a CPU with bf16 too; ``test_real_avx2_cpu`` runs the
real call on emulated AVX2-only CPUs (an AMD EPYC and an Intel Haswell, under qemu's user-mode
emulation), with float32 through the BLAS route on MKL-packed weights, and
``test_real_aarch64_cpu`` inference and a training step on emulated aarch64 CPUs with and without
the bf16 extension.
"""
import logging
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch

import convnext_dense.cpu_fast_paths.cpu_support as cpu_support
import convnext_dense.cpu_fast_paths.fused_ops as fused_ops
from convnext_dense.cpu_fast_paths import InferenceWeights, fast_paths
from convnext_dense.model.layers import ConvNeXtBlock
from tiny import trained_like

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _assert_rel(actual, expected, tol, what=''):
    scale = expected.float().abs().max().clamp_min(1e-12)
    err = ((actual.float() - expected.float()).abs().max() / scale).item()
    assert err <= tol, f'{what}: relative error {err:.2e} > {tol:.0e}'


def _model(tiny_arch, **kwargs):
    return trained_like(tiny_arch, **kwargs).eval()


@pytest.fixture
def packed_dtypes(monkeypatch):
    """The dtypes in which the blocks prepare their fused-path weights (one entry per call)."""
    dtypes = []
    original = InferenceWeights.get

    def get(self, pwconv1, pwconv2, gamma, dtype, *args):
        dtypes.append(dtype)
        return original(self, pwconv1, pwconv2, gamma, dtype, *args)

    monkeypatch.setattr(InferenceWeights, 'get', get)
    return dtypes


@pytest.fixture
def emulated(monkeypatch):
    """This process behaves as on a CPU without bf16 arithmetic."""
    monkeypatch.setattr(cpu_support, 'native_bf16', lambda: False)
    cpu_support.warn_bf16_emulated.cache_clear()
    yield
    cpu_support.warn_bf16_emulated.cache_clear()


def test_onednn_bf16_is_torchs_own_check_asked_once(monkeypatch):
    cpu_support.onednn_bf16.cache_clear()
    calls = []
    answer = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    monkeypatch.setattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported',
                        lambda: calls.append(1) or answer, raising=False)
    try:
        assert cpu_support.onednn_bf16() is answer
        assert cpu_support.onednn_bf16() is answer
        assert len(calls) == 1
    finally:
        cpu_support.onednn_bf16.cache_clear()


def test_no_onednn_means_no_bf16(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, 'is_available', lambda: False)
    for check in (cpu_support.onednn_bf16, cpu_support.native_bf16):
        check.cache_clear()
    try:
        assert cpu_support.onednn_bf16() is False  # e.g. a build without MKLDNN
        assert cpu_support.native_bf16() is False
    finally:
        for check in (cpu_support.onednn_bf16, cpu_support.native_bf16):
            check.cache_clear()


@pytest.mark.parametrize('machine, bf16, amx, ne_convert, native', [
    ('x86_64', False, False, False, False),  # Skylake / Ice Lake: AVX-512, bf16 in software
    ('x86_64', True, False, False, True),  # Cooper Lake, Zen 4: AVX512-BF16
    ('x86_64', False, True, False, True),  # Sapphire Rapids: AMX
    ('x86_64', False, False, True, True),  # AVX-NE-CONVERT
    ('aarch64', False, False, False, True),  # torch's check already asks for the bf16 extension
])
def test_native_bf16_needs_bf16_arithmetic(monkeypatch, machine, bf16, amx, ne_convert, native):
    monkeypatch.setattr(cpu_support, 'onednn_bf16', lambda: True)
    monkeypatch.setattr(cpu_support.platform, 'machine', lambda: machine)
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: bf16, raising=False)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: amx, raising=False)
    flags = frozenset({'avx2', 'avx512bw'} | ({'avx_ne_convert'} if ne_convert else set()))
    monkeypatch.setattr(cpu_support, '_cpu_info',
                        lambda: cpu_support.CpuInfo('a CPU', 'GenuineIntel', flags, {}))
    cpu_support.native_bf16.cache_clear()
    try:
        assert cpu_support.native_bf16() is native
        monkeypatch.setattr(cpu_support, 'onednn_bf16', lambda: False)
        cpu_support.native_bf16.cache_clear()
        assert cpu_support.native_bf16() is False  # nothing runs without oneDNN's bf16
    finally:
        cpu_support.native_bf16.cache_clear()


def test_describe_records_what_benchmarks_need():
    facts = cpu_support.describe()
    assert facts['cpu_capability'] == torch.backends.cpu.get_cpu_capability()
    assert facts['native_bf16'] == cpu_support.native_bf16()
    assert facts['onednn_bf16'] == cpu_support.onednn_bf16()
    assert facts['cpu_vendor'] == cpu_support.cpu_vendor() != ''
    assert facts['wide_mlp_route'] == cpu_support.mlp_route(1024)
    assert facts['threads'] == torch.get_num_threads()
    assert isinstance(facts['cpu_model'], str) and isinstance(facts['flags'], list)
    assert facts['threads_per_core'] in (None, 1, 2, 4)


@pytest.mark.parametrize('mode', ['cast', 'autocast'])
def test_emulated_bf16_inference_runs_in_float32(tiny_arch, mode, emulated, packed_dtypes,
                                                 caplog):
    model = _model(tiny_arch)
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode(), fast_paths(False):
        reference = model(x)
    if mode == 'cast':
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    with caplog.at_level(logging.WARNING, logger='convnext_dense.cpu_fast_paths.cpu_support'):
        with torch.inference_mode(), torch.autocast('cpu', torch.bfloat16, mode == 'autocast'):
            first, again = model(x), model(x)
            with fast_paths(False):
                plain = model(x)  # the reference kernels: slow, but they work everywhere
    assert packed_dtypes and set(packed_dtypes) == {torch.float32}
    assert sum('bfloat16 is emulated' in r.getMessage() for r in caplog.records) == 1
    for out, out_again, out_plain, ref in zip(first, again, plain, reference):
        assert out.dtype == out_plain.dtype and out.is_contiguous()
        assert torch.equal(out, out_again)
        _assert_rel(out, ref, 1e-2, f'{mode} vs float32')  # only the output rounding
        _assert_rel(out, out_plain, 5e-2, f'{mode} vs the plain bf16 path')


def test_emulated_cast_model_keeps_a_float32_copy_until_a_parameter_changes(tiny_arch,
                                                                            emulated):
    model = _model(tiny_arch).to(torch.bfloat16)
    x = torch.randn(1, 3, 64, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        model(x)
        copy_before = model._float32_copy.get(model)
        model(x)
        assert model._float32_copy.get(model) is copy_before
        model.stages[1][0].pwconv1.weight.add_(1.0)
        changed = model(x)
    assert model._float32_copy.get(model) is not copy_before
    fresh = _model(tiny_arch)
    fresh.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    with torch.no_grad():
        expected = fresh(x.float())
    for got, want in zip(changed, expected):
        assert torch.equal(got, want.to(torch.bfloat16))


def test_emulated_autocast_training_runs_in_float32(tiny_arch, emulated):
    model = _model(tiny_arch, drop_path_rate=0.2).train()
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for autocast in (True, False):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        with torch.autocast('cpu', torch.bfloat16, enabled=autocast):
            outs = model(x)
        sum((o.float() ** 2).mean() for o in outs).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[1].items():  # the same float32 numbers as without autocast
        assert torch.equal(grads[0][name], grad), name


def test_emulated_cast_model_training_takes_the_plain_path(tiny_arch, emulated):
    model = _model(tiny_arch).to(torch.bfloat16).train()
    outs = model(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16))
    assert all(o.dtype == torch.bfloat16 for o in outs)
    sum(o.float().sum() for o in outs).backward()
    assert model.stages[0][0].pwconv1.weight.grad.dtype == torch.bfloat16
    assert model._float32_copy._value is None


def test_block_alone_never_packs_bf16_weights_where_onednn_has_no_bf16(monkeypatch,
                                                                      packed_dtypes):
    monkeypatch.setattr(cpu_support, 'onednn_bf16', lambda: False)
    block = ConvNeXtBlock(16, layer_scale_init_value=1.0).eval()
    x = torch.randn(1, 16, 9, 9)
    with torch.inference_mode(), torch.autocast('cpu', torch.bfloat16):
        out = block(x)
    assert packed_dtypes == [] and out.dtype == torch.float32


def test_native_bf16_takes_the_fused_bf16_path(tiny_arch, onednn_bf16_kernels, packed_dtypes):
    model = _model(tiny_arch)
    with torch.inference_mode(), torch.autocast('cpu', torch.bfloat16):
        model(torch.randn(1, 3, 64, 64))
    assert set(packed_dtypes) == {torch.bfloat16} and model._float32_copy._value is None


@pytest.mark.parametrize('vendor,capability,narrow,wide', [
    # Haswell .. Alder Lake client: measured, MKL's AVX2 branch
    ('GenuineIntel', 'AVX2', 'onednn_separate_gelu', 'blas'),
    # EPYC Rome / Milan: MKL's generic branch; oneDNN's AVX2 GELU epilogue is slow
    ('AuthenticAMD', 'AVX2', 'onednn_separate_gelu', 'onednn_separate_gelu'),
    ('HygonGenuine', 'AVX2', 'onednn_separate_gelu', 'onednn_separate_gelu'),
    ('unknown', 'AVX2', 'onednn_separate_gelu', 'onednn_separate_gelu'),  # no /proc/cpuinfo
    ('GenuineIntel', 'AVX512', 'onednn', 'onednn'),
    ('AuthenticAMD', 'AVX512', 'onednn', 'onednn'),  # Zen 4, Zen 5
    ('unknown', 'SVE256', 'onednn', 'onednn'),
    ('unknown', 'DEFAULT', 'onednn', 'onednn'),
])
def test_mlp_route_per_vendor_and_isa(monkeypatch, vendor, capability, narrow, wide):
    monkeypatch.setattr(cpu_support, 'cpu_capability', lambda: capability)
    monkeypatch.setattr(cpu_support, 'cpu_vendor', lambda: vendor)
    assert cpu_support.mlp_route(128) == narrow  # BLAS never: the fused add wins on 128 channels
    assert cpu_support.onednn_mlp(128)
    for channels in (256, 512, 1024):
        assert cpu_support.mlp_route(channels) == wide
        assert cpu_support.onednn_mlp(channels) is (wide != 'blas')
    assert cpu_support.describe()['wide_mlp_route'] == wide


def test_forced_mlp_route_overrides_the_choice_and_restores_it(monkeypatch):
    monkeypatch.setattr(cpu_support, 'cpu_capability', lambda: 'AVX2')
    monkeypatch.setattr(cpu_support, 'cpu_vendor', lambda: 'GenuineIntel')
    with cpu_support.force_mlp_route('onednn'):
        assert cpu_support.mlp_route(1024) == 'onednn'
        with cpu_support.force_mlp_route('blas'):
            assert cpu_support.mlp_route(128) == 'blas'
        with cpu_support.force_mlp_route(None):
            assert [cpu_support.mlp_route(c) for c in (128, 1024)] == [
                'onednn_separate_gelu', 'blas']
        assert cpu_support.mlp_route(1024) == 'onednn'
    assert cpu_support.mlp_route(1024) == 'blas'
    with pytest.raises(ValueError, match=r"MLP route 'mkl' is not one of \('onednn', "
                                         r"'onednn_separate_gelu', 'blas'\)"):
        with cpu_support.force_mlp_route('mkl'):
            pass
    assert cpu_support.mlp_route(1024) == 'blas'


def test_route_from_the_environment(monkeypatch, route_env):
    monkeypatch.setattr(cpu_support, 'cpu_capability', lambda: 'AVX2')
    monkeypatch.setattr(cpu_support, 'cpu_vendor', lambda: 'AuthenticAMD')
    # e.g. where --variants mlp_routes found BLAS faster on an EPYC
    route_env(cpu_support.MLP_ROUTE_ENV, 'blas')
    assert [cpu_support.mlp_route(c) for c in (128, 1024)] == ['blas', 'blas']
    assert cpu_support.describe()['wide_mlp_route'] == 'blas'
    with cpu_support.force_mlp_route('onednn'):  # the benchmark's forced routes still win
        assert cpu_support.mlp_route(1024) == 'onednn'
    monkeypatch.setattr(cpu_support, 'cpu_vendor', lambda: 'GenuineIntel')
    route_env(cpu_support.MLP_ROUTE_ENV, 'onednn')
    assert cpu_support.mlp_route(1024) == 'onednn'
    route_env(cpu_support.MLP_ROUTE_ENV, '')
    assert cpu_support.mlp_route(1024) == 'blas'  # unset or empty: this CPU's default
    route_env(cpu_support.MLP_ROUTE_ENV, 'mkl')
    with pytest.raises(ValueError, match=r"CONVNEXT_DENSE_MLP_ROUTE='mkl' is not one of "
                                         r"\('onednn', 'onednn_separate_gelu', 'blas'\)"):
        cpu_support.mlp_route(1024)


@pytest.mark.parametrize('route', cpu_support.MLP_ROUTES)
def test_forced_route_runs_and_matches_plain(tiny_arch, route, monkeypatch):
    calls = {'linear_gelu': 0, 'linear': 0, 'blas_mlp_chunk': 0}
    for function in calls:
        original = getattr(fused_ops, function)

        def counted(*args, _original=original, _name=function):
            calls[_name] += 1
            return _original(*args)
        monkeypatch.setattr(fused_ops, function, counted)
    model = _model(tiny_arch)
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode(), fast_paths(False):
        plain = model(x)
    with torch.inference_mode(), cpu_support.force_mlp_route(route):
        forced = model(x)
    blocks = sum(tiny_arch['depths'])
    # The first matmul with GELU in its epilogue; both matmuls plain (the residual add rides in
    # the second's epilogue: linear_add); or BLAS.
    expected = {'onednn': dict(linear_gelu=blocks, linear=0, blas_mlp_chunk=0),
                'onednn_separate_gelu': dict(linear_gelu=0, linear=blocks, blas_mlp_chunk=0),
                'blas': dict(linear_gelu=0, linear=0, blas_mlp_chunk=blocks)}
    assert calls == expected[route]
    for a, p in zip(forced, plain):
        _assert_rel(a, p, 1e-5, route)


AMD_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model name\t: AMD EPYC 7B12
siblings\t: 2
cpu cores\t: 1
flags\t\t: fpu sse2 avx avx2 fma

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
"""


def test_cpu_info_reads_the_vendor(monkeypatch, tmp_path):
    import builtins
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(AMD_CPUINFO)
    real_open = builtins.open
    monkeypatch.setattr(cpu_support, 'open', lambda path, *a, **k: real_open(
        cpuinfo if path == '/proc/cpuinfo' else path, *a, **k), raising=False)
    monkeypatch.setattr(cpu_support, 'cpu_capability', lambda: 'AVX2')
    cpu_support._cpu_info.cache_clear()
    try:
        info = cpu_support._cpu_info()
        assert info == cpu_support.CpuInfo('AMD EPYC 7B12', 'AuthenticAMD',
                                           frozenset({'fpu', 'sse2', 'avx', 'avx2', 'fma'}),
                                           {'siblings': 2, 'cpu cores': 1})
        facts = cpu_support.describe()
        assert (facts['cpu_vendor'] == 'AuthenticAMD'
                and facts['wide_mlp_route'] == 'onednn_separate_gelu')
        assert facts['threads_per_core'] == 2 and facts['flags'] == ['avx2']
    finally:
        cpu_support._cpu_info.cache_clear()


@pytest.mark.parametrize('route', cpu_support.MLP_ROUTES)
def test_each_mlp_route_matches_plain_in_chunks(tiny_arch, route, monkeypatch):
    monkeypatch.setattr(cpu_support, 'mlp_route', lambda channels: route)
    # What each route calls once per chunk (the second matmul, with the residual add in its
    # epilogue, is linear_add on both oneDNN routes).
    first = {'onednn': 'linear_gelu', 'onednn_separate_gelu': 'linear', 'blas': 'blas_mlp_chunk'}
    rows = {name: [] for name in first.values()}
    for name in rows:
        original = getattr(fused_ops, name)
        monkeypatch.setattr(fused_ops, name, lambda h, *a, _o=original, _n=name:
                            rows[_n].append(h.shape[0]) or _o(h, *a))
    model = _model(tiny_arch, out_indices=(1, 3))
    x = torch.randn(2, 3, 67, 93)  # stage 0: 2 * 16 * 23 = 736 rows
    with torch.inference_mode(), fast_paths(False):
        plain = model(x)
    with torch.inference_mode():
        whole = model(x)
        monkeypatch.setattr(fused_ops, '_MIN_CHUNK_ROWS', 1)
        monkeypatch.setattr(fused_ops, 'HIDDEN_CHUNK_BYTES', 100 * 64 * 4)  # 100 rows at stage 0
        chunked = model(x)
    used = rows.pop(first[route])
    assert not any(rows.values()), rows
    assert used[:5] == [736, 176, 40, 40, 8]  # one call per block: stages 0, 1, 2, 2, 3
    step = 50 if route == 'blas' else 100  # BLAS takes half the activation bytes per chunk
    assert used[5:5 + 736 // step + 1] == [step] * (736 // step) + [736 % step]
    for a, b, p in zip(whole, chunked, plain):
        _assert_rel(a, p, 1e-5, f'{route} vs plain')
        _assert_rel(b, p, 1e-5, f'{route} in chunks vs plain')


# The backbone without mmengine: its BaseModule as a plain Module and the registry as a no-op.
# Both are pure Python that the emulated CPUs took 15 s to import, for nothing that depends on
# the CPU.
BARE_PACKAGE = r'''
import sys, types, torch
def stub(name, **attributes):
    module = sys.modules[name] = types.ModuleType(name)
    module.__dict__.update(attributes)
class BaseModule(torch.nn.Module):
    def __init__(self, init_cfg=None):
        super().__init__()
        self.init_cfg = init_cfg
class Registry:
    def register_module(self):
        return lambda cls: cls
stub('mmengine'); stub('mmengine.model', BaseModule=BaseModule)
stub('convnext_dense', __path__=['convnext_dense'])
stub('convnext_dense.registry', MODELS=Registry())
'''
# One script for every emulated CPU: what it prints first tells the tests which paths it took.
EMULATED_CPU_SCRIPT = BARE_PACKAGE + r'''
import platform
from convnext_dense.cpu_fast_paths import cpu_support, fast_paths, fused_ops, train_matmuls
from convnext_dense.model.backbone import ConvNeXt
print(torch.backends.cpu.get_cpu_capability(), cpu_support.onednn_bf16(),
      cpu_support.native_bf16(), platform.machine(), fused_ops.ONEDNN_LINEAR,
      fused_ops.MKL_PACKED_LINEAR, cpu_support.mlp_route(8), cpu_support.mlp_route(1024))
torch.manual_seed(0)
model = ConvNeXt(arch=dict(depths=(1, 1, 1, 1), channels=(8, 16, 32, 64)),
                 layer_scale_init_value=1.0).eval()
x = torch.randn(1, 3, 32, 32)
def rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
with torch.inference_mode():
    with fast_paths(False):
        plain = model(x)
    fused = model(x)
    assert all(torch.allclose(f, p, atol=1e-5) for f, p in zip(fused, plain)), 'fp32'
    assert max(rel(f, p) for f, p in zip(fused, plain)) <= 1e-5, 'fp32'
    with torch.autocast('cpu', torch.bfloat16):
        assert max(rel(a, p) for a, p in zip(model(x), plain)) <= 1e-2, 'autocast'
    cast = model.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert max(rel(c, p) for c, p in zip(cast, plain)) <= 1e-2, 'cast'
    assert all(c.dtype == torch.bfloat16 for c in cast), 'cast'
model = model.float()
# float32 through the BLAS route (as CONVNEXT_DENSE_MLP_ROUTE=blas runs it), in chunks of 16 rows
# at stage 0: where torch has MKL, full chunks on MKL-packed weights (MKL's code for this CPU).
fused_ops._MIN_CHUNK_ROWS, fused_ops.HIDDEN_CHUNK_BYTES = 1, 2 * 16 * 32 * 4
packed_calls = []
blas_mlp_chunk = fused_ops.blas_mlp_chunk
fused_ops.blas_mlp_chunk = lambda *a: packed_calls.append(a[6] is not None) or blas_mlp_chunk(*a)
big = torch.randn(1, 3, 64, 64)  # stage 0: 256 rows
with torch.no_grad(), cpu_support.force_mlp_route('blas'):
    blas = model(big)
    with fast_paths(False):
        blas_plain = model(big)
assert packed_calls and (sum(packed_calls) >= 16 if fused_ops.MKL_PACKED_LINEAR
                         else not any(packed_calls)), packed_calls
assert max(rel(b, p) for b, p in zip(blas, blas_plain)) <= 1e-5, 'fp32 BLAS route'
model.train()
# The training path (fast depthwise weight gradient) with each route of its matmuls, down to the
# tiny model's, against the plain path.
train_matmuls.MIN_MULTIPLY_ADDS = 0
grads, probes = {}, [torch.randn(p.shape) for p in plain]  # random directions: no cancellation
for fast, route in ((False, None), (True, 'blas'), (True, 'onednn')):
    model.zero_grad()
    with fast_paths(fast), cpu_support.force_train_matmul_route(route):
        sum((o * probe).sum() for o, probe in zip(model(x), probes)).backward()
    grads[route] = [p.grad.clone() for p in model.parameters()]
for route in cpu_support.TRAIN_MATMUL_ROUTES:
    assert all(rel(f, p) <= 1e-4 for f, p in zip(grads[route], grads[None])), route
print('ok')
'''


@pytest.mark.slow
@pytest.mark.parametrize('cpu', ['EPYC-Rome-v2', 'Haswell-v4'])  # MKL: generic code / AVX2 code
def test_real_avx2_cpu(cpu):
    """The whole bf16 request, float32 through both routes (BLAS on MKL-packed weights) and a
    training step with both routes of its matmuls, on a CPU that has AVX2 and nothing newer, emulated by qemu (an AMD EPYC and
    an Intel Haswell)."""
    qemu = shutil.which('qemu-x86_64')
    if qemu is None:
        pytest.skip('needs qemu-x86_64 (Debian: apt-get install qemu-user) to emulate an '
                    'AVX2-only CPU')
    result = subprocess.run([qemu, '-cpu', cpu, sys.executable, '-c', EMULATED_CPU_SCRIPT],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.split()
    assert lines[:6] == ['AVX2', 'False', 'False', 'x86_64', 'True', 'True'], result.stdout
    # oneDNN with GELU apart (tiny blocks); the wide blocks' route per vendor, which qemu-user
    # takes from the host's /proc/cpuinfo
    wide = ('blas' if cpu_support.cpu_vendor() in cpu_support.BLAS_MLP_VENDORS
            else 'onednn_separate_gelu')
    assert lines[6:8] == ['onednn_separate_gelu', wide], result.stdout
    assert lines[-1] == 'ok', result.stdout
    assert 'bfloat16 is emulated on this CPU' in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize('cpu,bf16', [('max', True), ('neoverse-n1', False)])
def test_real_aarch64_cpu(cpu, bf16):
    """The same script on emulated aarch64 CPUs, with and without the bf16 extension, on torch's
    aarch64 CPU build (oneDNN with Arm Compute Library; no MKL, so BLAS runs on plain weights)."""
    root = os.environ.get('CONVNEXT_DENSE_AARCH64_ROOT', osp.join(ROOT, 'build', 'aarch64'))
    qemu = shutil.which('qemu-aarch64')
    if qemu is None or not osp.isdir(osp.join(root, 'site')):
        pytest.skip('needs qemu-aarch64 and an aarch64 Python with torch in build/aarch64 '
                    '(tools/aarch64_sysroot.sh makes one; root and apt-get)')
    sysroot = osp.join(root, 'sysroot')
    env = dict(os.environ, PYTHONPATH=osp.join(root, 'site'))
    result = subprocess.run(
        [qemu, '-L', sysroot, '-cpu', cpu, osp.join(sysroot, 'usr', 'bin', 'python3.11'), '-c',
         EMULATED_CPU_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.split()
    assert lines[1:8] == [str(bf16), str(bf16), 'aarch64', 'True', 'False', 'onednn',
                          'onednn'], result.stdout
    assert lines[-1] == 'ok', result.stdout
    warned = 'bfloat16 is emulated on this CPU' in result.stderr
    assert warned is not bf16 and ('no bf16 extension' in result.stderr) is warned
