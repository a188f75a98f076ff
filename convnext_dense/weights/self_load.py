"""What the ConvNeXt backbone does when a state dict is loaded into it (or into a model holding it).

``ConvNeXt._load_from_state_dict`` calls :func:`adopt_backbone_keys` for every load path that goes
through ``load_state_dict`` — mmengine's ``load_checkpoint`` (``load_from``, ``init_detector``,
``init_model``, ``Pretrained`` init of a whole model), the Runner's resume, plain PyTorch. Keys in
any ConvNeXt naming (official, mmpretrain, Hugging Face, timm) are renamed in place to the
backbone's, and a load that would leave any backbone tensor at its initial value is refused: the
caller gets an error instead of a model with a partly random backbone. The one exception is a
classification backbone (no output norms at all, every other tensor present): its output norms
start fresh at weight 1, bias 0, as with ``init_cfg=dict(type='Pretrained', ...)``.
"""
from typing import Dict, List

import torch
from torch import nn

from .errors import CheckpointError
from .fit import describe_arch, infer_arch
from .key_report import compare_keys
from .layouts import OUTPUT_NORM, convert_with_report, detect_naming

def adopt_backbone_keys(backbone: nn.Module, state_dict: Dict[str, object], prefix: str) -> None:
    """Rename ``state_dict``'s keys under ``prefix`` to the backbone's names, in place, or refuse.

    Args:
        backbone: A :class:`convnext_dense.ConvNeXt`.
        state_dict: The dict ``_load_from_state_dict`` received (mutated in place: children read
            their keys from it afterwards).
        prefix: The backbone's key prefix in it (``'backbone.'`` in a detector, ``''`` alone).

    Raises:
        ValueError: the keys do not fill every backbone parameter with the right shape; the
            message names the layout found and lists missing, unexpected and mis-shaped keys by
            module.
    """
    originals = [k for k in state_dict if k.startswith(prefix)]
    where = f"the ConvNeXt backbone{f' at {prefix!r}' if prefix else ''}"
    if not originals:
        raise CheckpointError(
            f'the state dict holds no weights for {where}: loading it would leave the whole '
            'backbone at its random init. A backbone-only (classification) checkpoint belongs in '
            "backbone init_cfg=dict(type='Pretrained', checkpoint=...), not in load_from")
    inside = {k[len(prefix):]: state_dict[k] for k in originals}
    ddp = 'module.'  # a state dict saved from a DistributedDataParallel wrapper
    names = [k[len(ddp):] for k in inside] if all(k.startswith(ddp) for k in inside) else inside
    if detect_naming(list(names)) is None:
        raise CheckpointError(f'the weights for {where} are not a ConvNeXt in any known naming '
                              f'(keys look like {sorted(inside)[:4]})')
    conversion = convert_with_report(inside, prefix='', dense=True)
    converted = dict(conversion.state_dict)
    for key in conversion.unmapped:
        converted[key] = inside[key]
    expected = {k: v.shape for k, v in backbone.state_dict().items()}
    for key in [k for k in converted if OUTPUT_NORM.fullmatch(k) and k not in expected]:
        del converted[key]  # output norm of a stage this backbone does not output
    norms = [k for k in expected if OUTPUT_NORM.fullmatch(k)]
    if norms and not any(k in converted for k in norms):
        # A classification backbone (no output norms at all, everything else checked below): the
        # norms start fresh at weight 1, bias 0, as Pretrained init does.
        current = backbone.state_dict()
        converted.update({k: torch.full_like(current[k], 1.0 if k.endswith('weight') else 0.0)
                          for k in norms})
    mismatch = compare_keys({prefix + k: v for k, v in expected.items()},
                            {prefix + k: v for k, v in converted.items()})
    if mismatch:
        raise CheckpointError('\n'.join(
            [f'checkpoint ({conversion.layout} layout) does not fill {where}; nothing was loaded:']
            + _hints(converted, backbone, [k[len(prefix):] for k in mismatch.missing])
            + mismatch.lines()))
    for key in originals:
        del state_dict[key]
    state_dict.update({prefix + k: v for k, v in converted.items()})


def _hints(converted, backbone, missing) -> List[str]:
    lines = []
    held = infer_arch(converted)
    configured = (tuple(backbone.depths), tuple(backbone.channels))
    if held != configured and any(c is not None for c in held[1]):
        lines.append(f'  the checkpoint holds a ConvNeXt with {describe_arch(*held)}; the '
                     f'backbone is configured as {describe_arch(*configured)}')
    if missing and all(OUTPUT_NORM.fullmatch(k) for k in missing):
        held = sorted({int(m[1]) for k in converted for m in [OUTPUT_NORM.fullmatch(k)] if m})
        if held == [3]:  # mmpretrain names a classifier's final norm (after pooling) norm3 too
            lines.append("  the checkpoint's only output norm is norm3: a dense model with "
                         'out_indices=(3,), or an mmpretrain classifier whose norm3 is its final '
                         'norm after pooling, not a feature-map norm; a classification checkpoint '
                         "belongs in backbone init_cfg=dict(type='Pretrained', checkpoint=...), "
                         'which starts the output norms fresh')
        else:
            lines.append('  only some output norms are missing: the checkpoint is a dense model '
                         'with other out_indices; set out_indices to match')
    return lines
