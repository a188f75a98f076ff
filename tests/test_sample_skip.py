"""Drop path on the training path runs the residual branch on the kept samples only, and computes
what the plain path computes with the same random masks."""
import pytest
import torch

from convnext_dense.cpu_fast_paths import fast_paths, sample_skip
from convnext_dense.model.layers import ConvNeXtBlock
from tiny import trained_like


def _assert_rel(actual, expected, tol=1e-5, what=''):
    scale = expected.abs().max().clamp_min(1e-12)
    err = ((actual - expected).abs().max() / scale).item()
    assert err <= tol, f'{what}: relative error {err:.2e} > {tol:.0e}'


def _branch_batches(blocks):
    """A list that gets the number of samples each block's branch runs on (pwconv1's input).

    pwconv1's ``forward`` is wrapped, not hooked: a hook on a block's layer makes the block run
    its plain path (for the hook's sake), which would hide the path under test.
    """
    batches = []

    def recording(forward):
        def record(x):
            batches.append(x.shape[0])
            return forward(x)
        return record

    for block in blocks:
        block.pwconv1.forward = recording(block.pwconv1.forward)
    return batches


def _train_step(model, x, fast, seed, autocast):
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    torch.manual_seed(seed)  # the same drop-path masks on both paths
    with fast_paths(fast), torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        outs = model(x)
    sum((o.float() ** 2).mean() for o in outs).backward()
    return outs, x.grad, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize('with_cp, autocast', [(False, False), (True, False), (False, True)])
def test_dropped_samples_skip_the_branch_with_the_plain_results(tiny_arch, with_cp, autocast):
    model = trained_like(tiny_arch, drop_path_rate=0.6, with_cp=with_cp).train()
    batches = _branch_batches([block for stage in model.stages for block in stage])
    x = torch.randn(4, 3, 64, 64)
    fast_outs, fast_x_grad, fast_grads = _train_step(model, x, True, 3, autocast)
    fast_batches = list(batches)
    batches.clear()
    plain_outs, plain_x_grad, plain_grads = _train_step(model, x, False, 3, autocast)
    assert min(fast_batches) < 4 and set(batches) == {4}
    tol = 5e-2 if autocast else 1e-5
    for fast, plain in zip(fast_outs, plain_outs):
        assert fast.is_contiguous() and fast.dtype == plain.dtype
        _assert_rel(fast.float(), plain.float(), tol, what='output')
    _assert_rel(fast_x_grad, plain_x_grad, tol, what='input gradient')
    for name, grad in plain_grads.items():
        _assert_rel(fast_grads[name], grad, tol, what=f'gradient of {name}')


def test_a_batch_dropped_whole_still_gives_every_parameter_a_zero_gradient():
    block = ConvNeXtBlock(32, drop_path_rate=0.999, layer_scale_init_value=0.5).train()
    batches = _branch_batches([block])
    x = torch.randn(3, 32, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.manual_seed(0)
    out = block(x)
    assert batches == [0]  # the branch ran on an empty batch
    assert torch.equal(out, x) and out.is_contiguous(memory_format=torch.channels_last)
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    for name, param in block.named_parameters():  # zeros, as the plain path gives: not None
        assert param.grad is not None and not param.grad.any(), name


@pytest.mark.parametrize('memory_format', [torch.channels_last, torch.contiguous_format])
def test_taking_and_putting_samples_keeps_the_memory_format(memory_format):
    x = torch.randn(4, 8, 5, 6).contiguous(memory_format=memory_format)
    index = torch.tensor([0, 2])
    taken = sample_skip.take_samples(x, index)
    assert torch.equal(taken, x[[0, 2]]) and taken.is_contiguous(memory_format=memory_format)
    put = sample_skip.put_samples(x, index, taken * 2)
    expected = x.clone()
    expected[[0, 2]] *= 2
    assert torch.equal(put, expected) and put.is_contiguous(memory_format=memory_format)


def test_kept_samples_are_the_nonzero_mask_entries():
    mask = torch.tensor([0.0, 1.25, 0.0, 1.25]).view(4, 1, 1, 1)
    assert sample_skip.kept_samples(mask).tolist() == [1, 3]


def test_only_eager_cpu_code_skips_samples(monkeypatch):
    assert sample_skip.skips_dropped_samples(torch.zeros(1))
    assert not sample_skip.skips_dropped_samples(torch.zeros(1, device='meta'))
    monkeypatch.setattr(sample_skip, 'tracing', lambda: True)
    assert not sample_skip.skips_dropped_samples(torch.zeros(1))
