"""tools/dist_train.sh and tools/dist_test.sh run two CPU processes (gloo) and merge results."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convnext_dense.runtime import run
from convnext_dense.extras.demo import generate_shapes_dataset

ROOT = Path(__file__).resolve().parents[1]
SEG_CONFIG = 'configs/demo/upernet_convnext-demo_shapes.py'
NUM_VAL = 5  # odd on purpose: the two ranks get different shares


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('shapes')
    generate_shapes_dataset(root, seed=3, num_train=8, num_val=NUM_VAL)
    return root


def _run(script, *args, env_extra=None):
    env = dict(os.environ, PYTHON=sys.executable, PORT=_free_port(), OMP_NUM_THREADS='1')
    env.update(env_extra or {})
    result = subprocess.run(['bash', str(ROOT / 'tools' / script), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, _why_failed(log)
    return log


def _why_failed(log: str) -> str:
    """The end of the log, plus what any rank said about dying (torchrun interleaves ranks)."""
    dying = [line for line in log.splitlines()
             if 'terminate called' in line or 'Error' in line or line.startswith('[rank')]
    return '\n'.join(dying[-40:]) + '\n--- end of log ---\n' + log[-3000:]


def _seg_data_options(root):
    options = ['model.backbone.init_cfg=None']  # no pretrained demo backbone in the tests
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options.append(f'{loader}.dataset.data_root={root}/ade')
    return options


@pytest.mark.parametrize('script, args', [('dist_train.sh', 'CONFIG GPUS'),
                                          ('dist_test.sh', 'CONFIG CHECKPOINT GPUS'),
                                          ('torchrun.sh', 'NPROC TOOL.py'),
                                          ('slurm_train.sh', 'PARTITION JOB_NAME CONFIG WORK_DIR'),
                                          ('slurm_test.sh', 'PARTITION JOB_NAME CONFIG CHECKPOINT'),
                                          ('slurm_run.sh', 'PARTITION JOB_NAME TOOL.py')])
def test_launchers_explain_themselves(script, args):
    run_script = lambda *a: subprocess.run(['bash', str(ROOT / 'tools' / script), *a],
                                           capture_output=True, text=True, timeout=60)
    shown = run_script('--help')
    assert shown.returncode == 0 and f'tools/{script} {args}' in shown.stdout
    assert not shown.stdout.startswith('!') and '#' not in shown.stdout.splitlines()[0]
    missing = run_script()
    assert missing.returncode == 2 and f'tools/{script} {args}' in missing.stderr


@pytest.mark.parametrize('script, args', [('torchrun.sh', ['two', 'train.py']),
                                          ('dist_train.sh', [SEG_CONFIG, '0']),
                                          ('dist_train.sh', ['2', SEG_CONFIG])])  # swapped
def test_a_process_count_that_is_no_positive_integer_is_named(script, args):
    result = subprocess.run(['bash', str(ROOT / 'tools' / script), *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith('error: the number of processes must be a positive '
                                    'integer, got ')


def _fake_srun(tmp_path) -> Path:
    """A `srun` that records its arguments, one per line, in $SRUN_LOG."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text('#!/usr/bin/env bash\nprintf \'%s\\n\' "$@" > "$SRUN_LOG"\n')
    srun.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize('script, tool, expected_tail', [
    ('slurm_train.sh', 'train.py', ['CONFIG.py', '--work-dir=work_dirs/job', '--amp']),
    ('slurm_test.sh', 'test.py', ['CONFIG.py', 'CKPT.pth', '--amp']),
])
def test_slurm_launchers_hand_srun_the_allocation_and_the_tool(tmp_path, script, tool,
                                                               expected_tail):
    log = tmp_path / 'srun.log'
    env = dict(os.environ, PATH=f'{_fake_srun(tmp_path)}:{os.environ["PATH"]}',
               SRUN_LOG=str(log), PYTHON='/opt/py/bin/python', GPUS='16',
               SRUN_ARGS='--time=1:00:00 --qos=high')
    env.pop('GPUS_PER_NODE', None)
    env.pop('CPUS_PER_TASK', None)
    second = 'work_dirs/job' if script == 'slurm_train.sh' else 'CKPT.pth'
    result = subprocess.run(['bash', str(ROOT / 'tools' / script), 'gpu', 'job', 'CONFIG.py',
                             second, '--amp'], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        '-p', 'gpu', '--job-name=job', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8',
        '--cpus-per-task=5', '--kill-on-bad-exit=1', '--time=1:00:00', '--qos=high',
        '/opt/py/bin/python', '-u', str(ROOT / 'tools' / tool), *expected_tail,
        '--launcher', 'slurm']


def test_close_process_group_destroys_the_group(tmp_path):
    store = torch.distributed.FileStore(str(tmp_path / 'store'), 1)
    torch.distributed.init_process_group('gloo', store=store, rank=0, world_size=1)
    try:
        run.close_process_group()
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    run.close_process_group()  # and without a group it does nothing


@pytest.mark.slow
def test_two_process_segmentation_train_checkpoint_evaluate(demo_data, tmp_path):
    work_dir = tmp_path / 'work'
    log = _run('dist_train.sh', SEG_CONFIG, '2', '--work-dir', str(work_dir), '--cfg-options',
               'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
               'default_hooks.checkpoint.interval=4', 'train_dataloader.batch_size=2',
               'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
               'test_dataloader.num_workers=0', *_seg_data_options(demo_data))
    assert 'Distributed training: True' in log
    assert 'Grad strides do not match bucket view strides' not in log  # DDP copies nothing
    assert f'Iter(val) [{(NUM_VAL + 1) // 2}/{(NUM_VAL + 1) // 2}]' in log  # each rank half the set
    assert 'mIoU: ' in log
    checkpoint = work_dir / 'iter_4.pth'
    assert checkpoint.exists()

    out_dir = tmp_path / 'predictions'
    log = _run('dist_test.sh', SEG_CONFIG, str(checkpoint), '2', '--work-dir', str(tmp_path / 'test'),
               '--out', str(out_dir), '--cfg-options', 'test_dataloader.num_workers=0',
               *_seg_data_options(demo_data))
    assert 'mIoU: ' in log
    # Both ranks' predictions end up in one place: every validation image exactly once.
    assert len(list(out_dir.glob('*.png'))) == NUM_VAL
