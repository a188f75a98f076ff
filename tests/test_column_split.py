"""The block MLP's second matmul as two column halves: same values, and each shape takes the form
that was faster when it was first timed."""
import itertools

import pytest
import torch

import convnext_dense.cpu_fast_paths.column_split as column_split
import convnext_dense.cpu_fast_paths.cpu_support as cpu_support
import convnext_dense.cpu_fast_paths.fused_ops as fused_ops
from convnext_dense.cpu_fast_paths.column_split import SplitChoices, force_column_split
from tiny import trained_like

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                reason='the fused CPU path needs a torch build with oneDNN')


def _max_rel(actual, expected):
    return ((actual.float() - expected.float()).abs().max()
            / expected.float().abs().max()).item()


@pytest.fixture
def narrow_halves(monkeypatch):
    """Halves of the tiny test model's widths (16-128 channels) count too."""
    monkeypatch.setattr(column_split, '_MIN_HALF', 8)


def _forms(model, x, spy):
    calls = spy(fused_ops, 'linear_add')
    outputs = {}
    for split in (False, True):
        calls.clear()
        with force_column_split(split), torch.inference_mode():
            outputs[split] = model(x)
        outputs[split, 'calls'] = len(calls)
    return outputs


def test_halves_give_the_whole_matmul_values_in_float32(tiny_arch, narrow_halves, spy):
    model = trained_like(tiny_arch).eval()
    x = torch.randn(2, 3, 67, 93)
    with cpu_support.force_mlp_route('onednn'):  # the halves are oneDNN's; BLAS runs whole
        forms = _forms(model, x, spy)
    blocks = sum(tiny_arch['depths'])
    assert forms[False, 'calls'] == blocks and forms[True, 'calls'] == 2 * blocks
    for whole, halves in zip(forms[False], forms[True]):
        assert halves.is_contiguous() and halves.shape == whole.shape
        assert _max_rel(halves, whole) <= 1e-6


@pytest.mark.parametrize('mode', ['cast', 'autocast'])
def test_halves_give_the_whole_matmul_values_in_bf16(tiny_arch, narrow_halves, spy, mode,
                                                     onednn_bf16_kernels):
    model, x = trained_like(tiny_arch).eval(), torch.randn(2, 3, 64, 64)
    if mode == 'cast':
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=mode == 'autocast'):
        forms = _forms(model, x, spy)
    for whole, halves in zip(forms[False], forms[True]):
        assert halves.dtype == whole.dtype
        assert _max_rel(halves, whole) <= 1e-2  # the same sums; oneDNN may block them otherwise


def test_halves_follow_parameter_changes(tiny_arch, narrow_halves):
    model, x = trained_like(tiny_arch).eval(), torch.randn(1, 3, 64, 64)
    with cpu_support.force_mlp_route('onednn'), force_column_split(True), torch.inference_mode():
        model(x)  # builds and keeps the halves
    with torch.no_grad():
        model.stages[3][0].pwconv2.weight.mul_(-2)
        model.stages[3][0].gamma.add_(0.5)
    with cpu_support.force_mlp_route('onednn'), torch.inference_mode():
        with force_column_split(True):
            halves = model(x)
        with force_column_split(False):
            whole = model(x)
    assert _max_rel(halves[3], whole[3]) <= 1e-6


def test_the_split_is_timed_only_for_low_precision_on_several_threads(monkeypatch):
    hidden = torch.zeros(4, 8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert column_split.applies(hidden.bfloat16(), 512)
        assert not column_split.applies(hidden, 512)  # float32
        assert not column_split.applies(hidden.bfloat16(), 100)  # halves under 64 columns
        assert not column_split.applies(hidden.bfloat16(), 129)  # odd
        torch.set_num_threads(1)
        assert not column_split.applies(hidden.bfloat16(), 512)
        with force_column_split(True):
            assert column_split.applies(hidden, 512)
        with force_column_split(False):
            torch.set_num_threads(2)
            assert not column_split.applies(hidden.bfloat16(), 512)
    finally:
        torch.set_num_threads(threads)


class _FakeWork:
    """Forms that advance a fake clock by a fixed cost and count their calls."""

    def __init__(self, whole_cost, halves_cost):
        self.now = 0.0
        self.calls = {'whole': 0, 'halves': 0}
        self.costs = {'whole': whole_cost, 'halves': halves_cost}

    def clock(self):
        return self.now

    def form(self, name):
        def run():
            self.calls[name] += 1
            self.now += self.costs[name]
            return torch.tensor(name == 'halves')
        return run


@pytest.mark.parametrize('whole_cost, halves_cost, chosen', [
    (2.3, 1.5, True),    # a core left idle by the whole matmul
    (1.0, 0.9, False),   # within the margin: not worth a second kernel
    (1.0, 2.0, False),
])
def test_each_shape_is_timed_once_and_takes_the_faster_form(whole_cost, halves_cost, chosen):
    work = _FakeWork(whole_cost, halves_cost)
    choices = SplitChoices(clock=work.clock)
    whole, halves = work.form('whole'), work.form('halves')
    assert bool(choices.run(('shape',), whole, halves)) == chosen
    assert choices.choices == {('shape',): chosen}
    timed = dict(work.calls)
    assert timed == {'whole': 4, 'halves': 4}  # one warm-up and three timed rounds each
    for _ in range(5):
        assert bool(choices.run(('shape',), whole, halves)) == chosen
    assert work.calls['halves' if chosen else 'whole'] == timed['halves' if chosen else 'whole'] + 5
    assert work.calls['whole' if chosen else 'halves'] == timed['whole' if chosen else 'halves']


def test_shapes_beyond_the_table_take_the_whole_matmul_untimed(monkeypatch):
    monkeypatch.setattr(column_split, 'MAX_SHAPES', 3)
    work = _FakeWork(2.0, 1.0)
    choices = SplitChoices(clock=work.clock)
    whole, halves = work.form('whole'), work.form('halves')
    for shape in itertools.islice(itertools.count(), 3):
        assert choices.run((shape,), whole, halves)
    before = dict(work.calls)
    assert not choices.run(('new',), whole, halves)
    assert work.calls == {'whole': before['whole'] + 1, 'halves': before['halves']}
    assert len(choices.choices) == 3
