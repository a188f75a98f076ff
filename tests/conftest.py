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
