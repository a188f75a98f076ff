"""The BLAS route's MKL-packed weights: full chunks run on them, with the plain values, and
they are made once per block and rebuilt when a parameter changes."""
import pytest
import torch

import convnext_dense.cpu_fast_paths.cpu_support as cpu_support
import convnext_dense.cpu_fast_paths.fused_ops as fused_ops
import convnext_dense.model.layers as layers
from convnext_dense.cpu_fast_paths import fast_paths
from tiny import trained_like

pytestmark = pytest.mark.skipif(
    not (fused_ops.ONEDNN_LINEAR and fused_ops.MKL_PACKED_LINEAR),
    reason="MKL-packed weights need a torch build with oneDNN's fused linear and MKL (x86)")


def _max_rel(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def _reference_mlp(x, weight1, bias1, weight2, bias2):
    hidden = torch.nn.functional.gelu(x @ weight1.t() + bias1)
    return hidden @ weight2.t() + bias2


@pytest.fixture
def blas_chunks_of_50(monkeypatch):
    """Every block through BLAS, in chunks of 50 rows at stage 0 (64 GELU channels)."""
    monkeypatch.setattr(fused_ops, '_MIN_CHUNK_ROWS', 1)
    monkeypatch.setattr(fused_ops, 'HIDDEN_CHUNK_BYTES', 2 * 50 * 64 * 4)
    with cpu_support.force_mlp_route('blas'):
        yield


@pytest.mark.parametrize('shortcut', [True, False])
def test_packed_chunk_equals_the_plain_one(shortcut):
    x, residual = torch.randn(96, 48), torch.randn(96, 48)
    weight1, bias1 = torch.randn(192, 48), torch.randn(192)
    weight2, bias2 = torch.randn(48, 192), torch.randn(48)
    packed = (torch.ops.mkl._mkl_reorder_linear_weight(weight1, 96),
              torch.ops.mkl._mkl_reorder_linear_weight(weight2, 96))
    part = residual if shortcut else None
    plain = fused_ops.blas_mlp_chunk(x, weight1, bias1, weight2, bias2, part)
    fast = fused_ops.blas_mlp_chunk(x, weight1, bias1, weight2, bias2, part, packed)
    reference = _reference_mlp(x, weight1, bias1, weight2, bias2) + (residual if shortcut else 0)
    assert _max_rel(fast, plain) <= 1e-6 and _max_rel(fast, reference) <= 1e-5


def test_full_chunks_run_on_packed_weights_made_once(tiny_arch, blas_chunks_of_50, spy):
    model = trained_like(tiny_arch).eval()
    x = torch.randn(2, 3, 67, 93)  # stage 0: 2 * 16 * 23 = 736 rows: 14 chunks of 50, then 36
    with torch.inference_mode(), fast_paths(False):
        plain = model(x)
    calls = spy(fused_ops, 'blas_mlp_chunk')
    with torch.no_grad():
        fast = model(x)
    assert [c[0].shape[0] for c in calls[:15]] == [50] * 14 + [36]
    for x_rows, _, bias1, *_, packed in calls:  # packed exactly where a chunk is full
        assert (packed is not None) == (x_rows.shape[0] == fused_ops.chunk_rows(
            bias1.numel(), 4, onednn=False))
    assert sum(c[6] is None for c in calls) > 1  # and shorter ones ran too
    for f, p in zip(fast, plain):
        assert _max_rel(f, p) <= 1e-5
    block = model.stages[0][0]
    packs = block._mkl_packed.get(block.pwconv1, block.pwconv2, block.gamma,
                                  block._inference_weights.get(block.pwconv1, block.pwconv2,
                                                               block.gamma, torch.float32, False),
                                  50)
    calls.clear()
    with torch.no_grad():
        model(x)
    assert all(c[6][0] is packs[0] and c[6][1] is packs[1] for c in calls[:14])  # kept


def test_packs_follow_parameter_changes_and_training(tiny_arch, blas_chunks_of_50):
    model = trained_like(tiny_arch).eval()
    x = torch.randn(1, 3, 96, 64)  # stage 0: 384 rows
    block = model.stages[0][0]
    with torch.no_grad():
        model(x)
        before = block._mkl_packed._value
        assert before is not None
        block.pwconv2.weight.mul_(1.5)  # as an optimizer step would
        block.gamma.mul_(0.5)
        changed = model(x)
    assert block._mkl_packed._value is not before
    with torch.inference_mode(), fast_paths(False):
        plain = model(x)
    for c, p in zip(changed, plain):
        assert _max_rel(c, p) <= 1e-5
    model.train()
    assert block._mkl_packed._value is None


def test_no_packs_without_mkl_or_on_the_onednn_route(tiny_arch, monkeypatch, spy):
    model = trained_like(tiny_arch).eval()
    x = torch.randn(1, 3, 64, 64)
    calls = spy(fused_ops, 'blas_mlp_chunk')
    monkeypatch.setattr(layers, 'MKL_PACKED_LINEAR', False)  # a build without MKL
    with torch.no_grad(), cpu_support.force_mlp_route('blas'):
        model(x)
    assert calls and all(c[6] is None for c in calls)
    monkeypatch.setattr(layers, 'MKL_PACKED_LINEAR', True)
    with torch.no_grad(), cpu_support.force_mlp_route('onednn'):
        model(x)
    assert all(block._mkl_packed._value is None for stage in model.stages for block in stage)
