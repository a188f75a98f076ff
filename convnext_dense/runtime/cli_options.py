"""The command-line options of tools/train.py and tools/test.py, each applied to a config.

One code path serves mmdet and mmseg: the config's ``default_scope`` decides. On a CPU-only
machine, distributed runs use gloo.
"""
import argparse
import os
import os.path as osp
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Type

import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log

from ..model.archs import is_int
from .config import innermost_dataset, load_config, task_scope

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
# Beside the folders --show-dir and mmseg's --out write into (``.<folder>.written_by_test_py``):
# a later run may replace what they hold. Not inside: mmseg's confusion_matrix.py opens every
# file of the --out folder as a label map.
OUTPUT_MARKER = '.written_by_test_py'


class KeyValueAction(DictAction):
    """mmengine's ``--cfg-options`` parsing, with an item lacking ``=`` named as a usage error
    (mmengine's own fails with a traceback: "not enough values to unpack"), and a single value
    keeping the spaces inside it (mmengine drops every space: ``data_root='/my data/coco/'``
    became ``'/mydata/coco/'``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [value for value in values if '=' not in value]
        if bad:
            parser.error(f'{option_string} takes key=value items; {bad[0]!r} has no "=" '
                         '(e.g. train_cfg.max_iters=1000)')
        super().__call__(parser, namespace, values, option_string)

    @staticmethod
    def _parse_iterable(val: str):
        text = val.strip().strip('\'"')
        if text.startswith(('(', '[')) or ',' in text:
            return DictAction._parse_iterable(val)  # a list or tuple, as mmengine reads it
        return DictAction._parse_int_float_bool(text.strip())


def add_common_arguments(parser: argparse.ArgumentParser, work_dir_help: str) -> None:
    """The arguments tools/train.py and tools/test.py share: config, work dir, overrides, launch."""
    parser.add_argument('config', help='config file, or mmdet::/mmseg:: name')
    parser.add_argument('--work-dir', help=work_dir_help)
    parser.add_argument('--cfg-options', nargs='+', action=KeyValueAction,
                        help='override config entries, key=value')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none')
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0)


def positive_int(text: str) -> int:
    """An argparse ``type``: an int >= 1, else an error naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return value


def config_from_args(args: argparse.Namespace) -> Config:
    """Load ``args.config`` with ``--cfg-options`` and set its work dir (the common arguments)."""
    set_local_rank_env(args.local_rank)
    cfg = load_config(args.config, args.cfg_options)
    set_work_dir(cfg, args.config, args.work_dir)
    return cfg


def set_work_dir(cfg: Config, config_path: str, work_dir: Optional[str]) -> None:
    """Use ``work_dir``, else the config's, else ``work_dirs/<config name>`` as mmdet does."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])
    _refuse_file(cfg.work_dir, 'work dir')


def _refuse_file(path: str, option: str) -> None:
    """An ``option`` that names a folder must not name an existing file."""
    if osp.isfile(path):
        raise ValueError(f"{option} '{path}' is an existing file; it must be a folder")


def _claim_output_folder(path: str, option: str, what: str,
                         earlier: Tuple[str, ...] = ()) -> None:
    """Make ``path`` the ``option`` folder ``what`` is written into, marked as such.

    An empty or missing folder passes, and so does one an earlier run marked (``OUTPUT_MARKER``
    beside it, see :func:`output_marker`; inside it, as runs before 2026-12-03 left it) or
    holding only the ``earlier`` entries: that run's outputs are removed first (on rank 0), so
    the folder never mixes two runs' results. A folder holding other files (a dataset's images,
    say, which ``what`` could overwrite) is refused.

    Raises:
        ValueError: ``path`` is a file, or a folder holding other files.
    """
    _refuse_file(path, option)
    marked = osp.isfile(output_marker(path)) or osp.isfile(osp.join(path, OUTPUT_MARKER))
    if osp.isdir(path) and not marked:
        found = sorted(set(os.listdir(path)) - set(earlier))
        if found:
            raise ValueError(
                f"{option} '{path}' already holds files ({', '.join(found[:4])}"
                f"{', ...' if len(found) > 4 else ''}); {what} written there could overwrite "
                f'them. Pass an empty or new folder to {option}')
    if osp.isdir(path) and int(os.environ.get('RANK', 0)) == 0:
        _remove_earlier_outputs(path, option)
    os.makedirs(path, exist_ok=True)
    with open(output_marker(path), 'w') as marker:
        marker.write(f'tools/test.py {option} writes into {osp.basename(osp.abspath(path))}/; a '
                     'later run replaces what is there\n')


def output_marker(path: str) -> str:
    """The file that marks ``path`` as a folder tools/test.py writes into: a hidden file beside
    it, ``.<folder name>.written_by_test_py``."""
    folder = osp.abspath(path)
    return osp.join(osp.dirname(folder), f'.{osp.basename(folder)}{OUTPUT_MARKER}')


def _remove_earlier_outputs(path: str, option: str) -> None:
    if osp.isfile(osp.join(path, OUTPUT_MARKER)):  # an earlier run's marker inside
        os.remove(osp.join(path, OUTPUT_MARKER))
    stale = sorted(os.listdir(path))
    for name in stale:
        entry = osp.join(path, name)
        if osp.isdir(entry) and not osp.islink(entry):
            shutil.rmtree(entry)
        else:
            os.remove(entry)
    if stale:
        print_log(f"{option} '{path}': removed the earlier run's {len(stale)} entries "
                  f"({', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}) so the folder "
                  'holds this run\'s results only', logger='current')


def set_launcher(cfg: Config, launcher: str) -> None:
    """Record the launcher; on CPU-only machines start the gloo process group ourselves."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher '{launcher}' is not one of {LAUNCHERS}")
    cfg.launcher = launcher
    if launcher != 'none' and not torch.cuda.is_available():
        _init_cpu_distributed(cfg, launcher)


def _init_cpu_distributed(cfg: Config, launcher: str) -> None:
    # mmengine's init_dist calls torch.cuda.set_device, which a CPU-only torch cannot do.
    import torch.distributed as dist
    if launcher != 'pytorch':
        raise ValueError(f"launcher '{launcher}' needs GPUs; on a CPU-only machine use "
                         "'pytorch' (tools/dist_train.sh)")
    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    # DDP takes no device_ids for a CPU module.
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
                                 broadcast_buffers=False,
                                 find_unused_parameters=cfg.get('find_unused_parameters', False))
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')


def set_amp(cfg: Config, enable: bool) -> None:
    """``--amp``: switch the optimizer wrapper to mmengine's AmpOptimWrapper."""
    if enable:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'


def set_auto_scale_lr(cfg: Config, enable: bool) -> None:
    """``--auto-scale-lr``: scale the lr by the real batch size over ``base_batch_size``."""
    if not enable:
        return
    base = (cfg.get('auto_scale_lr') or {}).get('base_batch_size')
    if not is_int(base) or base < 1:
        raise ValueError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=N) in the '
                         'config, N the total batch size the lr was tuned for (a positive int); '
                         f'got {base!r}')
    cfg.auto_scale_lr.enable = True


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume`` (latest checkpoint in the work dir) or ``--resume PATH``."""
    if resume is None:
        return
    if resume != 'auto' and '://' not in resume and not osp.isfile(resume):
        raise FileNotFoundError(f"--resume '{resume}' is not a file: give a checkpoint of the "
                                'run to continue, or --resume alone for the latest one of the '
                                'work dir')
    cfg.resume = True
    cfg.load_from = None if resume == 'auto' else resume


def protect_earlier_run(cfg: Config, restart: bool = False) -> Optional[str]:
    """Refuse to train afresh into a work dir that holds an earlier run's checkpoints.

    mmengine would overwrite them one by one as the new run saves (``last_checkpoint`` at the
    first save), and leave those the new run does not reach: a later ``--resume`` could then
    continue the old run. Resuming that run (``--resume``, ``--resume PATH`` with PATH in the
    work dir, or ``resume=True`` in the config) passes; resuming a checkpoint from elsewhere into
    it does not. With ``restart`` (the user chose to start over there) the earlier run's
    checkpoints are moved into a folder of their own first (:func:`set_aside_earlier_run`).

    Returns:
        The folder the earlier checkpoints were moved to, if any.

    Raises:
        ValueError: the work dir holds ``last_checkpoint`` or ``*.pth`` files; the message says
            what to pass instead.
    """
    if not osp.isdir(cfg.work_dir):
        return None
    resume_from = cfg.get('load_from') if cfg.get('resume') else None
    if cfg.get('resume') and (not resume_from or '://' in resume_from or osp.abspath(
            osp.dirname(resume_from)) == osp.abspath(cfg.work_dir)):
        return None
    earlier = _checkpoint_files(cfg.work_dir)
    if not earlier:
        return None
    if restart:
        return set_aside_earlier_run(cfg.work_dir, earlier)
    listed = f'{", ".join(earlier[:4])}{", ..." if len(earlier) > 4 else ""}'
    if resume_from:
        raise ValueError(
            f'work dir {cfg.work_dir} holds the checkpoints of another run ({listed}): resuming '
            f'{resume_from} there would overwrite them as it saves. Pass another --work-dir, '
            '--resume alone to continue the run of this work dir, or --restart to resume '
            f'{resume_from} there anyway')
    raise ValueError(
        f'work dir {cfg.work_dir} holds the checkpoints of an earlier run ({listed}): training '
        'afresh would overwrite them. Pass --resume to continue that run, another --work-dir, '
        'or --restart to start over there anyway')


def set_aside_earlier_run(work_dir: str, names: Sequence[str]) -> Optional[str]:
    """Move the checkpoint files ``names`` of ``work_dir`` into ``work_dir/earlier_run_<time>``
    (rank 0 only; a rename, nothing copied), so a restarted run never mixes with the old one.

    Returns:
        The folder they went to (None on other ranks).
    """
    if int(os.environ.get('RANK', 0)) != 0:
        return None
    stamp = time.strftime('%Y%m%d_%H%M%S')
    folder = osp.join(work_dir, f'earlier_run_{stamp}')
    suffix = 1
    while osp.exists(folder):
        suffix += 1
        folder = osp.join(work_dir, f'earlier_run_{stamp}_{suffix}')
    os.makedirs(folder)
    for name in names:
        os.replace(osp.join(work_dir, name), osp.join(folder, name))
    print_log(f'--restart: the earlier run\'s checkpoints ({len(names)} file(s)) moved to '
              f'{folder}', logger='current')
    return folder


def _checkpoint_files(work_dir: str) -> List[str]:
    """The names of ``last_checkpoint`` and the ``*.pth`` files in ``work_dir``, sorted."""
    return sorted(name for name in os.listdir(work_dir)
                  if name == 'last_checkpoint' or name.endswith('.pth'))


def set_local_rank_env(local_rank: int) -> None:
    """torch.distributed.launch passes ``--local-rank``; torchrun sets LOCAL_RANK itself."""
    os.environ.setdefault('LOCAL_RANK', str(local_rank))


def enable_tta(cfg: Config) -> None:
    """``--tta``: wrap the model in the config's ``tta_model`` and test with ``tta_pipeline``."""
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise ValueError('--tta needs tta_model and tta_pipeline in the config; '
                         f'this {task_scope(cfg)} config defines '
                         f"{[k for k in ('tta_model', 'tta_pipeline') if k in cfg] or 'neither'}")
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    dataset, _ = innermost_dataset(cfg.test_dataloader.dataset)
    dataset.pipeline = cfg.tta_pipeline


def enable_show_dir(cfg: Config, show_dir: str, limit: Optional[int] = None) -> None:
    """``--show-dir``: draw predictions of the test set into ``show_dir``.

    mmdet writes the drawings straight into it, named as the test images; mmseg under its
    ``vis_data/``. A folder holding anything else (the test images, say) is refused, unless
    an earlier run marked it (:func:`output_marker`).

    Args:
        cfg: The test config, changed in place.
        show_dir: Folder for the drawings.
        limit: ``--show-limit``: draw only the first ``limit`` test images (whole batches, see
            :class:`~convnext_dense.runtime.hooks.ShowLimitHook`); None draws them all.

    Raises:
        ValueError: no visualization hook, ``show_dir`` is a file or holds other files, or
            ``limit`` is no int >= 1.
    """
    _check_show_limit(limit)
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise ValueError('--show-dir needs default_hooks.visualization in the config')
    detection = task_scope(cfg) == 'mmdet'
    # mmdet's drawings look like the images they are named after: the marker says "ours".
    _claim_output_folder(show_dir, '--show-dir', 'the drawings',
                         earlier=() if detection else ('vis_data',))
    hooks.visualization.draw = True
    if detection:
        hooks.visualization.test_out_dir = osp.abspath(show_dir)
    else:
        cfg.visualizer.save_dir = osp.abspath(show_dir)
        hooks.visualization.interval = 1  # mmseg draws every `interval`-th batch only
    _add_show_limit(cfg, limit)


def enable_show(cfg: Config, wait_time: float = 2.0, limit: Optional[int] = None) -> None:
    """``--show`` (and ``--wait-time``), as in mmdet's and mmseg's ``tools/test.py``: show each
    drawn test image in a window for ``wait_time`` seconds (matplotlib's; nothing is shown
    where it has no display).

    Raises:
        ValueError: no visualization hook, ``wait_time`` < 0, or ``limit`` is no int >= 1.
    """
    _check_show_limit(limit)
    if not wait_time >= 0:
        raise ValueError(f'--wait-time must be >= 0 seconds, got {wait_time!r}')
    if wait_time == 0 and not _has_window():
        raise ValueError("--wait-time 0 waits for a key press in each image's window, and "
                         'matplotlib has no window here (a non-interactive backend: no display); '
                         'give seconds, or --show-dir to write the drawings')
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise ValueError('--show needs default_hooks.visualization in the config')
    hooks.visualization.update(draw=True, show=True, wait_time=wait_time)
    if task_scope(cfg) == 'mmseg':
        hooks.visualization.interval = 1  # mmseg draws every `interval`-th batch only
    _add_show_limit(cfg, limit)


def _has_window() -> bool:
    import matplotlib.pyplot as plt
    return plt.get_backend().lower() not in ('agg', 'cairo', 'pdf', 'pgf', 'ps', 'svg',
                                             'template')


def _check_show_limit(limit: Optional[int]) -> None:
    if limit is not None and (not is_int(limit) or limit < 1):
        raise ValueError(f'--show-limit must be an int >= 1 (test images to draw), got {limit!r}')


def _add_show_limit(cfg: Config, limit: Optional[int]) -> None:
    hook = dict(type='convnext_dense.ShowLimitHook', limit=limit)
    hooks = list(cfg.get('custom_hooks') or [])
    if limit is not None and hook not in hooks:
        cfg.custom_hooks = hooks + [hook]


def add_result_dump(cfg: Config, out: str) -> None:
    """``--out``: keep raw predictions (mmdet: a pickle file; mmseg: a directory of PNGs).

    Raises:
        ValueError: mmdet: ``out`` is no .pkl name or is a folder; mmseg: ``out`` is a file or
            a folder that holds files of something else (the PNGs, named as the images, would
            replace them).
    """
    if task_scope(cfg) == 'mmdet':
        if not out.endswith(('.pkl', '.pickle')):
            raise ValueError(f"--out '{out}' must end with .pkl or .pickle for detection results")
        if osp.isdir(out):
            raise ValueError(f"--out '{out}' is an existing folder; it must name a .pkl file")
        evaluators = cfg.test_evaluator
        evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) else [evaluators]
        cfg.test_evaluator = evaluators + [dict(type='DumpDetResults', out_file_path=out)]
    else:
        # mmseg's IoUMetric creates output_dir on rank 0 only, yet every rank writes its PNGs
        # there: a rank that gets there first would fail. Each rank makes it here.
        _claim_output_folder(out, '--out', 'the predicted PNGs')
        cfg.test_evaluator.output_dir = out
        cfg.test_evaluator.keep_results = True


def configured(build: Callable[[], Config]) -> Optional[Config]:
    """The config ``build`` returns, or None after one ``error: ...`` line (no traceback) when
    a file is missing or an option does not fit the config (``FileNotFoundError``,
    ``ValueError``): the mistakes tools/train.py and tools/test.py find before anything runs."""
    try:
        return build()
    except (FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return None


def wrote(paths: Sequence[Path]) -> str:
    """What a drawing tool prints: the file it wrote, or how many and in which folder."""
    if len(paths) == 1:
        return f'wrote {paths[0]}'
    return f'wrote {len(paths)} drawings to {paths[0].parent}'


def exit_code(action: Callable[[], Optional[str]],
              errors: Tuple[Type[BaseException], ...] = (FileNotFoundError, ValueError)) -> int:
    """Run a tool's ``action``: print the line it returns, if any (exit code 0), or ``error: ...``
    for the errors a user can fix, without a traceback (exit code 1)."""
    try:
        message = action()
    except errors as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    if message is not None:
        print(message)
    return 0
