"""Resume works on torch >= 2.6 with weights_only loading; code-carrying checkpoints are refused."""
import os
import re
import subprocess
import sys

import pytest
import torch
from mmengine.fileio import get_file_backend
from torch import nn

import convnext_dense.model_checkpoints  # noqa: F401  (allowlist, safe loading, atomic writes)
from convnext_dense.atomic_files import atomic_dir, remove_interrupted_writes, write_bytes
from convnext_dense.runtime.checkpoint_safety import (AtomicLocalBackend,
                                                      point_at_a_saved_checkpoint)
from convnext_dense.runtime.checkpoint_runner import StrictLoadRunner
from convnext_dense.weights import CheckpointError
from toy_runner import ToyModel, toy_runner


@pytest.fixture(scope='module')
def trained_work_dir(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('toy')
    toy_runner(work_dir, max_epochs=2).train()
    return work_dir


def test_plain_torch_load_refuses_mmengine_checkpoints(trained_work_dir):
    """The premise: without convnext_dense, torch's default weights_only load fails."""
    code = ('import torch, sys; torch.load(sys.argv[1])')
    result = subprocess.run([sys.executable, '-c', code, str(trained_work_dir / 'epoch_2.pth')],
                            capture_output=True, text=True)
    assert result.returncode != 0 and 'Weights only load failed' in result.stderr


def test_fresh_process_loads_mmengine_checkpoints(trained_work_dir):
    """No HistoryBuffer exists yet in a new process (resume starts that way)."""
    code = ('import sys, torch, convnext_dense.model_checkpoints; '
            'print(sorted(torch.load(sys.argv[1])["message_hub"]["log_scalars"])[:1])')
    result = subprocess.run([sys.executable, '-c', code, str(trained_work_dir / 'epoch_2.pth')],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "['train/" in result.stdout


def test_resume_from_latest_restores_state(trained_work_dir):
    runner = toy_runner(trained_work_dir, max_epochs=3, resume=True)
    runner.train()
    assert runner.epoch == 3
    scalars = runner.message_hub.log_scalars
    assert 'train/loss' in scalars and len(scalars['train/loss'].data[0]) > 0


def test_resume_from_path(trained_work_dir, tmp_path):
    runner = toy_runner(tmp_path, max_epochs=2, resume=True,
                        load_from=str(trained_work_dir / 'epoch_1.pth'))
    runner.train()
    assert runner.epoch == 2 and (tmp_path / 'epoch_2.pth').exists()


class _WiderModel(ToyModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 3)


def test_resume_needs_a_checkpoint_of_this_very_model(trained_work_dir, tmp_path):
    # mmengine's own resume loads non-strictly; another model then fails deep in the optimizer.
    runner = toy_runner(tmp_path, max_epochs=2, resume=True, model=_WiderModel(),
                        load_from=str(trained_work_dir / 'epoch_1.pth'),
                        runner_class=StrictLoadRunner)
    with pytest.raises(CheckpointError, match=r'(?s)to resume, the checkpoint must be of this '
                                              r'very model.*linear: weight'):
        runner.train()
    runner = toy_runner(tmp_path / 'same', max_epochs=2, resume=True,
                        load_from=str(trained_work_dir / 'epoch_1.pth'),
                        runner_class=StrictLoadRunner)
    runner.train()
    assert runner.epoch == 2


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_checkpoint_carrying_code_is_refused_and_runs_nothing(trained_work_dir, tmp_path):
    marker = tmp_path / 'payload-ran'
    checkpoint = torch.load(trained_work_dir / 'epoch_1.pth', weights_only=True)
    checkpoint['meta']['evil'] = _Payload(marker)
    path = tmp_path / 'evil.pth'
    torch.save(checkpoint, path)
    runner = toy_runner(tmp_path / 'work', max_epochs=2, resume=True, load_from=str(path))
    with pytest.raises(ValueError, match=r'refused to load .*evil.pth.*`posix.system`.*nothing from the file was executed'):
        runner.train()
    assert not marker.exists()


def test_truncated_checkpoint_is_reported(trained_work_dir, tmp_path):
    data = (trained_work_dir / 'epoch_1.pth').read_bytes()
    path = tmp_path / 'cut.pth'
    path.write_bytes(data[: len(data) // 2])
    runner = toy_runner(tmp_path / 'work', resume=True, load_from=str(path))
    with pytest.raises(ValueError, match=r'cut.pth .* is truncated or corrupt.*earlier checkpoint'):
        runner.train()


def test_local_writes_are_atomic(tmp_path):
    backend = get_file_backend(str(tmp_path / 'x'))
    assert isinstance(backend, AtomicLocalBackend)
    target = tmp_path / 'checkpoint.pth'
    backend.put(b'good', target)

    with pytest.raises(TypeError):
        backend.put('not bytes', target)  # fails mid-write
    assert target.read_bytes() == b'good'
    assert [p.name for p in tmp_path.iterdir()] == ['checkpoint.pth']
    backend.put_text('path/to/epoch_3.pth', tmp_path / 'last_checkpoint')
    assert (tmp_path / 'last_checkpoint').read_text() == 'path/to/epoch_3.pth'


def test_a_failed_save_keeps_the_checkpoint_it_would_replace(tmp_path, monkeypatch):
    put = AtomicLocalBackend.put

    def dies_at_epoch_2(self, obj, filepath):
        if str(filepath).endswith('epoch_2.pth'):
            raise KeyboardInterrupt('killed while saving')
        put(self, obj, filepath)
    monkeypatch.setattr(AtomicLocalBackend, 'put', dies_at_epoch_2)
    runner = toy_runner(tmp_path, max_epochs=3, checkpoint_options=dict(max_keep_ckpts=1))
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['epoch_1.pth']
    assert (tmp_path / 'last_checkpoint').read_text().endswith('epoch_1.pth')
    monkeypatch.setattr(AtomicLocalBackend, 'put', put)
    toy_runner(tmp_path, max_epochs=3, resume=True,
               checkpoint_options=dict(max_keep_ckpts=1)).train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['epoch_3.pth']  # then removed


def test_a_pointer_to_a_missing_checkpoint_names_the_newest_saved(tmp_path):
    pointer = tmp_path / 'last_checkpoint'
    assert point_at_a_saved_checkpoint(str(tmp_path)) is None  # no pointer: a fresh start
    pointer.write_text(str(tmp_path / 'iter_12.pth'))
    with pytest.raises(FileNotFoundError, match=r"names '.*iter_12\.pth', which is not there, "
                                                r'and .* holds no other checkpoint'):
        point_at_a_saved_checkpoint(str(tmp_path))
    for name in ('iter_2.pth', 'iter_10.pth', 'best_mIoU_iter_2.pth'):
        (tmp_path / name).write_bytes(b'saved')
    assert point_at_a_saved_checkpoint(str(tmp_path)) == (str(tmp_path / 'iter_12.pth'),
                                                          str(tmp_path / 'iter_10.pth'))
    assert pointer.read_text() == str(tmp_path / 'iter_10.pth')
    assert point_at_a_saved_checkpoint(str(tmp_path)) is None  # now it names a file
    pointer.write_text('')  # killed while the pointer was written
    assert point_at_a_saved_checkpoint(str(tmp_path))[1] == str(tmp_path / 'iter_10.pth')


def test_atomic_writes_go_where_links_point_and_never_replace_the_current_folder(
        tmp_path, monkeypatch):
    real = tmp_path / 'real_exports' / 'upernet'
    real.mkdir(parents=True)
    (real / 'model.onnx').write_bytes(b'old')
    link = tmp_path / 'upernet_link'
    link.symlink_to(real)
    with atomic_dir(link, lambda name: name == 'model.onnx') as work:
        (work / 'model.onnx').write_bytes(b'new')
    assert link.is_symlink() and (real / 'model.onnx').read_bytes() == b'new'
    file_link = tmp_path / 'last_checkpoint'
    file_link.symlink_to(tmp_path / 'pointer.txt')
    write_bytes(file_link, b'iter_4.pth')
    assert file_link.is_symlink() and (tmp_path / 'pointer.txt').read_bytes() == b'iter_4.pth'
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'last_checkpoint', 'pointer.txt', 'real_exports', 'upernet_link']
    monkeypatch.chdir(real)
    for here in ('.', '..'):
        with pytest.raises(FileExistsError, match=rf"'{re.escape(here)}' is the current folder "
                                                  'or holds it'):
            with atomic_dir(here, lambda name: True):
                pass
    assert (real / 'model.onnx').read_bytes() == b'new'


def test_interrupted_writes_are_removed_and_nothing_else(tmp_path):
    (tmp_path / '.tmp-abc.part').write_bytes(b'half a checkpoint')
    (tmp_path / 'iter_10.pth').write_bytes(b'kept')
    (tmp_path / 'last_checkpoint').write_text('iter_10.pth')
    (tmp_path / 'sub').mkdir()
    (tmp_path / 'sub' / '.tmp-def.part').write_bytes(b'not ours to judge')
    assert remove_interrupted_writes(str(tmp_path)) == ['.tmp-abc.part']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_10.pth', 'last_checkpoint', 'sub']
    assert (tmp_path / 'sub' / '.tmp-def.part').exists()
    assert remove_interrupted_writes(str(tmp_path)) == []


def test_resume_warns_which_config_settings_the_checkpoint_replaces(trained_work_dir, tmp_path,
                                                                    monkeypatch):
    """mmengine restores the saved schedule and optimizer settings over the config's."""
    import convnext_dense.runtime.checkpoint_runner as checkpoint_runner
    logged = []
    monkeypatch.setattr(checkpoint_runner, 'print_log',
                        lambda message, **kwargs: logged.append(message))
    checkpoint = str(trained_work_dir / 'epoch_1.pth')
    same = toy_runner(tmp_path / 'same', max_epochs=2, resume=True, load_from=checkpoint,
                      runner_class=StrictLoadRunner)
    same.train()
    assert logged == []  # the toy config it was trained with: nothing replaced
    changed = toy_runner(
        tmp_path / 'changed', max_epochs=3, resume=True, load_from=checkpoint,
        runner_class=StrictLoadRunner,
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.02, weight_decay=0.1)),
        param_scheduler=[dict(type='LinearLR', by_epoch=False, begin=0, end=6),
                         dict(type='MultiStepLR', milestones=[2])])
    changed.train()
    assert len(logged) == 1, logged
    assert logged[0].startswith(f'resuming from {checkpoint} restores the schedule and optimizer '
                                "settings saved in it (as mmengine does), not the config's: ")
    for setting in ('param_scheduler[0] LinearLR.end: 6 → 2',
                    'param_scheduler[1] MultiStepLR.milestones: [2] → [1]',
                    'param_scheduler[0] LinearLR.base_values: [0.02] → [0.01]',
                    'optimizer weight_decay: 0.1 → 0.01'):
        assert setting in logged[0]
    # What the warning says is what runs: the checkpoint's schedule.
    assert changed.param_schedulers[0].end == 2
    assert changed.optim_wrapper.optimizer.param_groups[0]['weight_decay'] == 0.01
