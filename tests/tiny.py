"""The tiny ConvNeXt the tests use (one definition): runs in milliseconds on CPU."""
TINY_ARCH = dict(depths=(1, 1, 2, 1), channels=(16, 32, 64, 128))


def trained_like(arch, layer_scale: bool = True, **kwargs):
    """A ConvNeXt whose layer scales and norms are far from their init, so every block counts."""
    import torch

    from convnext_dense import ConvNeXt
    model = ConvNeXt(arch=arch, layer_scale_init_value=1.0 if layer_scale else 0, **kwargs)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('gamma'):
                param.uniform_(0.2, 1.0)
            elif 'norm' in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model
