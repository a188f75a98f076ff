"""``swap_backbone``: put ConvNeXt into an mmdet / mmseg config and keep the rest working."""
import copy
import os.path as osp
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from mmengine.config import Config

from ..atomic_files import write_bytes
from ..model.archs import resolve_arch
from . import recipe as recipes
from .consumers import check_no_own_backbone, find_consumers
from .errors import SwapRefused
from .mapping import map_outputs
from .passthrough import neck_passthrough, passthrough_consumers
from .probe import probe_backbone
from .render import render_config
from .source import Source, load_source
from .verify import cascade_error, neck_error

# The package, and its checkpoint switch (safe, strict loading in init_detector / init_model).
CUSTOM_IMPORTS = ('convnext_dense', 'convnext_dense.model_checkpoints')


@dataclass(frozen=True)
class SwapPlan:
    """What a swap changes: the delta over the source config and a line per decision.

    Attributes:
        source: The loaded source config, what ``_base_`` names, and its scope.
        delta: The config delta (``_delete_=True`` on the dicts it replaces).
        notes: Human-readable lines, written as comments at the top of the delta file.
    """
    source: Source
    delta: Dict[str, Any]
    notes: Tuple[str, ...]

    def apply(self) -> Config:
        """The source config with the delta merged in, as mmengine merges ``_base_``."""
        merged = Config._merge_a_into_b(copy.deepcopy(self.delta),
                                        self.source.cfg._cfg_dict.to_dict())
        return Config(merged)

    def to_text(self, out_file: Optional[str] = None) -> str:
        """The delta as a config file inheriting from the source.

        Args:
            out_file: Where the text will live; a file source is then named relative to it.

        Raises:
            ValueError: the source config has no file to inherit from.
        """
        base = self.source.base
        if base is None:
            raise ValueError('the source Config has no filename, so a delta cannot name it in '
                             "_base_; load it with Config.fromfile or pass its path")
        if '::' not in base and out_file is not None:
            base = osp.relpath(base, osp.dirname(osp.abspath(out_file)))
        return render_config({'_base_': base, **self.delta}, self.notes)

    def dump(self, out_file: str) -> None:
        """Write :meth:`to_text` to ``out_file`` atomically (a new file, then a rename).

        Raises:
            ValueError: ``out_file`` is the source config itself.
        """
        check_out_file(self.source.cfg.filename, out_file)
        write_bytes(out_file, self.to_text(out_file).encode('utf-8'))


def check_out_file(source_file: Optional[str], out_file: str) -> None:
    """Refuse an output the delta cannot live in: a config the source is, or inherits from.

    Args:
        source_file: The source config's file, or None when it has none.
        out_file: Where the delta is to be written.

    Raises:
        ValueError: ``out_file`` is a folder or not a ``.py`` file (mmengine would read a
            ``.yaml`` / ``.json`` name in that format), or is ``source_file`` or one of the files
            in its ``_base_`` chain (the user's config would be lost and the delta would inherit
            from itself).
    """
    if osp.isdir(out_file):
        raise ValueError(f"out file '{out_file}' is a folder: give the config file to write")
    if osp.splitext(out_file)[1] != '.py':
        raise ValueError(f"out file '{out_file}' is not a .py file: the delta is a Python config "
                         '(mmengine reads .yaml / .json names in those formats)')
    if source_file is None or not osp.exists(out_file):
        return
    for config in _config_chain(source_file):
        if osp.samefile(config, out_file):
            what = ('the source config' if config == source_file else
                    f'a config the source {source_file} inherits from,')
            raise ValueError(f"out file '{out_file}' is {what} {config}: writing the delta there "
                             'would replace it and make it inherit from itself; choose another '
                             'file name')


def _config_chain(config_file: str) -> List[str]:
    """``config_file`` and the local files of its ``_base_`` chain (``pkg::`` configs left out)."""
    chain, pending = [], [config_file]
    while pending:
        path = pending.pop()
        if not osp.isfile(path) or any(osp.samefile(path, seen) for seen in chain):
            continue
        chain.append(path)
        try:
            bases = Config._get_base_files(path)
        except Exception:  # noqa: BLE001  (loading the config reports a broken file better)
            continue
        pending += [osp.join(osp.dirname(path), base) for base in bases if '::' not in base]
    return chain


def _split_path(path: str) -> Tuple[str, Optional[int]]:
    """'model.neck[0]' -> ('neck', 0); 'model.decode_head' -> ('decode_head', None)."""
    match = re.fullmatch(r'model\.(\w+)(?:\[(\d+)\])?', path)
    return match.group(1), (int(match.group(2)) if match.group(2) is not None else None)


def _model_delta(model: Dict, updates: Dict[str, Dict]) -> Dict[str, Any]:
    """Consumer updates as model-level delta entries; a list is written whole (lists replace)."""
    delta: Dict[str, Any] = {}
    for path, fields in updates.items():
        if not fields:
            continue
        key, index = _split_path(path)
        if index is None:
            delta[key] = dict(fields)
        else:
            items = delta.setdefault(key, copy.deepcopy(list(model[key])))
            items[index].update(fields)
    return delta


def _find_model(source: Source) -> Dict:
    model = source.cfg.get('model')
    if not isinstance(model, dict) or not isinstance(model.get('backbone'), dict):
        where = next((f'model.{k}.backbone' for k, v in (model or {}).items()
                      if isinstance(v, dict) and 'backbone' in v), None)
        raise SwapRefused('model.backbone', 'is missing' + (
            f' (the backbone is at {where}: wrapped models such as trackers and semi-supervised '
            'detectors are not supported)' if where else ''))
    return model.to_dict() if hasattr(model, 'to_dict') else copy.deepcopy(dict(model))


def _custom_imports(cfg: Config) -> Dict:
    imports = (cfg.get('custom_imports') or {}).get('imports', [])
    # mmengine takes one module name or a list (mask2former's configs give 'mmdet.models').
    imports = [imports] if isinstance(imports, str) else list(imports)
    imports += [name for name in CUSTOM_IMPORTS if name not in imports]
    return dict(imports=imports, allow_failed_imports=False)


def _recipe_delta(source: Source, notes: List[str]) -> Dict[str, Any]:
    optim_wrapper = source.cfg.get('optim_wrapper') or {}
    delta = dict(optim_wrapper=recipes.optim_wrapper_delta(optim_wrapper, source.scope))
    old_lr = (optim_wrapper.get('optimizer') or {}).get('lr')
    schedulers = recipes.scaled_schedulers(source.cfg.get('param_scheduler'), old_lr)
    if schedulers is not None:
        delta['param_scheduler'] = schedulers
    decay = recipes.DECAY[source.scope]
    scaled = f'; scheduler eta_min scaled by {recipes.LR} / {old_lr}' if schedulers else ''
    notes.append(f'Recipe: AdamW lr {recipes.LR}, weight decay 0.05, {decay["decay_type"]} lr '
                 f'decay {decay["decay_rate"]}{scaled}.')
    return delta


def plan_swap(cfg: Union[str, Config],
              arch: Union[str, Dict] = 'base',
              pretrained: Optional[str] = recipes.OFFICIAL_22K,
              recipe: bool = True) -> SwapPlan:
    """Work out the delta that puts ConvNeXt into ``cfg``; arguments as :func:`swap_backbone`.

    Returns:
        The plan: ``.apply()`` gives the merged config, ``.dump(path)`` writes the delta file.
    """
    resolve_arch(arch)
    if not isinstance(recipe, bool):
        raise TypeError(f'recipe must be True or False, got {recipe!r}')
    if pretrained is not None and not isinstance(pretrained, str):
        raise TypeError(f"pretrained must be '22k', a checkpoint path/URL, 'none' or None, "
                        f'got {pretrained!r}')
    checkpoint = recipes.weights_for(arch, pretrained)
    source = load_source(cfg)
    model = _find_model(source)
    check_no_own_backbone(model)
    old = model['backbone']
    feeds = probe_backbone(old, source.scope)
    consumers = find_consumers(model, feeds, source.scope)
    if isinstance(model.get('neck'), dict):
        through, num_neck_outputs = neck_passthrough(model['neck'], feeds, source.scope)
        consumers += passthrough_consumers(model, through, num_neck_outputs, feeds, source.scope)
    check_strides = source.scope == 'mmdet'
    mapping = map_outputs(consumers, feeds, arch, check_strides)
    if neck_error(model, mapping, source.scope):
        # The neck needs every old output in place: give it all of them, unread ones included.
        mapping = map_outputs(consumers, feeds, arch, check_strides, keep_all=True)
        error = neck_error(model, mapping, source.scope)
        if error:
            raise SwapRefused('model.neck', f'fails on ConvNeXt features: {error}')
    failed_head = cascade_error(model, mapping, source.scope)
    if failed_head:
        old_strides = sorted({feeds.strides[feeds.stages.index(s)] for s in mapping.out_indices})
        raise SwapRefused(failed_head[0], f'fails on ConvNeXt features: {failed_head[1]} (the '
                          f'cascade combines maps that had strides {old_strides} in the old '
                          f'backbone and have {sorted(set(mapping.out_strides))} in ConvNeXt)')

    old_channels = [feeds.channels[feeds.stages.index(s)] for s in mapping.out_indices]
    name = arch if isinstance(arch, str) else 'custom'
    notes = [f'{old.get("type")} -> ConvNeXt-{name}, written by convnext_dense.swap_backbone.',
             f'Backbone stages read: {list(mapping.out_indices)}, channels {old_channels} -> '
             f'{list(mapping.out_channels)}.']
    notes += [f'{path}: ' + ', '.join(f'{k} -> {v!r}' for k, v in fields.items())
              for path, fields in mapping.updates.items() if fields]
    backbone = dict(_delete_=True, type='convnext_dense.ConvNeXt', arch=arch,
                    out_indices=mapping.out_indices)
    if old.get('in_channels', 3) != 3:
        backbone['in_channels'] = old['in_channels']
    if checkpoint:
        backbone['init_cfg'] = dict(type='Pretrained', checkpoint=checkpoint)
    model_delta = {'backbone': backbone, **_model_delta(model, mapping.updates)}
    if model.get('pretrained') is not None:
        model_delta['pretrained'] = None  # mmseg would hand it to the backbone as an argument
    normalization = recipes.normalization_delta(model.get('data_preprocessor'))
    if checkpoint and normalization:
        model_delta['data_preprocessor'] = normalization
        notes.append('model.data_preprocessor: ImageNet RGB mean / std, as the weights expect.')
    notes.append(f'Weights: {checkpoint}' if checkpoint else 'No pretrained weights.')
    delta = dict(custom_imports=_custom_imports(source.cfg), model=model_delta)
    if mapping.unread:
        # An output nobody reads leaves its LayerNorm without gradient; DDP must allow that.
        delta['find_unused_parameters'] = True
        notes.append(f'model.neck indexes its inputs by position: stages {list(mapping.unread)} '
                     'are output unread, so find_unused_parameters = True.')
    if recipe:
        delta.update(_recipe_delta(source, notes))
    return SwapPlan(source, delta, tuple(notes))


def swap_backbone(cfg: Union[str, Config],
                  arch: Union[str, Dict] = 'base',
                  pretrained: Optional[str] = recipes.OFFICIAL_22K,
                  recipe: bool = True) -> Config:
    """Return ``cfg`` with its backbone replaced by ``convnext_dense.ConvNeXt``.

    The old backbone is built and run once to read the channels, strides and stages of what it
    outputs; the modules that read those outputs (the first neck, or the heads of a model
    without a neck) get their ``in_channels`` (and ``c1_in_channels``-like fields, ``in_index``,
    ``start_level``) rewritten from ConvNeXt's declared ``out_channels``, and ConvNeXt outputs
    exactly the stages they read.

    Args:
        cfg: Config path, ``'mmdet::…'`` / ``'mmseg::…'`` name, or a loaded ``Config``.
        arch: ConvNeXt arch ('tiny', 'small', 'base', 'large', 'xlarge') or
            ``dict(depths=..., channels=...)``.
        pretrained: ``'22k'`` for the official ImageNet-22k weights of ``arch``, a checkpoint
            path / URL / hub id, or ``None`` (or ``'none'``) for no weights; the keywords in
            any case. With weights the data preprocessor gets the ImageNet RGB mean and std
            they expect.
        recipe: Use the ConvNeXt fine-tuning recipe: AdamW (lr 1e-4, weight decay 0.05) with
            ``convnext_dense.LayerDecayOptimizerConstructor``, layer-wise decay 0.8 for
            detection and stage-wise decay 0.9 for segmentation; absolute ``eta_min`` of the
            lr schedulers scaled to the new lr. Otherwise the optimizer is left as it is.

    Returns:
        The merged config, ready for ``Runner.from_cfg``. :func:`plan_swap` returns the delta
        itself and ``tools/swap_backbone.py`` writes it as a file inheriting from ``cfg``.

    Raises:
        SwapRefused: the model cannot be mapped; ``error.field`` names the field.
        ValueError, TypeError: bad ``arch``, ``pretrained`` (a bare word that is neither a
            keyword nor a checkpoint) or ``recipe``.

    Example:
        >>> cfg = swap_backbone('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', arch='tiny')
        >>> cfg.model.backbone.out_indices, cfg.model.neck.in_channels
        ((1, 2, 3), [192, 384, 768])
    """
    return plan_swap(cfg, arch, pretrained, recipe).apply()
