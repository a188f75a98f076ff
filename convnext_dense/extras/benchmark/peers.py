"""Other ConvNeXt implementations to compare with, holding exactly our backbone's weights.

Hugging Face's ``ConvNextBackbone`` is the reference peer: it is built with random weights and our
backbone loads them through ``convnext_dense.weights`` (the same converter a user's checkpoint
goes through). timm and mmpretrain join only when they are importable (they are never installed
here); they receive our weights through the inverse of the converter's key map.
"""
import importlib.util
import re
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ...model.archs import resolve_arch

PEERS = ('huggingface', 'timm', 'mmpretrain')
_MODULES = {'huggingface': 'transformers', 'timm': 'timm', 'mmpretrain': 'mmpretrain'}
# Trained ConvNeXt layer scales are O(0.1); 1e-6 (the init) would mute every block.
LAYER_SCALE = 0.1


def peer_available(name: str) -> bool:
    """Whether the peer ``name`` (one of :data:`PEERS`) can be imported here."""
    if name not in PEERS:
        raise ValueError(f"unknown peer '{name}'; choose from {PEERS}")
    try:
        return importlib.util.find_spec(_MODULES[name]) is not None
    except ImportError:  # a finder that refuses the name
        return False


class FeatureMaps(nn.Module):
    """Makes a peer return a tuple of ``(N, C, H, W)`` maps, as our backbone does.

    Args:
        model: The peer.
        kind: One of :data:`PEERS`.
        norms: LayerNorms applied per output (timm's feature extractor has no output norms).
    """

    def __init__(self, model: nn.Module, kind: str, norms: Optional[nn.ModuleList] = None) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.norms = norms

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = self.model(x)
        feats = out.feature_maps if self.kind == 'huggingface' else out
        if self.norms is not None:
            # (N, C, H, W) -> (N, H, W, C) -> LayerNorm -> back
            feats = [n(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
                     for f, n in zip(feats, self.norms)]
        return tuple(feats)


def build_huggingface(arch, out_indices: Sequence[int] = (0, 1, 2, 3),
                      drop_path_rate: float = 0.0, seed: int = 0) -> FeatureMaps:
    """Hugging Face ``ConvNextBackbone`` with seeded random weights, layer scale :data:`LAYER_SCALE`."""
    from transformers import ConvNextBackbone, ConvNextConfig
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    depths, channels = resolve_arch(arch)
    config = ConvNextConfig(
        hidden_sizes=list(channels), depths=list(depths), hidden_act='gelu',
        layer_scale_init_value=LAYER_SCALE, drop_path_rate=drop_path_rate,
        out_features=[f'stage{i + 1}' for i in out_indices])
    torch.manual_seed(seed)
    model = ConvNextBackbone(config)
    with torch.no_grad():  # non-trivial output norms, so a wrong key map shows in the outputs
        for name, param in model.named_parameters():
            if name.startswith('hidden_states_norms.'):
                param.add_(torch.rand_like(param) * 0.2 - 0.1)
    return FeatureMaps(model, 'huggingface')


def build_timm(arch, out_indices: Sequence[int] = (0, 1, 2, 3),
               drop_path_rate: float = 0.0) -> FeatureMaps:
    """timm's ConvNeXt feature extractor plus one LayerNorm per output (as our backbone has)."""
    import timm
    _, channels = resolve_arch(arch)
    model = timm.create_model(f'convnext_{arch}', pretrained=False, features_only=True,
                              out_indices=tuple(out_indices), ls_init_value=LAYER_SCALE,
                              drop_path_rate=drop_path_rate)
    norms = nn.ModuleList(nn.LayerNorm(channels[i], eps=1e-6) for i in out_indices)
    return FeatureMaps(model, 'timm', norms)


def build_mmpretrain(arch, out_indices: Sequence[int] = (0, 1, 2, 3),
                     drop_path_rate: float = 0.0) -> FeatureMaps:
    """mmpretrain's ConvNeXt as a dense backbone."""
    from mmpretrain.models import ConvNeXt as MMPretrainConvNeXt
    model = MMPretrainConvNeXt(arch=arch, out_indices=tuple(out_indices),
                               gap_before_final_norm=False, layer_scale_init_value=LAYER_SCALE,
                               drop_path_rate=drop_path_rate)
    return FeatureMaps(model, 'mmpretrain')


BUILDERS = {'huggingface': build_huggingface, 'timm': build_timm, 'mmpretrain': build_mmpretrain}


def peer_state_dict(peer: FeatureMaps) -> Dict[str, torch.Tensor]:
    """The peer's weights under names our converter understands (timm's flattened names fixed)."""
    state = peer.model.state_dict()
    if peer.kind == 'timm':
        # FeatureListNet flattens module paths: stem_0 / stages_1 -> stem.0 / stages.1.
        state = {re.sub(r'^(stem|stages)_(\d+)', r'\1.\2', k): v for k, v in state.items()}
    return state


def load_into_ours(ours: nn.Module, peer: FeatureMaps) -> None:
    """Load the peer's weights into our backbone.

    The backbone renames any ConvNeXt naming and refuses a partial load itself
    (:mod:`convnext_dense.weights.self_load`); a peer without output norms leaves ours fresh.

    Raises:
        ValueError: the peer's weights do not fill our backbone (missing blocks, wrong shapes).
    """
    ours.load_state_dict(peer_state_dict(peer))


def copy_ours_into(peer: FeatureMaps, ours: nn.Module) -> None:
    """Give the peer our backbone's weights, through the inverse of the converter's key map."""
    from ...weights import convert_with_report
    state = peer_state_dict(peer)
    mapping = convert_with_report(state).mapped
    ours_state = ours.state_dict()
    with torch.no_grad():
        for ours_key, peer_key in mapping.items():
            state[peer_key].copy_(ours_state[ours_key])
        if peer.norms is not None:
            for norm, index in zip(peer.norms, ours.out_indices):
                norm.weight.copy_(ours_state[f'norm{index}.weight'])
                norm.bias.copy_(ours_state[f'norm{index}.bias'])
