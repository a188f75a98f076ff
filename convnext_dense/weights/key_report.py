"""Word a state dict that does not fit a model: missing, unexpected and mis-shaped keys by module."""
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence, Tuple

import torch

_MODULE_LIMIT = 12


@dataclass(frozen=True)
class KeyMismatch:
    """How a state dict differs from the keys and shapes a model expects.

    Attributes:
        missing: Model keys the state dict lacks.
        unexpected: State dict keys the model does not have.
        misshaped: ``(key, checkpoint shape, model shape)`` for keys present in both.
    """

    missing: Tuple[str, ...] = ()
    unexpected: Tuple[str, ...] = ()
    misshaped: Tuple[Tuple[str, tuple, tuple], ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.misshaped)

    def keys(self) -> List[str]:
        """Every key named by this mismatch."""
        return list(self.missing) + list(self.unexpected) + [k for k, _, _ in self.misshaped]

    def lines(self, indent: str = '  ') -> List[str]:
        """One section per kind, each key grouped under the module that owns it."""
        out = []
        sections = (('missing', {k: '' for k in self.missing}),
                    ('unexpected', {k: '' for k in self.unexpected}),
                    ('mis-shaped', {k: f' {list(a)} in the checkpoint, {list(b)} in the model'
                                    for k, a, b in self.misshaped}))
        for title, keys in sections:
            if keys:
                out.append(f'{indent}{title} keys ({len(keys)}):')
                out += [indent * 2 + line for line in group_by_module(keys)]
        return out


def compare_keys(expected: Mapping[str, torch.Size], weights: Mapping[str, torch.Tensor],
                 ignore_missing: Sequence[str] = ()) -> KeyMismatch:
    """Compare a state dict against the model's ``{key: shape}``.

    Args:
        expected: The model's keys and shapes.
        weights: The state dict to load.
        ignore_missing: Substrings of model keys that may be missing (e.g. ``num_batches_tracked``).
    """
    missing = tuple(k for k in expected if k not in weights
                    and not any(part in k for part in ignore_missing))
    unexpected = tuple(k for k in weights if k not in expected)
    misshaped = tuple((k, tuple(weights[k].shape), tuple(expected[k])) for k in expected
                      if k in weights and isinstance(weights[k], torch.Tensor)
                      and tuple(weights[k].shape) != tuple(expected[k]))
    return KeyMismatch(missing, unexpected, misshaped)


def group_by_module(keys: Mapping[str, str]) -> List[str]:
    """``'module: leaf, leaf'`` lines, one per owning module (``keys`` maps key -> a note)."""
    groups: Dict[str, List[str]] = defaultdict(list)
    for key, note in keys.items():
        module, _, leaf = key.rpartition('.')
        groups[module or '(top level)'].append(leaf + note)
    lines = [f'{module}: {", ".join(leaves)}' for module, leaves in groups.items()]
    if len(lines) > _MODULE_LIMIT:
        lines = lines[:_MODULE_LIMIT] + [f'... and {len(lines) - _MODULE_LIMIT} more modules']
    return lines
