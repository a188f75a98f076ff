"""Check the data a config points at before a run starts, and explain malformed annotation files."""
import json
import os
import os.path as osp
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

from mmengine.config import Config

from .config import innermost_dataset

LOADERS_BY_MODE = {'train': ('train_dataloader', 'val_dataloader'), 'test': ('test_dataloader',)}
EVALUATORS_BY_MODE = {'train': 'val_evaluator', 'test': 'test_evaluator'}


class DataError(ValueError):
    """The data a config points at is missing, empty or malformed."""


def _datasets(cfg: Config, mode: str) -> Iterator[Tuple[str, dict]]:
    for loader_name in LOADERS_BY_MODE[mode]:
        loader = cfg.get(loader_name)
        if not loader or (loader_name == 'val_dataloader' and not cfg.get('val_cfg')):
            continue
        dataset, path = innermost_dataset(loader['dataset'], f'{loader_name}.dataset')
        yield path, dataset


def _join(root: str, path: str) -> str:
    return path if not root or osp.isabs(path) else osp.join(root, path)


def check_data_paths(cfg: Config, mode: str) -> None:
    """Raise :class:`DataError` naming the path when the data of ``mode`` is missing or empty."""
    if mode not in LOADERS_BY_MODE:
        raise ValueError(f"mode '{mode}' is not one of {sorted(LOADERS_BY_MODE)}")
    for where, dataset in _datasets(cfg, mode):
        root = dataset.get('data_root') or ''
        hint = (f'put the data there (README: "Data layout") or point {where}.data_root at it '
                f'with --cfg-options {where}.data_root=PATH')
        if root and not osp.isdir(root):
            raise DataError(f"data root '{root}' of {where} does not exist: {hint}")
        if root and not _has_files(root):
            raise DataError(f"data root '{root}' of {where} is empty: {hint}")
        ann_file = dataset.get('ann_file')
        if ann_file and not osp.isfile(_join(root, ann_file)):
            raise DataError(f"annotation file '{_join(root, ann_file)}' of {where} does not "
                            f'exist: {hint}')
        for key, prefix in (dataset.get('data_prefix') or {}).items():
            folder = _join(root, prefix)
            if prefix and not osp.isdir(folder):
                raise DataError(f"{key} folder '{folder}' of {where} does not exist: {hint}")
    for where, ann_file in _evaluator_ann_files(cfg, mode):
        if '://' not in ann_file and not osp.isfile(ann_file):
            raise DataError(f"annotation file '{ann_file}' of {where} does not exist: point it at "
                            f'the ground truth with --cfg-options {where}=PATH')


def _evaluator_ann_files(cfg: Config, mode: str) -> Iterator[Tuple[str, str]]:
    """``(where, path)`` of each ground-truth file the metrics of ``mode`` read (COCO metrics)."""
    name = EVALUATORS_BY_MODE[mode]
    evaluator = cfg.get(name)
    validates = cfg.get('val_cfg') and cfg.get('val_dataloader')
    if not evaluator or (mode == 'train' and not validates):
        return
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    for index, metric in enumerate(metrics):
        ann_file = metric.get('ann_file') if isinstance(metric, dict) else None
        if ann_file:
            where = name if len(metrics) == 1 else f'{name}[{index}]'
            yield f'{where}.ann_file', ann_file


def _has_files(folder: str) -> bool:
    return any(files for _, _, files in os.walk(folder))


PARSING_FUNCTIONS = ('load_data_list', 'parse_data_info', 'full_init')


def _annotation_file_in(traceback) -> Optional[str]:
    """The annotation file being parsed where the error was raised, if it was raised there."""
    found: List[str] = []
    while traceback is not None:
        frame = traceback.tb_frame
        frame_locals = frame.f_locals
        if 'pycocotools' in frame.f_code.co_filename and isinstance(
                frame_locals.get('annotation_file'), str):
            found.append(frame_locals['annotation_file'])
        owner = frame_locals.get('self')
        if frame.f_code.co_name in PARSING_FUNCTIONS and getattr(owner, 'ann_file', None):
            found.append(owner.ann_file)
        traceback = traceback.tb_next
    return found[-1] if found else None


@contextmanager
def explain_annotation_errors() -> Iterator[None]:
    """Re-raise errors from parsing an annotation file as :class:`DataError` naming the file."""
    try:
        yield
    except (json.JSONDecodeError, KeyError, TypeError, AssertionError, IndexError) as err:
        path = _annotation_file_in(err.__traceback__)
        if path is None:
            raise
        raise DataError(
            f"annotation file '{path}' is malformed ({type(err).__name__}: {err}). Detection "
            'expects COCO instances JSON (images, annotations with bbox / segmentation / '
            'category_id, categories); check or regenerate the file.') from err
