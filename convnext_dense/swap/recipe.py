"""The ConvNeXt fine-tuning settings a swapped config adopts (Liu et al. 2022, official repo)."""
import copy
import os
from typing import Any, Dict, List, Optional

from ..model.archs import IMAGENET_MEAN, IMAGENET_STD

WEIGHTS_URL = 'https://dl.fbaipublicfiles.com/convnext/convnext_{arch}_22k_224.pth'
#: ``pretrained`` value meaning "the official ImageNet-22k weights of the arch".
OFFICIAL_22K = '22k'
CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.bin', '.safetensors', '.ckpt')

LR = 1e-4
# Detection: layer-wise decay (Cascade Mask R-CNN recipe); segmentation: stage-wise (UperNet).
DECAY = {'mmdet': dict(decay_rate=0.8, decay_type='layer_wise'),
         'mmseg': dict(decay_rate=0.9, decay_type='stage_wise')}
OPTIMIZER = dict(type='AdamW', lr=LR, betas=(0.9, 0.999), weight_decay=0.05)
CONSTRUCTOR = 'convnext_dense.LayerDecayOptimizerConstructor'
# The ImageNet RGB statistics every official ConvNeXt checkpoint was trained with.
NORMALIZATION = dict(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), bgr_to_rgb=True)


def weights_for(arch: Any, pretrained: Optional[str]) -> Optional[str]:
    """Checkpoint to load: the official 22k one for ``'22k'``, ``None`` for none, else as given.

    The keywords ``'22k'`` and ``'none'`` are matched case-insensitively (``'22K'``, ``'None'``).
    Any other value must look like a checkpoint: an existing file or directory, a URL or
    ``scheme://`` name, a hub id (``'org/name'``), or a path ending in a checkpoint suffix; a
    path that does not exist yet (on the training machine, say) is kept as it is.

    Raises:
        ValueError: ``'22k'`` with an arch dict (there are no official weights for it), or a
            bare word that is neither a keyword nor a checkpoint.
    """
    if isinstance(pretrained, os.PathLike):
        pretrained = os.fspath(pretrained)
    if pretrained is None or pretrained.lower() == 'none':
        return None
    if pretrained.lower() != OFFICIAL_22K:
        if not _looks_like_checkpoint(pretrained):
            raise ValueError(
                f"pretrained={pretrained!r} is neither '22k' nor 'none' and not a checkpoint: "
                'give an existing file or directory, a URL, a hub id (org/name) or a path '
                f'ending in one of {list(CHECKPOINT_SUFFIXES)}')
        return pretrained
    if not isinstance(arch, str):
        raise ValueError(f"pretrained='22k' needs a named arch, got arch={arch!r}; pass "
                         "pretrained=None or a checkpoint path")
    return WEIGHTS_URL.format(arch=arch)


def _looks_like_checkpoint(value: str) -> bool:
    # A bare word that is no file ('1k', 'true', 'imagenet') is a typo, not a checkpoint name.
    return ('/' in value or os.sep in value or value.lower().endswith(CHECKPOINT_SUFFIXES)
            or os.path.exists(os.path.expanduser(value)))


def optim_wrapper_delta(optim_wrapper: Dict, scope: str) -> Dict:
    """AdamW with the task's layer decay; keeps the wrapper type, gradient clipping and the rest.

    ``_delete_`` is set only on dicts the source has: on a new key mmengine would keep it.
    """
    optimizer = dict(OPTIMIZER)
    paramwise = dict(DECAY[scope])
    if 'optimizer' in optim_wrapper:
        optimizer = dict(_delete_=True, **optimizer)
    if 'paramwise_cfg' in optim_wrapper:
        paramwise = dict(_delete_=True, **paramwise)
    return dict(optimizer=optimizer, constructor=CONSTRUCTOR, paramwise_cfg=paramwise)


def scaled_schedulers(schedulers: Any, old_lr: Optional[float]) -> Optional[List]:
    """The schedulers with absolute ``eta_min`` scaled by ``LR / old_lr``, or None if unchanged.

    mmseg's PolyLR ends at ``eta_min=1e-4``, written for SGD at 0.01; at lr 1e-4 it would hold
    the lr flat and pull the decayed layer groups *up* towards 1e-4.
    """
    if not old_lr or old_lr == LR or not isinstance(schedulers, (list, tuple)):
        return None
    new = copy.deepcopy(list(schedulers))
    changed = False
    for scheduler in new:
        if isinstance(scheduler, dict) and scheduler.get('eta_min'):
            scheduler['eta_min'] = scheduler['eta_min'] * LR / old_lr
            changed = True
    return new if changed else None


def normalization_delta(data_preprocessor: Optional[Dict]) -> Optional[Dict]:
    """Mean, std and channel order of the ConvNeXt weights where the source differs, or None."""
    if not isinstance(data_preprocessor, dict) or 'mean' not in data_preprocessor:
        return None
    wanted = dict(NORMALIZATION)
    if data_preprocessor.get('rgb_to_bgr'):
        wanted['rgb_to_bgr'] = False
    delta = {key: value for key, value in wanted.items()
             if _as_list(data_preprocessor.get(key)) != _as_list(value)}
    return delta or None


def _as_list(value: Any) -> Any:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else value
