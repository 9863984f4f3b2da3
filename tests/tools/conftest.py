"""Checkpoint-test helpers: a tiny mmengine Runner and a pickle-payload checkpoint."""
import itertools
from collections import OrderedDict

import pytest
import torch
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset

_names = itertools.count()


class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x, mode='loss'):
        out = self.fc(self.bn(x))
        return dict(loss=(out - x.sum(1, keepdim=True)).pow(2).mean()) if mode == 'loss' else out


class ToyData(Dataset):
    metainfo = dict(classes=('a', 'b'))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(x=torch.linspace(-1, 1, 4) * (i + 1) / 8)


@pytest.fixture
def toy_runner():
    """``toy_runner(work_dir, max_epochs, hook='lsa.AtomicCheckpointHook', hook_kwargs=None,
    **runner_kwargs)``."""
    from mmengine.runner import Runner

    def build(work_dir, max_epochs=3, hook='lsa.AtomicCheckpointHook', hook_kwargs=None,
              **kwargs):
        torch.manual_seed(0)  # the same initial weights in every run
        return Runner(
            model=ToyModel(), work_dir=str(work_dir), experiment_name=f'toy{next(_names)}',
            train_dataloader=dict(dataset=ToyData(), batch_size=2, num_workers=0,
                                  sampler=dict(type='DefaultSampler', shuffle=True),
                                  collate_fn=dict(type='default_collate')),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
            param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                                  end=3),
                             dict(type='MultiStepLR', milestones=[2], by_epoch=True)],
            train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
            default_hooks=dict(checkpoint=dict(type=hook, interval=1, max_keep_ckpts=1,
                                               **(hook_kwargs or {})),
                               logger=dict(type='LoggerHook', interval=100)),
            randomness=dict(seed=0), **kwargs)

    return build


class Payload:
    """Unpickling this creates ``marker``: code run from a checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def _write_payload(path, marker) -> str:
    torch.save({'state_dict': OrderedDict(w=torch.ones(2)), 'meta': {'x': Payload(marker)}},
               str(path))
    return str(path)


@pytest.fixture
def make_payload():
    """``make_payload(path, marker)``: write a checkpoint that creates ``marker`` when unpickled."""
    return _write_payload


@pytest.fixture
def payload(tmp_path):
    """``(path, marker)`` of a payload checkpoint; ``marker`` must never appear."""
    marker = tmp_path / 'MARKER'
    return _write_payload(tmp_path / 'evil.pth', marker), marker
