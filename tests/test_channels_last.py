"""ChannelsLastHook: the whole model in channels-last gives the plain model's losses and outputs."""
import copy

import numpy as np
import pytest
import torch

from convnext_dense.deploy.export import build_model
from convnext_dense.extras.benchmark.whole_model import make_batch
from convnext_dense.runtime.channels_last import ChannelsLastHook, convert_to_channels_last
from convnext_dense.runtime.channels_last_roi_align import ChannelsLastRoIAlign
from deploy_helpers import DET_CONFIG, SEG_CONFIG, small_cascade_config, spread_weights


def _same_seed(fn):
    torch.manual_seed(0)
    np.random.seed(0)
    return fn()


def _losses(model, batch):
    losses = _same_seed(lambda: model(**copy.deepcopy(batch), mode='loss'))
    return {name: float(sum(v) if isinstance(v, list) else v) for name, v in losses.items()
            if 'loss' in name}


@pytest.mark.parametrize('task', ['mask_rcnn', 'cascade_mask_rcnn', 'upernet'])
def test_losses_gradients_and_predictions_match_the_plain_model(task, tmp_path):
    config = {'mask_rcnn': DET_CONFIG, 'upernet': SEG_CONFIG}.get(task)
    if config is None:
        config = small_cascade_config(tmp_path / 'cascade.py')
    # The Cascade's later stages sample RoIs around the earlier stages' refined boxes: where one
    # of them lies within the layouts' 1e-5 rounding differences of an IoU threshold, the two
    # models label that RoI differently, and stage losses differ by 3e-4 to 7e-4 and gradients by
    # 8-20 % (seen for seed 3 of these random weights, and for seed 0 once the backbone's
    # downsampling trained as a matmul). Seed 1 has no such box with either.
    torch.manual_seed(1 if task == 'cascade_mask_rcnn' else 0)
    plain, _, _ = build_model(config, None)
    spread_weights(plain)
    converted = copy.deepcopy(plain)
    guarded = convert_to_channels_last(converted)
    # One RoIAlign per FPN level and RoI extractor, each now pooling channels-last maps itself;
    # UperNet uses no mmcv op.
    assert (guarded == 0) if task == 'upernet' else (guarded >= 8)
    roi_layers = [m for m in converted.modules() if type(m).__name__.endswith('RoIAlign')]
    assert all(type(m) is ChannelsLastRoIAlign for m in roi_layers)
    assert len(roi_layers) == guarded
    head_conv = [m for n, m in converted.named_modules()
                 if isinstance(m, torch.nn.Conv2d) and not n.startswith('backbone')][0]
    assert head_conv.weight.is_contiguous(memory_format=torch.channels_last)

    batch = plain.data_preprocessor(make_batch(plain, (128, 160)), training=True)
    plain.train()
    converted.train()
    expected, got = _losses(plain, batch), _losses(converted, batch)
    assert expected.keys() == got.keys() and len(expected) >= 2
    for name in expected:
        assert got[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-5), name
    # Gradients reach the weights alike (the guard's copy passes them back): measured differences
    # are 1e-6 of each gradient's norm in Mask R-CNN, up to 2e-3 in the Cascade, whose later
    # stages refine the earlier stages' boxes. (Gradients that are zero in exact arithmetic, as a
    # bias before BatchNorm, come out near 1e-8 and are compared absolutely.)
    for model in (plain, converted):
        model.zero_grad()
        losses = _same_seed(lambda: model(**copy.deepcopy(batch), mode='loss'))
        sum(v for n, v in losses.items() if 'loss' in n and torch.is_tensor(v)).backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), converted.named_parameters()):
        if a.grad is not None:
            assert (b.grad - a.grad).norm() <= 1e-2 * a.grad.norm() + 1e-6, name

    plain.eval()
    converted.eval()
    with torch.no_grad():
        expected = _same_seed(lambda: plain(**copy.deepcopy(batch), mode='predict'))
        got = _same_seed(lambda: converted(**copy.deepcopy(batch), mode='predict'))
    for want, have in zip(expected, got):
        if task == 'upernet':
            torch.testing.assert_close(have.seg_logits.data, want.seg_logits.data,
                                       rtol=1e-4, atol=1e-4)
            continue
        want, have = want.pred_instances, have.pred_instances
        assert len(want) > 0 and len(have) == len(want)
        torch.testing.assert_close(have.bboxes, want.bboxes, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(have.scores, want.scores, rtol=1e-4, atol=1e-5)
        assert (have.masks != want.masks).float().mean() < 1e-3


def test_hook_converts_the_runner_model():
    class Runner:  # what before_run reads
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    weight = Runner.model[0].weight
    optimizer = torch.optim.SGD(Runner.model.parameters(), lr=1.0)
    ChannelsLastHook().before_run(Runner)
    assert Runner.model[0].weight is weight  # the optimizer still steps it
    assert weight.is_contiguous(memory_format=torch.channels_last)
    Runner.model(torch.randn(1, 3, 8, 8)).sum().backward()
    before = weight.detach().clone()
    optimizer.step()
    assert not torch.equal(weight, before)


@pytest.mark.parametrize('distributed, hooks, converted', [
    (True, [dict(type='convnext_dense.ChannelsLastHook')], True),
    (True, [dict(type='ChannelsLastHook')], True),
    (True, [dict(type='EMAHook')], False),
    (False, [dict(type='convnext_dense.ChannelsLastHook')], False),  # the hook does it later
])
def test_runner_converts_before_ddp_lays_out_its_buckets(distributed, hooks, converted,
                                                         monkeypatch):
    """DDP's gradient buckets take the parameters' strides when it wraps the model: converted
    after that, every rank warned "Grad strides do not match bucket view strides"."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    from convnext_dense.runtime.checkpoint_runner import StrictLoadRunner
    seen = {}

    def wrap_model(self, model_wrapper_cfg, model):
        seen['channels_last'] = model[0].weight.is_contiguous(memory_format=torch.channels_last)
        return model
    monkeypatch.setattr(Runner, 'wrap_model', wrap_model)
    runner = StrictLoadRunner.__new__(StrictLoadRunner)
    runner._distributed = distributed
    runner.cfg = Config(dict(custom_hooks=hooks))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    assert runner.wrap_model(None, model) is model
    assert seen['channels_last'] == converted
