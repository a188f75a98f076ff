"""The backbone's outputs, freezing, checkpointing, drop path and parameter layout."""
import pytest
import torch

from convnext_dense import ConvNeXt


@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, 2, 3), (3,), (-1,), (0, -2)])
def test_outputs_match_declared_channels_and_strides(tiny_arch, out_indices):
    backbone = ConvNeXt(arch=tiny_arch, out_indices=out_indices)
    feats = backbone(torch.rand(2, 3, 64, 96))
    assert len(feats) == len(backbone.out_indices) == len(out_indices)
    for feat, channels, stride in zip(feats, backbone.out_channels, backbone.out_strides):
        assert feat.shape == (2, channels, 64 // stride, 96 // stride)


def test_declared_outputs_for_named_arch():
    backbone = ConvNeXt(arch='base', out_indices=(1, 2, 3))
    assert backbone.out_channels == (256, 512, 1024)
    assert backbone.out_strides == (8, 16, 32)


@pytest.mark.parametrize('size', [(67, 93), (333, 517), (32, 32)])
def test_any_input_size(tiny_arch, size):
    feats = ConvNeXt(arch=tiny_arch)(torch.rand(1, 3, *size))
    for feat, stride in zip(feats, (4, 8, 16, 32)):
        assert feat.shape[-2:] == (size[0] // stride, size[1] // stride)


def test_in_channels(tiny_arch):
    feats = ConvNeXt(arch=tiny_arch, in_channels=1)(torch.rand(1, 1, 64, 64))
    assert feats[0].shape == (1, 16, 16, 16)


def test_parameter_names_follow_official_layout(tiny_arch):
    names = set(dict(ConvNeXt(arch=tiny_arch).named_parameters()))
    expected = {
        'downsample_layers.0.0.weight', 'downsample_layers.0.1.weight',
        'downsample_layers.1.0.weight', 'downsample_layers.1.1.weight',
        'stages.2.1.dwconv.weight', 'stages.2.1.norm.weight', 'stages.2.1.pwconv1.weight',
        'stages.2.1.pwconv2.bias', 'stages.2.1.gamma', 'norm0.weight', 'norm3.bias'}
    assert expected <= names
    assert not any(name.startswith('norm.') for name in names)


def test_output_norms_only_for_selected_indices(tiny_arch):
    backbone = ConvNeXt(arch=tiny_arch, out_indices=(1, 3))
    assert hasattr(backbone, 'norm1') and hasattr(backbone, 'norm3')
    assert not hasattr(backbone, 'norm0') and not hasattr(backbone, 'norm2')


def test_layer_scale_disabled(tiny_arch):
    backbone = ConvNeXt(arch=tiny_arch, layer_scale_init_value=0)
    assert not any('gamma' in name for name, _ in backbone.named_parameters())


@pytest.mark.parametrize('frozen_stages', [1, 2, 4])
def test_frozen_stages_get_no_gradient_and_stay_in_eval(tiny_arch, frozen_stages):
    backbone = ConvNeXt(arch=tiny_arch, frozen_stages=frozen_stages, drop_path_rate=0.2)
    backbone.train()
    sum(f.sum() for f in backbone(torch.rand(2, 3, 64, 64))).backward()
    for i in range(4):
        for module in (backbone.downsample_layers[i], backbone.stages[i]):
            frozen = i < frozen_stages
            assert module.training is not frozen
            for param in module.parameters():
                assert param.requires_grad is not frozen
                assert (param.grad is None) is frozen
    assert backbone.norm0.weight.grad is not None


def test_with_cp_matches_plain_outputs_and_gradients(tiny_arch):
    plain = ConvNeXt(arch=tiny_arch, layer_scale_init_value=1.0)
    checkpointed = ConvNeXt(arch=tiny_arch, layer_scale_init_value=1.0, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 64, 64)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        outs = model(x)
        sum((o * o).sum() for o in outs).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
        if model is plain:
            reference = [o.detach() for o in outs]
    for out, ref in zip(outs, reference):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-6, atol=1e-7)


def test_drop_path_only_in_training(tiny_arch):
    backbone = ConvNeXt(arch=tiny_arch, drop_path_rate=0.5, layer_scale_init_value=1.0)
    x = torch.rand(4, 3, 64, 64)
    backbone.eval()
    first, second = backbone(x)[-1], backbone(x)[-1]
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    backbone.train()
    assert not torch.allclose(backbone(x)[-1], backbone(x)[-1])


def test_drop_path_rates_rise_linearly(tiny_arch):
    backbone = ConvNeXt(arch=tiny_arch, drop_path_rate=0.4)
    rates = [block.drop_path_rate for stage in backbone.stages for block in stage]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_state_dict_round_trip(tiny_arch):
    source, target = ConvNeXt(arch=tiny_arch), ConvNeXt(arch=tiny_arch)
    source.init_weights()
    target.load_state_dict(source.state_dict())
    x = torch.rand(1, 3, 64, 64)
    source.eval(), target.eval()
    for a, b in zip(source(x), target(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
