"""Reference checkpoints for the weights tests, derived from a small Hugging Face ConvNeXt.

The key maps below are written from each library's own module names (official ConvNeXt, Hugging
Face ConvNext, timm, mmpretrain) independently of ``convnext_dense.weights.layouts``: they go
from Hugging Face names to each other layout, the package goes the other way, and the numerics
are compared against Hugging Face's own forward.
"""
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from tiny import TINY_ARCH

HF_DEPTHS = list(TINY_ARCH['depths'])
HF_CHANNELS = list(TINY_ARCH['channels'])
ARCH = dict(depths=tuple(HF_DEPTHS), channels=tuple(HF_CHANNELS))
NUM_LABELS = 5


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def build_hf_classifier(seed: int = 0):
    """A randomly initialised HF ConvNextForImageClassification with every parameter perturbed."""
    _quiet_transformers()
    from transformers import ConvNextConfig, ConvNextForImageClassification
    torch.manual_seed(seed)
    model = ConvNextForImageClassification(ConvNextConfig(
        depths=HF_DEPTHS, hidden_sizes=HF_CHANNELS, num_labels=NUM_LABELS))
    with torch.no_grad():
        for param in model.parameters():  # LayerNorms off 1/0, layer scale far from 1e-6
            param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


def save_hf_dirs(model, root: Path) -> Dict[str, Path]:
    """Save the classifier as HF directories: safetensors, .bin, and the bare ConvNextModel."""
    from transformers import ConvNextModel
    dirs = {'hf_safetensors': root / 'hf_cls', 'hf_bin': root / 'hf_cls_bin',
            'hf_bare': root / 'hf_bare'}
    model.save_pretrained(dirs['hf_safetensors'])
    # The hub's facebook/convnext-*-22k ship pytorch_model.bin = torch.save(state_dict); recent
    # transformers only writes safetensors, so write the .bin the way those files were made.
    dirs['hf_bin'].mkdir()
    shutil.copy(dirs['hf_safetensors'] / 'config.json', dirs['hf_bin'] / 'config.json')
    torch.save(model.state_dict(), dirs['hf_bin'] / 'pytorch_model.bin')
    ConvNextModel.from_pretrained(dirs['hf_safetensors']).save_pretrained(dirs['hf_bare'])
    return dirs


def hf_stage_outputs(model, x: torch.Tensor) -> List[torch.Tensor]:
    """HF's four stage outputs (before any output norm)."""
    with torch.no_grad():
        return list(model.convnext(x, output_hidden_states=True).hidden_states[1:])


def channel_layer_norm(x: torch.Tensor, weight: Optional[torch.Tensor] = None,
                       bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """LayerNorm over channels of (N, C, H, W), eps 1e-6; fresh (1, 0) when no weight given."""
    return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], weight, bias, 1e-6).permute(0, 3, 1, 2)


# --- key maps from HF to the other layouts ------------------------------------------------

_HF_TO_OFFICIAL = [
    (r'convnext\.embeddings\.patch_embeddings\.', 'downsample_layers.0.0.'),
    (r'convnext\.embeddings\.layernorm\.', 'downsample_layers.0.1.'),
    (r'convnext\.encoder\.stages\.(\d)\.downsampling_layer\.(\d)\.', r'downsample_layers.\1.\2.'),
    (r'convnext\.encoder\.stages\.(\d)\.layers\.(\d+)\.layernorm\.', r'stages.\1.\2.norm.'),
    (r'convnext\.encoder\.stages\.(\d)\.layers\.(\d+)\.layer_scale_parameter',
     r'stages.\1.\2.gamma'),
    (r'convnext\.encoder\.stages\.(\d)\.layers\.(\d+)\.', r'stages.\1.\2.'),
    (r'convnext\.layernorm\.', 'norm.'),
    (r'classifier\.', 'head.'),
]
_OFFICIAL_TO_TIMM = [
    (r'downsample_layers\.0\.', 'stem.'),
    (r'downsample_layers\.(\d)\.', r'stages.\1.downsample.'),
    (r'stages\.(\d)\.(\d+)\.dwconv\.', r'stages.\1.blocks.\2.conv_dw.'),
    (r'stages\.(\d)\.(\d+)\.pwconv1\.', r'stages.\1.blocks.\2.mlp.fc1.'),
    (r'stages\.(\d)\.(\d+)\.pwconv2\.', r'stages.\1.blocks.\2.mlp.fc2.'),
    (r'stages\.(\d)\.(\d+)\.', r'stages.\1.blocks.\2.'),
    (r'norm\.', 'head.norm.'),
    (r'head\.', 'head.fc.'),
]
_OFFICIAL_TO_MMPRETRAIN = [
    (r'stages\.(\d)\.(\d+)\.dwconv\.', r'backbone.stages.\1.\2.depthwise_conv.'),
    (r'stages\.(\d)\.(\d+)\.pwconv(\d)\.', r'backbone.stages.\1.\2.pointwise_conv\3.'),
    (r'norm\.', 'backbone.norm3.'),
    (r'head\.', 'head.fc.'),
    (r'(stages|downsample_layers)\.', r'backbone.\1.'),
]


def _rename(state_dict: Dict[str, torch.Tensor], rules) -> Dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in rules:
            new, count = re.subn('^' + pattern, repl, key)
            if count:
                key = new
                break
        out[key] = value
    return out


def official_from_hf(hf: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """facebookresearch/ConvNeXt classification state dict (with ``norm`` and ``head``)."""
    return _rename(hf, _HF_TO_OFFICIAL)


def timm_from_hf(hf: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return _rename(official_from_hf(hf), _OFFICIAL_TO_TIMM)


def mmpretrain_cls_from_hf(hf: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """mmpretrain classifier state dict: backbone.* with the final norm as norm3, head.fc.*."""
    return _rename(official_from_hf(hf), _OFFICIAL_TO_MMPRETRAIN)


def dense_norms(seed: int = 1, indices: Sequence[int] = (0, 1, 2, 3)) -> Dict[str, torch.Tensor]:
    """Trained-looking output norms norm{i} (weight off 1, bias off 0)."""
    gen = torch.Generator().manual_seed(seed)
    norms = {}
    for i in indices:
        norms[f'norm{i}.weight'] = 1 + 0.3 * torch.randn(HF_CHANNELS[i], generator=gen)
        norms[f'norm{i}.bias'] = 0.3 * torch.randn(HF_CHANNELS[i], generator=gen)
    return norms


def mmpretrain_dense_from_hf(hf: Dict[str, torch.Tensor], norms: Dict[str, torch.Tensor]
                             ) -> Dict[str, torch.Tensor]:
    """mmpretrain ConvNeXt used as a dense backbone in a detector: norm0..3 and a neck."""
    cls = mmpretrain_cls_from_hf(hf)
    state = {k: v for k, v in cls.items() if not k.startswith(('head.', 'backbone.norm3.'))}
    state.update({'backbone.' + k: v for k, v in norms.items()})
    state.update(_detector_extras())
    return state


def detector_from_hf(hf: Dict[str, torch.Tensor], norms: Dict[str, torch.Tensor]
                     ) -> Dict[str, object]:
    """A full mmengine detector checkpoint with this backbone (official names under backbone.).

    Includes what mmengine's Runner saves beside the state dict (meta, message_hub with numpy
    history buffers, optimizer), which a weights-only load must get through.
    """
    import mmengine
    import numpy as np
    from mmengine.logging import MessageHub
    official = official_from_hf(hf)
    state = {'backbone.' + k: v for k, v in official.items()
             if not k.startswith(('norm.', 'head.'))}
    state.update({'backbone.' + k: v for k, v in norms.items()})
    state.update(_detector_extras())
    hub = MessageHub('weights-test-detector')  # not get_instance: leaves the current hub alone
    hub.update_scalar('train/loss', 1.25)
    hub.update_scalar('train/loss', np.float32(0.75))
    hub.update_info('iter', 12)
    params = [torch.nn.Parameter(torch.ones(3))]
    params[0].grad = torch.ones(3)
    optimizer = torch.optim.AdamW(params)
    optimizer.step()
    return {'meta': {'epoch': 1, 'iter': 12, 'seed': np.int64(0),
                     'mmengine_version': mmengine.__version__,
                     'dataset_meta': {'classes': ('cat', 'dog')}},
            'state_dict': state, 'message_hub': hub.state_dict(),
            'optimizer': optimizer.state_dict()}


def _detector_extras() -> Dict[str, torch.Tensor]:
    return {'neck.lateral_convs.0.conv.weight': torch.randn(8, 16, 1, 1),
            'neck.lateral_convs.0.conv.bias': torch.randn(8),
            'rpn_head.rpn_conv.weight': torch.randn(8, 8, 3, 3),
            'roi_head.bbox_head.fc_cls.weight': torch.randn(3, 8)}
