"""The ConvNeXt architecture table (depths and channels per stage, Liu et al. 2022)."""
from typing import Dict, Mapping, Sequence, Tuple, Union

ARCH_SETTINGS: Dict[str, Dict[str, Tuple[int, ...]]] = {
    'tiny': dict(depths=(3, 3, 9, 3), channels=(96, 192, 384, 768)),
    'small': dict(depths=(3, 3, 27, 3), channels=(96, 192, 384, 768)),
    'base': dict(depths=(3, 3, 27, 3), channels=(128, 256, 512, 1024)),
    'large': dict(depths=(3, 3, 27, 3), channels=(192, 384, 768, 1536)),
    'xlarge': dict(depths=(3, 3, 27, 3), channels=(256, 512, 1024, 2048)),
}

NUM_STAGES = 4
STAGE_STRIDES = (4, 8, 16, 32)

#: Input normalisation of the ImageNet weights (RGB pixels in 0..255), as mmdet / mmseg write it.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def is_int(value) -> bool:
    """An int, and not a bool (``True`` would pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or a float, and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class BackboneArgumentError(ValueError, TypeError):
    """A ConvNeXt argument of the wrong type or value; the message names it and what is allowed.

    Both a ValueError and a TypeError, as the checks were before; ``tools/train.py`` and
    ``tools/test.py`` print it as one ``error:`` line (a config's mistake, not a bug).
    """


def resolve_arch(arch: Union[str, Mapping]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Return ``(depths, channels)`` for an arch name or a dict with ``depths`` and ``channels``.

    Raises:
        BackboneArgumentError: unknown name, missing keys, lists that are not 4 positive
            integers, or ``arch`` neither a string nor a mapping.
    """
    if isinstance(arch, str):
        if arch not in ARCH_SETTINGS:
            raise BackboneArgumentError(
                f"arch '{arch}' is not a known ConvNeXt architecture; "
                f'choose one of {sorted(ARCH_SETTINGS)} or pass dict(depths=..., channels=...)')
        setting = ARCH_SETTINGS[arch]
        return tuple(setting['depths']), tuple(setting['channels'])
    if not isinstance(arch, Mapping):
        raise BackboneArgumentError(
            f'arch must be a str or a dict with depths and channels, got {arch!r}')
    missing = {'depths', 'channels'} - set(arch)
    if missing:
        raise BackboneArgumentError(
            f'arch dict {dict(arch)!r} lacks {sorted(missing)}; it needs depths and channels')
    extra = set(arch) - {'depths', 'channels'}
    if extra:
        raise BackboneArgumentError(
            f'arch dict has unknown keys {sorted(extra)}; allowed: depths, channels')
    depths, channels = tuple(arch['depths']), tuple(arch['channels'])
    for name, values in (('depths', depths), ('channels', channels)):
        if len(values) != NUM_STAGES or not all(is_int(v) and v > 0 for v in values):
            raise BackboneArgumentError(
                f'arch {name} must be {NUM_STAGES} positive integers, got {list(values)}')
    return depths, channels


def normalize_out_indices(out_indices: Union[int, Sequence[int]]) -> Tuple[int, ...]:
    """Stage indices (negative counts from the end) as sorted, distinct indices in 0..3.

    Raises:
        BackboneArgumentError: not an int or a sequence of them, empty, out of range, or a
            stage named twice.
    """
    if is_int(out_indices):
        indices = (out_indices,)
    elif isinstance(out_indices, (list, tuple, range)):
        indices = tuple(out_indices)
    else:
        raise BackboneArgumentError(
            f'out_indices must be an int or a sequence of ints (stages 0..3), got {out_indices!r}')
    if not indices:
        raise BackboneArgumentError(
            'out_indices is empty; choose stage indices in 0..3 (negative allowed)')
    normalized = []
    for index in indices:
        if not is_int(index):
            raise BackboneArgumentError(f'out_indices entries must be int, got {index!r}')
        if not -NUM_STAGES <= index < NUM_STAGES:
            raise BackboneArgumentError(
                f'out_indices entry {index} is out of range ({-NUM_STAGES} to {NUM_STAGES - 1})')
        normalized.append(index % NUM_STAGES)
    if len(set(normalized)) != len(normalized):
        raise BackboneArgumentError(f'out_indices {list(indices)} name the same stage twice')
    return tuple(sorted(normalized))


def declared_outputs(arch: Union[str, Mapping],
                     out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3)
                     ) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """``(out_channels, out_strides)`` of ``ConvNeXt(arch=arch, out_indices=out_indices)``,
    without building it (what necks and the swap tool read).

    Example:
        >>> declared_outputs('base', (1, 2, 3))
        ((256, 512, 1024), (8, 16, 32))
    """
    _, channels = resolve_arch(arch)
    indices = normalize_out_indices(out_indices)
    return tuple(channels[i] for i in indices), tuple(STAGE_STRIDES[i] for i in indices)
