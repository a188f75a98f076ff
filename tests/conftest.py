"""Shared fixtures: a tiny ConvNeXt that runs in milliseconds on CPU."""
import pytest
import torch
from tiny import TINY_ARCH

from convnext_dense.runtime.compile_cache import keep_compile_cache_per_capability

# Before any test compiles: under ATEN_CPU_CAPABILITY (README's AVX2 approximation) torch.compile
# would otherwise reuse graphs the native runs cached, and return garbage.
keep_compile_cache_per_capability()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def route_env(monkeypatch):
    """``route_env(variable, value)``: the process started with ``variable=value``, one of
    ``cpu_support``'s route settings (which it reads once per process)."""
    from convnext_dense.cpu_fast_paths import cpu_support
    cached = (cpu_support.env_mlp_route, cpu_support.env_train_matmul_route)

    def set_value(variable, value):
        monkeypatch.setenv(variable, value)
        for read in cached:
            read.cache_clear()
    yield set_value
    for read in cached:  # before monkeypatch restores the environment: read afresh after it
        read.cache_clear()


@pytest.fixture
def tiny_arch():
    return dict(TINY_ARCH)


@pytest.fixture
def spy(monkeypatch):
    """``spy(owner, name)``: a list that gets the positional arguments of every call of
    ``owner.name`` from then on; the original still runs (with the keyword arguments too)."""
    def install(owner, name):
        calls = []
        original = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *args, **kwargs: calls.append(args)
                            or original(*args, **kwargs))
        return calls
    return install


@pytest.fixture
def onednn_bf16_kernels(monkeypatch):
    """oneDNN's bf16 kernels, also where bf16 is not native (the backbone would avoid them there).

    Skips, naming the capability, on a CPU where oneDNN cannot run bf16 at all.
    """
    import convnext_dense.cpu_fast_paths.cpu_support as cpu_support
    if not cpu_support.onednn_bf16():
        pytest.skip('needs a CPU where oneDNN runs bf16 (AVX-512 BW/VL/DQ, AVX-NE-CONVERT or AMX); '
                    f'this one runs {torch.backends.cpu.get_cpu_capability()} without them '
                    '(the float32 fallback is tested in test_cpu_support.py)')
    monkeypatch.setattr(cpu_support, 'native_bf16', lambda: True)
