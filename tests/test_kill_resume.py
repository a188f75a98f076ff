"""A training run killed with SIGKILL, even while writing a checkpoint, resumes and finishes."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import convnext_dense.model_checkpoints  # noqa: F401  (weights_only loading of mmengine files)
from convnext_dense.extras.demo import generate_shapes_dataset

ROOT = Path(__file__).resolve().parents[1]
SEG_CONFIG = 'configs/demo/upernet_convnext-demo_shapes.py'
MAX_ITERS = 12


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('shapes')
    generate_shapes_dataset(root, seed=5, num_train=8, num_val=2)
    return root


def _train_command(work_dir, data_root, *extra):
    options = ['model.backbone.init_cfg=None', 'train_cfg.max_iters=%d' % MAX_ITERS, 'train_cfg.val_interval=100',
               # as the demo configs: mmengine removes the old checkpoint before the new one
               'default_hooks.checkpoint.interval=2', 'default_hooks.checkpoint.max_keep_ckpts=1',
               'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
               'train_dataloader.num_workers=0']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options.append(f'{loader}.dataset.data_root={data_root}/ade')
    return [sys.executable, str(ROOT / 'tools' / 'train.py'), SEG_CONFIG, '--work-dir',
            str(work_dir), *extra, '--cfg-options', *options]


def _kill_during_checkpoint_write(command, work_dir, timeout=300):
    """Start training and SIGKILL it the moment a checkpoint's temporary file appears."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if list(work_dir.glob('.tmp-*.part')) and list(work_dir.glob('iter_*.pth')):
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return process.returncode


def _assert_every_checkpoint_loads(work_dir):
    pointer = (work_dir / 'last_checkpoint').read_text().strip()
    assert Path(pointer).exists()
    for path in work_dir.glob('iter_*.pth'):
        checkpoint = torch.load(path, weights_only=True)
        assert 'state_dict' in checkpoint and 'optimizer' in checkpoint
    return pointer


@pytest.mark.slow
def test_sigkill_while_saving_then_resume_finishes(demo_data, tmp_path):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    returncode = _kill_during_checkpoint_write(_train_command(work_dir, demo_data), work_dir)
    assert returncode == -signal.SIGKILL, 'the run finished before it could be killed'
    pointer = _assert_every_checkpoint_loads(work_dir)
    leftovers = sorted(p.name for p in work_dir.glob('.tmp-*.part'))

    result = subprocess.run(_train_command(work_dir, demo_data, '--resume'), cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'Auto resumed from the latest checkpoint {pointer}' in result.stdout + result.stderr
    assert (work_dir / f'iter_{MAX_ITERS}.pth').exists()
    assert _assert_every_checkpoint_loads(work_dir).endswith(f'iter_{MAX_ITERS}.pth')
    # The killed save's temporary file is cleaned up by the resumed run.
    assert not list(work_dir.glob('.tmp-*.part'))
    if leftovers:
        assert 'interrupted: ' + ', '.join(leftovers) in result.stdout + result.stderr
