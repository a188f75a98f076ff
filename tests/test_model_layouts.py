"""Whole-model key conversion is pure, idempotent, and inverse to the Hugging Face UperNet map."""
import pytest
import torch

from convnext_dense.weights.model_layouts import (LAYOUT_HF_UPERNET, LAYOUT_OFFICIAL, LAYOUT_OPENMMLAB,
                                                  LAYOUT_OWN, convert_model_state_dict, to_hf_upernet)
from model_checkpoints import SEG_CONFIG, build, demo_cfg, mmpretrain_names


@pytest.fixture(scope='module')
def upernet_state():
    return {k: v for k, v in build(demo_cfg(SEG_CONFIG)).state_dict().items()}


def test_own_layout_is_unchanged(upernet_state):
    conversion = convert_model_state_dict(upernet_state)
    assert conversion.layout == LAYOUT_OWN and not conversion.renamed
    assert conversion.state_dict.keys() == upernet_state.keys()
    assert all(conversion.state_dict[k] is v for k, v in upernet_state.items())  # no copies
    assert convert_model_state_dict(upernet_state, {'mmcv_version': '1.4.2'}).layout == LAYOUT_OFFICIAL


@pytest.mark.parametrize('layout', ['openmmlab', 'huggingface', 'ddp'])
def test_other_layouts_convert_and_stay_converted(upernet_state, layout):
    if layout == 'openmmlab':
        source, name = mmpretrain_names(upernet_state), LAYOUT_OPENMMLAB
    elif layout == 'huggingface':
        source, name = to_hf_upernet(upernet_state)[0], LAYOUT_HF_UPERNET
    else:
        source, name = {'module.' + k: v for k, v in upernet_state.items()}, LAYOUT_OWN
    before = dict(source)
    conversion = convert_model_state_dict(source)
    assert source == before  # nothing mutated
    assert conversion.layout == name
    assert conversion.state_dict.keys() == upernet_state.keys()
    for key, value in upernet_state.items():
        assert conversion.state_dict[key] is value, key
    again = convert_model_state_dict(conversion.state_dict)
    assert again.state_dict == conversion.state_dict and not again.renamed


def test_hf_names_match_transformers(upernet_state):
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation
    config = UperNetConfig(
        backbone_config=ConvNextConfig(depths=[1, 1, 3, 1], hidden_sizes=[32, 64, 128, 256],
                                       layer_scale_init_value=1.0,
                                       out_features=['stage1', 'stage2', 'stage3', 'stage4']),
        hidden_size=64, auxiliary_channels=32, auxiliary_in_channels=128, num_labels=5)
    expected = UperNetForSemanticSegmentation(config).state_dict()
    hf, mapped = to_hf_upernet(upernet_state)
    assert hf.keys() == expected.keys()
    assert all(hf[k].shape == expected[k].shape for k in hf)
    assert mapped['decode_head.classifier.weight'] == 'decode_head.conv_seg.weight'


def test_key_outside_upernet_is_refused(upernet_state):
    with pytest.raises(ValueError, match='neck.x'):
        to_hf_upernet(dict(upernet_state, **{'neck.x': torch.zeros(1)}))
