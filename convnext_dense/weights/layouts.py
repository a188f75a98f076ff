"""Convert any ConvNeXt checkpoint layout to the backbone's (official) parameter names.

Everything here is pure: a state dict goes in, a :class:`Conversion` comes out, nothing is read,
written or mutated. The layout is detected from the keys, never from a file name.

Supported layouts (each as its library writes it):

* official facebookresearch/ConvNeXt (``{'model': ...}``; ``norm.*`` and ``head.*`` dropped),
  which is also this backbone's own layout (``norm{i}`` output norms kept);
* Hugging Face ``ConvNextForImageClassification`` (``convnext.*`` + ``classifier.*``), the bare
  ``ConvNextModel`` and ``ConvNextBackbone`` (``hidden_states_norms.stage{k}`` -> ``norm{k-1}``);
* timm (``stem.*``, ``stages.{i}.blocks.{j}.*``, ``head.norm`` / ``head.fc`` dropped);
* mmpretrain (``depthwise_conv`` / ``pointwise_conv{1,2}``), classification or dense;
* any of these under ``backbone.`` in a full mmdet / mmseg checkpoint (neck and heads dropped).
"""
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .errors import CheckpointError

DROP_HEAD = 'classification head'
DROP_FINAL_NORM = 'classification final LayerNorm (applied after pooling)'
DROP_NOT_BACKBONE = 'not part of the backbone'
DROP_NOT_TENSOR = 'not a tensor'

CONTAINER_KEYS = ('state_dict', 'model')
MODEL_PREFIXES = ('backbone.', 'convnext.', 'convnextv2.')
HEAD_MODULES = frozenset({'head', 'classifier'})


@dataclass(frozen=True)
class _Drop:
    """Rule target for checkpoint keys that are not backbone weights."""
    reason: str


# Per naming, (pattern, target) pairs tried in order on keys without prefix; the target is a
# re replacement template, a function of the match, or a _Drop.
Rule = Tuple[str, Union[str, Callable[[re.Match], str], _Drop]]


def _same(pattern: str) -> Tuple[str, str]:
    return pattern, r'\g<0>'


_DOWNSAMPLE = r'downsample_layers\.[0-3]\.[01]\.(weight|bias)'
#: The backbone's per-stage output norms (``norm0`` .. ``norm3``), group 1 the stage.
OUTPUT_NORM = re.compile(r'norm([0-3])\.(weight|bias)')

_RULES: Dict[str, List[Rule]] = {
    'official': [
        _same(_DOWNSAMPLE),
        _same(r'stages\.[0-3]\.\d+\.(dwconv|norm|pwconv1|pwconv2)\.(weight|bias)'),
        _same(r'stages\.[0-3]\.\d+\.gamma'),
        _same(OUTPUT_NORM.pattern),
        (r'norm\.(weight|bias)', _Drop(DROP_FINAL_NORM)),
        (r'head\..+', _Drop(DROP_HEAD)),
    ],
    'mmpretrain': [
        _same(_DOWNSAMPLE),
        (r'stages\.([0-3])\.(\d+)\.depthwise_conv\.(weight|bias)', r'stages.\1.\2.dwconv.\3'),
        (r'stages\.([0-3])\.(\d+)\.pointwise_conv([12])\.(weight|bias)',
         r'stages.\1.\2.pwconv\3.\4'),
        _same(r'stages\.[0-3]\.\d+\.norm\.(weight|bias)'),
        _same(r'stages\.[0-3]\.\d+\.gamma'),
        # or the classification norm3: see _mmpretrain_is_classification
        _same(OUTPUT_NORM.pattern),
        (r'head\..+', _Drop(DROP_HEAD)),
    ],
    'huggingface': [
        (r'embeddings\.patch_embeddings\.(weight|bias)', r'downsample_layers.0.0.\1'),
        (r'embeddings\.layernorm\.(weight|bias)', r'downsample_layers.0.1.\1'),
        (r'encoder\.stages\.([1-3])\.downsampling_layer\.([01])\.(weight|bias)',
         r'downsample_layers.\1.\2.\3'),
        (r'encoder\.stages\.([0-3])\.layers\.(\d+)\.(dwconv|pwconv1|pwconv2)\.(weight|bias)',
         r'stages.\1.\2.\3.\4'),
        (r'encoder\.stages\.([0-3])\.layers\.(\d+)\.layernorm\.(weight|bias)',
         r'stages.\1.\2.norm.\3'),
        (r'encoder\.stages\.([0-3])\.layers\.(\d+)\.layer_scale_parameter', r'stages.\1.\2.gamma'),
        (r'hidden_states_norms\.stage([1-4])\.(weight|bias)',
         lambda m: f'norm{int(m.group(1)) - 1}.{m.group(2)}'),
        (r'layernorm\.(weight|bias)', _Drop(DROP_FINAL_NORM)),
        (r'classifier\..+', _Drop(DROP_HEAD)),
    ],
    'timm': [
        (r'stem\.([01])\.(weight|bias)', r'downsample_layers.0.\1.\2'),
        (r'stages\.([1-3])\.downsample\.([01])\.(weight|bias)', r'downsample_layers.\1.\2.\3'),
        (r'stages\.([0-3])\.blocks\.(\d+)\.conv_dw\.(weight|bias)', r'stages.\1.\2.dwconv.\3'),
        (r'stages\.([0-3])\.blocks\.(\d+)\.norm\.(weight|bias)', r'stages.\1.\2.norm.\3'),
        (r'stages\.([0-3])\.blocks\.(\d+)\.mlp\.fc([12])\.(weight|bias)',
         r'stages.\1.\2.pwconv\3.\4'),
        (r'stages\.([0-3])\.blocks\.(\d+)\.gamma', r'stages.\1.\2.gamma'),
        (r'head\.norm\.(weight|bias)', _Drop(DROP_FINAL_NORM)),
        (r'head\..+', _Drop(DROP_HEAD)),
    ],
}

# Key patterns that identify each naming, tried in this order (official last: mmpretrain shares
# its downsample_layers names).
_MARKERS = (
    ('huggingface', r'(embeddings\.patch_embeddings|encoder\.stages)\..+'),
    ('timm', r'(stem\.[01]|stages\.\d+\.(blocks|downsample))\..+'),
    ('mmpretrain', r'stages\.\d+\.\d+\.(depthwise_conv|pointwise_conv[12])\..+'),
    ('official', r'(downsample_layers\.\d+\.\d+|stages\.\d+\.\d+\.(dwconv|pwconv[12]))\..+'),
)

NAMINGS = tuple(name for name, _ in _MARKERS)


@dataclass(frozen=True)
class Conversion:
    """The result of converting a checkpoint to the backbone layout.

    Attributes:
        state_dict: Tensors under backbone parameter names (the input tensors, not copies).
        layout: Human-readable name of the detected layout.
        mapped: Backbone key -> the checkpoint key it came from.
        dropped: Checkpoint key -> why it is not a backbone weight.
        unmapped: Checkpoint keys inside the backbone's namespace that fit no rule of the layout.
    """

    state_dict: Dict[str, torch.Tensor]
    layout: str
    mapped: Dict[str, str] = field(default_factory=dict)
    dropped: Dict[str, str] = field(default_factory=dict)
    unmapped: Tuple[str, ...] = ()


def unwrap_state_dict(checkpoint: Mapping) -> Tuple[Dict[str, object], Optional[str]]:
    """Return the state dict inside a checkpoint and the container key it was under (or None).

    Accepts a bare state dict, ``{'state_dict': ...}`` (mmengine, mmpretrain) and
    ``{'model': ...}`` (official ConvNeXt).

    Raises:
        ValueError: ``checkpoint`` is not a mapping, or holds neither tensors nor a known
            container key.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'a checkpoint must be a dict of tensors, got a '
                              f'{type(checkpoint).__name__}')
    for key in CONTAINER_KEYS:
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping):
            return dict(inner), key
    if any(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        return dict(checkpoint), None
    raise CheckpointError(
        f'checkpoint holds no tensors and none of the containers {list(CONTAINER_KEYS)}; '
        f'its top-level keys are {_preview(list(checkpoint))}')


def _top(key: str) -> str:
    return key.split('.', 1)[0]


def _select_prefix(state_dict: Dict[str, object], prefix: Optional[str]
                   ) -> Tuple[str, Dict[str, str], Dict[str, str], set]:
    """Split keys by the backbone prefix.

    Returns the full prefix, {stripped key: key} inside it, {key: reason} of the keys outside it
    and the names of the modules outside it.
    """
    keys = list(state_dict)
    strip = ''
    if keys and all(key.startswith('module.') for key in keys):
        strip = 'module.'  # saved from a DistributedDataParallel wrapper
    if prefix is None:
        prefix = next((p for p in MODEL_PREFIXES if any(k.startswith(strip + p) for k in keys)), '')
    elif not isinstance(prefix, str):
        raise TypeError(f'prefix must be a str such as "backbone." or None, got {prefix!r}')
    elif prefix and not prefix.endswith('.'):
        prefix += '.'  # mmengine's Pretrained init takes 'backbone' for 'backbone.'
    full = prefix if strip and prefix.startswith(strip) else strip + prefix
    inside = {key[len(full):]: key for key in keys if key.startswith(full)}
    if not inside:
        raise ValueError(
            f"prefix '{prefix}' matches no key of the checkpoint; its keys start with "
            f'{_preview(sorted({_top(k[len(strip):]) + "." for k in keys}))}. '
            'Pass the right prefix, or prefix=None to detect it')
    dropped, others = {}, set()
    for key in keys:
        if not key.startswith(full):
            module = _top(key[len(strip):])
            others.add(module)
            reason = DROP_HEAD if module in HEAD_MODULES else f'{DROP_NOT_BACKBONE} ({module}.*)'
            dropped[key] = reason
    return full, inside, dropped, others


def detect_naming(keys: Sequence[str]) -> Optional[str]:
    """Name of the ConvNeXt naming scheme of backbone keys (see ``NAMINGS``), None if none fits."""
    for naming, marker in _MARKERS:
        if any(re.fullmatch(marker, key) for key in keys):
            return naming
    return None


def _mmpretrain_is_classification(norm_ids: set, other_modules: set) -> bool:
    # mmpretrain's classifier has only norm3 (after pooling) and at most a head beside the
    # backbone; a dense model has norm{i} per output stage or a neck / decode head beside it.
    return norm_ids == {3} and other_modules <= HEAD_MODULES


def _describe(naming: str, inside: Mapping[str, str], full_prefix: str, container: Optional[str],
              dropped: Mapping[str, str], classification: bool) -> str:
    """A short name for the layout, for logs and errors."""
    heads = any(reason in (DROP_HEAD, DROP_FINAL_NORM) for reason in dropped.values())
    dense = any(reason.startswith(DROP_NOT_BACKBONE) for reason in dropped.values())
    if naming == 'huggingface':
        if any(k.startswith('hidden_states_norms.') for k in inside):
            name = 'Hugging Face ConvNextBackbone'
        elif full_prefix.endswith('convnext.'):
            name = 'Hugging Face ConvNextForImageClassification'
        else:
            name = 'Hugging Face ConvNextModel'
    elif naming == 'mmpretrain':
        name = 'mmpretrain ' + ('classification' if classification else 'dense')
    elif naming == 'official':
        plain = not heads and not full_prefix and container is None
        name = 'convnext_dense backbone' if plain else 'official ConvNeXt'
    else:
        name = naming
    if dense:
        name = f'full detector/segmenter checkpoint ({full_prefix}* in {name} naming)'
    return name


def convert_with_report(checkpoint: Mapping, prefix: Optional[str] = None,
                        dense: bool = False) -> Conversion:
    """Convert a ConvNeXt checkpoint of any supported layout to backbone parameter names.

    Args:
        checkpoint: A state dict, or a checkpoint dict holding one under ``state_dict`` / ``model``.
        prefix: Keys to take, e.g. ``'backbone.'`` (stripped); None detects ``backbone.`` and
            ``convnext.``. Keys outside the prefix are dropped and reported.
        dense: The keys are known to come from a dense backbone (a whole detector / segmenter):
            an mmpretrain ``norm3`` is then an output norm, never a classifier's final norm.

    Returns:
        A :class:`Conversion`. Applied to its own ``state_dict`` it returns that dict unchanged.

    Raises:
        ValueError: the checkpoint is not a mapping or not a ConvNeXt, or the prefix matches
            nothing.
        TypeError: the prefix is not a string.
    """
    state_dict, container = unwrap_state_dict(checkpoint)
    full_prefix, inside, dropped, others = _select_prefix(state_dict, prefix)
    naming = detect_naming(list(inside))
    if naming is None:
        raise CheckpointError(
            'this is not a ConvNeXt checkpoint: none of its '
            f'{len(inside)} keys{f" under {full_prefix!r}" if full_prefix else ""} fits the '
            f'official, Hugging Face, timm or mmpretrain ConvNeXt layouts '
            f'(keys look like {_preview(list(inside))})')
    norm_ids = {int(m.group(1)) for k in inside for m in [OUTPUT_NORM.fullmatch(k)] if m}
    classification = (naming == 'mmpretrain' and not dense
                      and _mmpretrain_is_classification(norm_ids, others))

    converted: Dict[str, torch.Tensor] = {}
    mapped: Dict[str, str] = {}
    unmapped: List[str] = []
    for key, original in inside.items():
        value = state_dict[original]
        target = _match(naming, key)
        if classification and key.startswith('norm3.'):
            target = _Drop(DROP_FINAL_NORM + ", mmpretrain's norm3")
        if target is None:
            unmapped.append(original)
        elif isinstance(target, _Drop):
            dropped[original] = target.reason
        elif not isinstance(value, torch.Tensor):
            dropped[original] = DROP_NOT_TENSOR
        elif target in converted:
            raise ValueError(f'checkpoint keys {mapped[target]!r} and {original!r} both map to '
                             f'{target!r}; the checkpoint mixes layouts')
        else:
            converted[target] = value
            mapped[target] = original
    layout = _describe(naming, inside, full_prefix, container, dropped, classification)
    return Conversion(converted, layout, mapped, dropped, tuple(unmapped))


def convert_to_backbone(checkpoint: Mapping,
                        prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Return ``checkpoint``'s backbone weights under backbone parameter names.

    Pure and idempotent: an already-converted dict comes back equal (same tensors). See
    :func:`convert_with_report` for arguments and for what was dropped.
    """
    return convert_with_report(checkpoint, prefix).state_dict


def _match(naming: str, key: str) -> Optional[Union[str, _Drop]]:
    for pattern, target in _RULES[naming]:
        match = re.fullmatch(pattern, key)
        if match is None:
            continue
        if isinstance(target, _Drop):
            return target
        return target(match) if callable(target) else match.expand(target)
    return None


def _preview(items: Sequence[str], limit: int = 6) -> str:
    shown = ', '.join(str(item) for item in items[:limit])
    more = f', ... ({len(items) - limit} more)' if len(items) > limit else ''
    return f'[{shown}{more}]'
