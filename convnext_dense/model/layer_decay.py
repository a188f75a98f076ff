"""Layer-wise / stage-wise learning-rate decay for any backbone that provides a layer map."""
import math
import numbers
from typing import Dict, List, Optional, Tuple

from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from torch import nn

from .archs import is_int, is_number
from .layer_ids import DECAY_TYPES
from ..registry import OPTIM_WRAPPER_CONSTRUCTORS

PARAMWISE_KEYS = ('decay_rate', 'decay_type', 'num_layers', 'custom_keys')
CUSTOM_KEY_FIELDS = ('lr_mult', 'decay_mult')
LAYER_MAP_METHODS = ('layer_decay_id', 'layer_decay_num_layers')


class LayerDecayConfigError(ValueError, TypeError):
    """``paramwise_cfg`` / ``optimizer`` settings the constructor cannot use, or a model without
    a layer map; the message names the value and what is allowed. Both a ValueError and a
    TypeError, as the checks were before; ``tools/train.py`` prints it as one ``error:`` line."""


def find_layer_map(model: nn.Module) -> nn.Module:
    """Return the module that owns the layer map: ``model`` itself if it has one, else its backbone.

    Raises:
        LayerDecayConfigError: neither the model nor ``model.backbone`` has ``layer_decay_id``
            and ``layer_decay_num_layers``.
    """
    if all(hasattr(model, method) for method in LAYER_MAP_METHODS):
        return model
    backbone = getattr(model, 'backbone', None)
    if backbone is None:
        raise LayerDecayConfigError(
            f'{type(model).__name__} has no backbone and no layer map; layer decay needs a '
            f'model.backbone (or a bare backbone) with methods {LAYER_MAP_METHODS}')
    missing = [method for method in LAYER_MAP_METHODS if not hasattr(backbone, method)]
    if missing:
        raise LayerDecayConfigError(
            f'backbone {type(backbone).__name__} has no layer map (missing {missing}); layer '
            f'decay needs a backbone with methods {LAYER_MAP_METHODS}, such as '
            'convnext_dense.ConvNeXt')
    return backbone


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Learning-rate decay by backbone depth (the official ConvNeXt rule), for any backbone.

    The backbone owns its layer map: ``backbone.layer_decay_id(name, decay_type, num_layers)``
    gives the layer id of a backbone parameter (``name`` relative to the backbone) and
    ``backbone.layer_decay_num_layers()`` the ``num_layers`` of the official recipes. The map is
    read from ``model.backbone``, or from the model itself when it has the methods (a bare
    backbone). Parameters outside the backbone (neck, heads) get id ``num_layers + 1``.

    Each parameter gets ``lr = base_lr * decay_rate ** (num_layers + 1 - layer_id)``, and
    ``weight_decay = 0`` if it is 1-D (norm weights, layer-scale gammas) or a bias, the
    optimizer's ``weight_decay`` otherwise. Parameters with ``requires_grad=False`` are left out.

    ``paramwise_cfg`` keys:

    - ``decay_rate`` (required): in (0, 1].
    - ``decay_type``: ``'layer_wise'`` (default; detection recipes) or ``'stage_wise'``
      (segmentation recipes).
    - ``num_layers``: optional, derived from the backbone when omitted (12 for ConvNeXt with a
      27-block third stage, 6 for 9 blocks). With ``layer_wise`` it must equal the derived value:
      the map numbers the third stage in groups of three blocks, so its ids end exactly at
      ``num_layers - 1``; another value would give two stages the same scale or skip scales.
      With ``stage_wise`` the backbone ids are fixed (0 for downsample layers, ``i + 1`` for stage
      ``i``) and ``num_layers`` only sets how far below the head the last stage trains, so any
      value at least the deepest stage id (4 for ConvNeXt) is allowed; a smaller one would put
      the last stage at or above the head's scale.
    - ``custom_keys``: ``{name_substring: dict(lr_mult=..., decay_mult=...)}`` with mmengine's
      matching (the longest key contained in the parameter name wins, ties alphabetical). The
      multipliers apply on top of the decay: ``lr *= lr_mult`` and ``weight_decay *= decay_mult``
      (1-D parameters and biases keep weight decay 0). A key contained in no parameter name is
      an error (mmengine ignores it, so a typo would silently do nothing).

    The optimizer is logged as one table at INFO (layer id, lr scale, weight decay, number of
    parameters); per-parameter ids at DEBUG.

    Args:
        optim_wrapper_cfg: The optim wrapper config, with ``optimizer`` (which must set ``lr``).
        paramwise_cfg: The keys above.

    Example:
        >>> optim_wrapper = dict(
        ...     type='AmpOptimWrapper',
        ...     constructor='convnext_dense.LayerDecayOptimizerConstructor',
        ...     paramwise_cfg=dict(decay_rate=0.8, decay_type='layer_wise', num_layers=12),
        ...     optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        self.decay_rate = self.paramwise_cfg['decay_rate']
        self.decay_type = self.paramwise_cfg.get('decay_type', 'layer_wise')
        self.num_layers = self.paramwise_cfg.get('num_layers')
        self.custom_keys = dict(self.paramwise_cfg.get('custom_keys', {}))
        # mmengine's order: longest key first, ties alphabetical.
        self._sorted_keys = sorted(sorted(self.custom_keys), key=len, reverse=True)

    def _validate_cfg(self) -> None:
        cfg = self.paramwise_cfg
        if not isinstance(cfg, dict):
            raise LayerDecayConfigError(
                f'paramwise_cfg must be a dict, got {type(cfg).__name__}')
        for key in cfg:
            if key not in PARAMWISE_KEYS:
                raise LayerDecayConfigError(
                    f"paramwise_cfg key '{key}' is not supported by "
                    f'LayerDecayOptimizerConstructor; allowed keys: {PARAMWISE_KEYS}')
        if 'decay_rate' not in cfg:
            raise LayerDecayConfigError("paramwise_cfg needs 'decay_rate', a number in (0, 1]")
        rate = cfg['decay_rate']
        if not is_number(rate):
            raise LayerDecayConfigError(
                f'paramwise_cfg decay_rate {rate!r} ({type(rate).__name__}) must be a Python int '
                'or float in (0, 1]')
        if not 0 < rate <= 1:
            raise LayerDecayConfigError(
                f'paramwise_cfg decay_rate {rate!r} is out of range (0, 1]')
        decay_type = cfg.get('decay_type', 'layer_wise')
        if decay_type not in DECAY_TYPES:
            raise LayerDecayConfigError(
                f'paramwise_cfg decay_type {decay_type!r} is not one of {DECAY_TYPES}')
        num_layers = cfg.get('num_layers')
        if num_layers is not None and (not is_int(num_layers) or num_layers < 1):
            raise LayerDecayConfigError(
                f'paramwise_cfg num_layers {num_layers!r} ({type(num_layers).__name__}) must be '
                'a positive Python int or omitted (derived from the backbone)')
        self._validate_custom_keys(cfg.get('custom_keys', {}))
        if self.base_lr is None:
            raise LayerDecayConfigError(
                'optimizer lr must be set: layer decay scales it per layer')
        for field, value in (('lr', self.base_lr), ('weight_decay', self.base_wd)):
            if value is not None and (not isinstance(value, numbers.Real)
                                      or isinstance(value, bool) or value < 0):
                raise LayerDecayConfigError(
                    f'optimizer {field} {value!r} must be a number >= 0 '
                    f'(got {type(value).__name__})')

    def _validate_custom_keys(self, custom_keys) -> None:
        if not isinstance(custom_keys, dict):
            raise LayerDecayConfigError(
                f'paramwise_cfg custom_keys must be a dict, got {type(custom_keys).__name__}')
        for key, fields in custom_keys.items():
            if not isinstance(key, str) or not isinstance(fields, dict):
                raise LayerDecayConfigError(
                    f'custom_keys entries must map a name substring to a dict, got {key!r}: '
                    f'{fields!r}')
            for field, value in fields.items():
                if field not in CUSTOM_KEY_FIELDS:
                    raise LayerDecayConfigError(
                        f"custom_keys['{key}'] field '{field}' is not supported; "
                        f'allowed fields: {CUSTOM_KEY_FIELDS}')
                if not is_number(value) or not 0 <= value < math.inf:
                    raise LayerDecayConfigError(
                        f"custom_keys['{key}'] {field} {value!r} must be a finite number >= 0")
            if 'decay_mult' in fields and self.base_wd is None:
                raise LayerDecayConfigError(
                    f"custom_keys['{key}'] sets decay_mult but the optimizer has no "
                    'weight_decay to multiply')

    def resolve_num_layers(self, layer_map: nn.Module) -> int:
        """``num_layers`` for this backbone: the configured value, checked, or the derived one."""
        derived = layer_map.layer_decay_num_layers()
        if self.num_layers is None:
            return derived
        owner = type(layer_map).__name__
        if self.decay_type == 'layer_wise' and self.num_layers != derived:
            raise LayerDecayConfigError(
                f'paramwise_cfg num_layers {self.num_layers} does not fit {owner}: its '
                f"layer_wise map has num_layers {derived}; set it to {derived} or omit it")
        if self.decay_type == 'stage_wise':
            ids = (layer_map.layer_decay_id(name, 'stage_wise', derived)
                   for name, _ in layer_map.named_parameters())
            deepest = max((i for i in ids if i <= derived), default=0)
            if self.num_layers < deepest:
                raise LayerDecayConfigError(
                    f'paramwise_cfg num_layers {self.num_layers} is too small for {owner}: '
                    f'stage_wise needs at least {deepest} (its deepest stage id), or omit it')
        return self.num_layers

    def _match_custom_key(self, name: str) -> Optional[str]:
        return next((key for key in self._sorted_keys if key in name), None)

    def _new_group(self, layer_id: int, decays: bool, key: Optional[str],
                   num_layers: int) -> dict:
        scale = self.decay_rate**(num_layers + 1 - layer_id)
        lr = scale * self.base_lr
        weight_decay = self.base_wd if decays else 0.
        if key is not None:
            lr = lr * self.custom_keys[key].get('lr_mult', 1.)
            if weight_decay is not None:
                weight_decay = weight_decay * self.custom_keys[key].get('decay_mult', 1.)
        group = dict(params=[], lr=lr, layer_id=layer_id, lr_scale=scale)
        if weight_decay is not None:
            group['weight_decay'] = weight_decay
        return group

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """Build the optim wrapper as mmengine does, its parameter groups as plain dicts.

        mmengine builds the optimizer from a config, so the groups would be ConfigDicts, which
        torch.compile cannot trace through an optimizer step: ``compile=True`` in a config
        failed at the first step.
        """
        wrapper = super().__call__(model)
        groups = wrapper.optimizer.param_groups
        groups[:] = [dict(group) for group in groups]
        return wrapper

    def add_params(self, params: List[dict], module: nn.Module, **kwargs) -> None:
        """Append one param group per (layer id, decay / no decay, custom key) to ``params``.

        Args:
            params: The list of param groups, extended in place.
            module: The model (or a bare backbone with a layer map).
        """
        self._check_custom_keys_match(module)
        layer_map = find_layer_map(module)
        num_layers = self.resolve_num_layers(layer_map)
        map_names = {id(param): name for name, param in layer_map.named_parameters()}
        logger = MMLogger.get_current_instance()
        groups: Dict[Tuple[int, bool, Optional[str]], dict] = {}
        frozen = 0
        for name, param in module.named_parameters():
            if not param.requires_grad:
                frozen += 1
                logger.debug(f'layer decay: {name} left out (requires_grad=False)')
                continue
            map_name = map_names.get(id(param))
            layer_id = (num_layers + 1 if map_name is None else
                        layer_map.layer_decay_id(map_name, self.decay_type, num_layers))
            if not isinstance(layer_id, int) or not 0 <= layer_id <= num_layers + 1:
                raise ValueError(
                    f'{type(layer_map).__name__}.layer_decay_id gave {name} layer id {layer_id!r}, '
                    f'not an int in 0..{num_layers + 1} for num_layers {num_layers}')
            # mmdet's and mmseg's rule: 0-D parameters (mmdet's Scale) decay, 1-D ones do not.
            decays = param.ndim != 1 and not (name == 'bias' or name.endswith('.bias'))
            key = self._match_custom_key(name)
            group_key = (layer_id, decays, key)
            if group_key not in groups:
                groups[group_key] = self._new_group(layer_id, decays, key, num_layers)
            groups[group_key]['params'].append(param)
            logger.debug(f'layer decay: {name} layer id {layer_id}, '
                         f"lr {groups[group_key]['lr']:.6g}, "
                         f"weight decay {groups[group_key].get('weight_decay')}")
        params.extend(groups.values())
        logger.info(self._table(groups, num_layers, frozen))

    def _check_custom_keys_match(self, module: nn.Module) -> None:
        names = [name for name, _ in module.named_parameters()]
        unmatched = [key for key in self.custom_keys if not any(key in name for name in names)]
        if not unmatched:
            return
        # One example name per top-level module shows the prefixes a key can use.
        examples = {name.split('.')[0]: name for name in reversed(names)}
        raise LayerDecayConfigError(
            f'paramwise_cfg custom_keys {unmatched} match no parameter of '
            f'{type(module).__name__}; a key applies to every parameter name containing it, and '
            f'names look like {sorted(examples.values())}')

    def _table(self, groups: dict, num_layers: int, frozen: int) -> str:
        tensors = sum(len(group['params']) for group in groups.values())
        lines = [
            f'Layer decay {self.decay_type}, decay_rate {self.decay_rate}, num_layers '
            f'{num_layers}, base lr {self.base_lr}: {tensors} parameter tensors in '
            f'{len(groups)} groups, {frozen} frozen left out',
            f"{'layer':>5} {'lr scale':>10} {'weight decay':>12} {'params':>6} {'elements':>10}"
            '  custom key'
        ]
        for (layer_id, _, key), group in sorted(groups.items(), key=lambda kv: (
                kv[0][0], not kv[0][1], kv[0][2] or '')):
            weight_decay = group.get('weight_decay', 'default')
            scale = group['lr_scale'] * (self.custom_keys[key].get('lr_mult', 1.) if key else 1.)
            numel = sum(param.numel() for param in group['params'])
            lines.append(f"{layer_id:>5} {scale:>10.4g} {weight_decay:>12} "
                         f"{len(group['params']):>6} {numel:>10}  {key or ''}".rstrip())
        return '\n'.join(lines)
