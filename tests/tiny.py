"""The tiny ConvNeXt the tests use (one definition): runs in milliseconds on CPU."""
TINY_ARCH = dict(depths=(1, 1, 2, 1), channels=(16, 32, 64, 128))
