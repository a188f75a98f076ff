"""Shared fixtures: a tiny ConvNeXt that runs in milliseconds on CPU."""
import pytest
import torch

TINY_ARCH = dict(depths=(1, 1, 2, 1), channels=(16, 32, 64, 128))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_arch():
    return dict(TINY_ARCH)


@pytest.fixture
def native_bf16_only():
    """Skip, naming the capability, on a CPU whose oneDNN has no bf16 kernels."""
    import convnext_dense.cpu_support as cpu_support
    if not cpu_support.native_bf16():
        pytest.skip('needs a CPU whose oneDNN has bf16 kernels (AVX-512 BW/VL/DQ, AVX-NE-CONVERT '
                    f'or AMX); this one runs {torch.backends.cpu.get_cpu_capability()} without '
                    'them (the float32 fallback is tested in test_cpu_support.py)')
