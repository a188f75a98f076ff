"""Whole-model checkpoints for the loading tests, in the layouts users hold.

The renames here are written from the published layouts (each library's module names, mmcv 1.x's
``save_checkpoint``) independently of ``convnext_dense.weights``.
"""
import re
from typing import Dict

import torch
from mmengine.config import Config

DET_CONFIG = 'configs/demo/mask-rcnn_convnext-demo_shapes.py'
SEG_CONFIG = 'configs/demo/upernet_convnext-demo_shapes.py'


def demo_cfg(path: str, **decode) -> Config:
    """A demo config with no pretrained weights (optionally another class count)."""
    import convnext_dense  # noqa: F401  (registers the backbone)
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None
    if 'num_classes' in decode and 'decode_head' in cfg.model:
        cfg.model.decode_head.num_classes = decode['num_classes']
        cfg.model.auxiliary_head.num_classes = decode['num_classes']
    elif 'num_classes' in decode:
        cfg.model.roi_head.bbox_head.num_classes = decode['num_classes']
        cfg.model.roi_head.mask_head.num_classes = decode['num_classes']
    return cfg


def build(cfg: Config) -> torch.nn.Module:
    """Build the config's model (mmdet or mmseg) in eval mode on the CPU."""
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules()
    return MODELS.build(cfg.model).eval()


def perturbed_state(model: torch.nn.Module, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Every float tensor (parameters and BN statistics) moved off its init, deterministically."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            noise = 0.05 * torch.randn(value.shape, generator=gen)
            value = value.abs() + 0.5 + noise.abs() if key.endswith('running_var') else value + noise
        out[key] = value.clone()
    return out


_OFFICIAL_TO_MMPRETRAIN = ((r'^backbone\.stages\.(\d)\.(\d+)\.dwconv\.', r'backbone.stages.\1.\2.depthwise_conv.'),
                           (r'^backbone\.stages\.(\d)\.(\d+)\.pwconv(\d)\.', r'backbone.stages.\1.\2.pointwise_conv\3.'))


def mmpretrain_names(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """mmdet 3.x / mmseg 1.x model-zoo naming: the backbone as mmpretrain's ConvNeXt names it."""
    out = {}
    for key, value in state.items():
        for pattern, repl in _OFFICIAL_TO_MMPRETRAIN:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def mmcv1_checkpoint(state: Dict[str, torch.Tensor], classes) -> Dict[str, object]:
    """What the official ConvNeXt repo's mmdet 2.x / mmseg 0.x training wrote (mmcv 1.x)."""
    param = torch.nn.Parameter(torch.ones(4))
    param.grad = torch.ones(4)
    optimizer = torch.optim.AdamW([param], lr=1e-4, weight_decay=0.05)
    optimizer.step()
    meta = {'mmcv_version': '1.4.2', 'time': 'Sun Jan  9 12:00:00 2022',
            'env_info': 'sys.platform: linux\nPython: 3.8.12\nCUDA available: True',
            'config': "model = dict(type='UperNet')\n", 'seed': 0, 'exp_name': 'upernet.py',
            'mmseg_version': '0.20.2+', 'CLASSES': tuple(classes),
            'PALETTE': [[120, 120, 120] for _ in classes], 'epoch': 1, 'iter': 160000,
            'hook_msgs': {'last_ckpt': 'work_dirs/upernet/iter_160000.pth'}}
    return {'meta': meta, 'state_dict': dict(state), 'optimizer': optimizer.state_dict()}
