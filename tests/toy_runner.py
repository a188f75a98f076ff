"""A tiny mmengine model and dataset: real Runner checkpoints in a fraction of a second."""
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset


class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=((out - torch.stack(labels)) ** 2).mean())
        return out


class ToyDataset(Dataset):
    metainfo = dict(classes=('a', 'b'), palette=[(1, 2, 3)])

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return dict(inputs=torch.full((2,), float(index)), labels=torch.ones(1))


def toy_runner(work_dir, max_epochs=2, resume=False, load_from=None, model=None,
               runner_class=Runner, checkpoint_options=None, **kwargs):
    """A Runner of :class:`ToyModel` on :class:`ToyDataset`; ``kwargs`` add or replace
    Runner arguments (``optim_wrapper``, ``param_scheduler``, ...)."""
    arguments = dict(
        model=model or ToyModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyDataset(), batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=[dict(type='LinearLR', by_epoch=False, begin=0, end=2),
                         dict(type='MultiStepLR', milestones=[1])],
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1,
                                           **(checkpoint_options or {}))),
        resume=resume, load_from=load_from)
    arguments.update(kwargs)
    return runner_class(**arguments)
