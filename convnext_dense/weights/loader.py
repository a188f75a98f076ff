"""Load pretrained ConvNeXt weights from any source and layout into a backbone, strictly."""
import logging
import os
from collections import defaultdict
from typing import Mapping, Optional, Tuple, Union

import torch
from mmengine.logging import print_log
from torch import nn

from .fit import LoadPlan, plan_load
from .layouts import Conversion, convert_with_report
from .safe_load import load_state_file
from .sources import resolve_source

Checkpoint = Union[str, os.PathLike, Mapping]


def read_checkpoint(checkpoint: Checkpoint, prefix: Optional[str] = None
                    ) -> Tuple[Conversion, str]:
    """Resolve, load safely and convert a checkpoint; return the conversion and where it came from.

    Args:
        checkpoint: A file, URL, Hugging Face directory or hub id (see
            :func:`~convnext_dense.weights.sources.resolve_source`), or an in-memory checkpoint
            dict.
        prefix: Passed to :func:`~convnext_dense.weights.layouts.convert_with_report`.

    Raises:
        FileNotFoundError: the source cannot be found or fetched.
        ValueError: unsafe, corrupt or non-ConvNeXt checkpoint.
    """
    if isinstance(checkpoint, Mapping):
        obj, where = checkpoint, 'the given state dict'
    else:
        path = resolve_source(checkpoint)
        where = f"checkpoint '{checkpoint}'"
        if str(path) != str(checkpoint):
            where += f' ({path})'
        obj = load_state_file(path)
    try:
        return convert_with_report(obj, prefix=prefix), where
    except ValueError as err:
        raise type(err)(f'{where}: {err}') from None


def load_pretrained(backbone: nn.Module, checkpoint: Checkpoint,
                    prefix: Optional[str] = None) -> Conversion:
    """Load ConvNeXt weights of any supported layout into ``backbone``, strictly.

    Every backbone parameter except the output norms ``norm{i}`` must be found with the right
    shape. Output norms the checkpoint does not hold (all classification layouts) start fresh at
    weight 1, bias 0; a dense checkpoint's output norms are loaded. What was mapped and dropped is
    logged to the current MMLogger.

    Args:
        backbone: A :class:`convnext_dense.ConvNeXt`.
        checkpoint: A file, http(s) URL, Hugging Face model directory, hub id, or checkpoint dict.
        prefix: Take only keys under this prefix (e.g. ``'backbone.'``); None detects it.

    Returns:
        The :class:`~convnext_dense.weights.layouts.Conversion` that was loaded.

    Raises:
        ValueError: the checkpoint does not fit (message lists missing / unexpected / mis-shaped
            keys and the architectures), is not a ConvNeXt, is corrupt, or carries code.
        FileNotFoundError: the source cannot be found or fetched.

    Example::

        backbone = ConvNeXt(arch='base', init_cfg=dict(
            type='Pretrained', checkpoint='facebook/convnext-base-224-22k'))
        backbone.init_weights()  # calls load_pretrained(backbone, checkpoint, prefix=None)
    """
    conversion, where = read_checkpoint(checkpoint, prefix)
    expected = {k: v.shape for k, v in backbone.state_dict().items()}
    configured = (tuple(backbone.depths), tuple(backbone.channels))
    plan = plan_load(expected, conversion.state_dict, configured, conversion.unmapped,
                     source=f'{where} ({conversion.layout} layout)')
    weights = dict(plan.state_dict)
    current = backbone.state_dict()
    for key in plan.fresh_norms:  # output norms a classification checkpoint lacks: 1 and 0
        weights[key] = torch.full_like(current[key], 1.0 if key.endswith('.weight') else 0.0)
    backbone.load_state_dict(weights, strict=True)
    print_log(format_report(conversion, where, plan), logger='current')
    for target, original in conversion.mapped.items():
        print_log(f'  {original} -> {target}', logger='current', level=logging.DEBUG)
    return conversion


def format_report(conversion: Conversion, where: str, plan: Optional[LoadPlan] = None) -> str:
    """One paragraph saying what was mapped, dropped and started fresh."""
    lines = [f'Read {where}, layout: {conversion.layout}; '
             f'{len(conversion.mapped)} tensors mapped to backbone parameters.']
    by_reason = defaultdict(list)
    for key, reason in conversion.dropped.items():
        by_reason[reason].append(key)
    for reason, keys in by_reason.items():
        shown = ', '.join(keys[:4]) + (f', ... ({len(keys) - 4} more)' if len(keys) > 4 else '')
        lines.append(f'  dropped {len(keys)} ({reason}): {shown}')
    if plan is not None and plan.unused_norms:
        lines.append(f'  dropped {len(plan.unused_norms)} output-norm tensors of stages not in '
                     f'out_indices: {", ".join(plan.unused_norms)}')
    if plan is not None and plan.fresh_norms:
        names = sorted({k.split('.')[0] for k in plan.fresh_norms})
        lines.append(f'  output norms {", ".join(names)} start fresh (weight 1, bias 0)')
    norms = sorted({k.split('.')[0] for k in conversion.state_dict if k.startswith('norm')})
    loaded = [n for n in norms if plan is None or f'{n}.weight' in plan.state_dict]
    if loaded:
        lines.append(f'  output norms {", ".join(loaded)} taken from the dense checkpoint')
    return '\n'.join(lines)
