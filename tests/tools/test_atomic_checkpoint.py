"""A kill at the worst moment of a checkpoint save loses at most one epoch, and resuming
reaches the same final state (iterations, LR schedule, weights) as an uninterrupted run."""
import mmengine.runner.runner as mm_runner
import pytest
import torch
from mmengine.fileio import LocalBackend

import lsa.engine.checkpoint_hook as hook_module
from lsa.apis.runner_config import latest_checkpoint
from lsa.compat import apply

apply()


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def _state(runner):
    hub = runner.message_hub
    return dict(iter=runner.iter, epoch=runner.epoch,
                lr=hub.get_scalar('train/lr').data[0].tolist(),
                weights={k: v.clone() for k, v in runner.model.state_dict().items()})


def _assert_same(a, b):
    assert (a['iter'], a['epoch']) == (b['iter'], b['epoch']) == (12, 3)
    assert a['lr'] == pytest.approx(b['lr'], rel=1e-12)  # the whole per-iteration schedule
    assert a['lr'][-1] == pytest.approx(0.005)  # after the epoch-2 milestone
    for k, v in a['weights'].items():
        assert torch.allclose(v, b['weights'][k], rtol=0, atol=1e-6), k


@pytest.fixture
def reference(toy_runner, tmp_path):
    runner = toy_runner(tmp_path / 'ref', max_epochs=3)
    runner.train()
    return _state(runner)


def _crash_then_resume(toy_runner, work, patch_target, patch_name, killer, monkeypatch):
    monkeypatch.setattr(patch_target, patch_name, killer)
    with pytest.raises(Killed):
        toy_runner(work, max_epochs=3).train()
    monkeypatch.undo()
    ckpt = latest_checkpoint(str(work))
    assert ckpt is not None and torch.load(ckpt, weights_only=False)['meta']['epoch'] >= 1
    resumed = toy_runner(work, max_epochs=3, resume=True, load_from=ckpt)
    resumed.train()
    return ckpt, _state(resumed)


def test_kill_while_writing_the_new_checkpoint(toy_runner, tmp_path, reference, monkeypatch):
    real = hook_module._fsync_replace

    def killer(tmp, dst):
        if dst.endswith('epoch_2.pth'):
            with open(tmp, 'r+b') as f:  # half-written, then killed before the rename
                f.truncate(100)
            raise Killed
        real(tmp, dst)

    ckpt, state = _crash_then_resume(toy_runner, tmp_path / 'w', hook_module, '_fsync_replace',
                                     killer, monkeypatch)
    assert ckpt.endswith('epoch_1.pth')  # the previous checkpoint survived, complete
    assert not (tmp_path / 'w' / 'epoch_1.pth').exists()  # and was dropped once epoch 2 was
    _assert_same(state, reference)


def test_kill_between_save_and_delete(toy_runner, tmp_path, reference, monkeypatch):
    real = LocalBackend.remove

    def killer(self, path):
        if str(path).endswith('epoch_1.pth'):
            raise Killed
        real(self, path)

    ckpt, state = _crash_then_resume(toy_runner, tmp_path / 'w', LocalBackend, 'remove',
                                     killer, monkeypatch)
    assert ckpt.endswith('epoch_2.pth')
    _assert_same(state, reference)


def test_mmengine_hook_loses_everything_where_lsa_hook_does_not(toy_runner, tmp_path,
                                                                 monkeypatch):
    """What the lsa hook fixes: mmengine deletes the old checkpoint before writing the new."""
    real = mm_runner.save_checkpoint

    def killer(checkpoint, filename, **kwargs):
        if 'epoch_2.pth' in str(filename):
            raise Killed
        real(checkpoint, filename, **kwargs)

    monkeypatch.setattr(mm_runner, 'save_checkpoint', killer)
    with pytest.raises(Killed):
        toy_runner(tmp_path / 'mm', max_epochs=3, hook='CheckpointHook').train()
    assert not list((tmp_path / 'mm').glob('*.pth'))  # nothing left to resume from
    with pytest.raises(Killed):
        toy_runner(tmp_path / 'lsa', max_epochs=3).train()
    assert [p.name for p in (tmp_path / 'lsa').glob('*.pth')] == ['epoch_1.pth']


def test_save_best_keeps_the_previous_best_until_the_new_one_is_complete(toy_runner, tmp_path,
                                                                         monkeypatch):
    """mmengine removes the previous best checkpoint before writing the new one in place."""
    runner = toy_runner(tmp_path / 'w', max_epochs=1,
                        hook_kwargs=dict(save_best='acc', rule='greater'))
    (hook, ) = [h for h in runner.hooks if isinstance(h, hook_module.AtomicCheckpointHook)]
    runner.train()
    hook.after_val_epoch(runner, {'acc': 0.5})
    runner.train_loop._epoch = 2
    hook.after_val_epoch(runner, {'acc': 0.9})
    best = sorted((tmp_path / 'w').glob('best_*'))
    assert [p.name for p in best] == ['best_acc_epoch_2.pth']  # the old best was replaced
    assert runner.save_checkpoint.__func__ is type(runner).save_checkpoint  # unpatched again

    real = hook_module._fsync_replace

    def killer(tmp, dst):
        if 'best_acc' in dst:
            with open(tmp, 'r+b') as f:  # half-written, then killed before the rename
                f.truncate(100)
            raise Killed
        real(tmp, dst)

    monkeypatch.setattr(hook_module, '_fsync_replace', killer)
    runner.train_loop._epoch = 3
    with pytest.raises(Killed):
        hook.after_val_epoch(runner, {'acc': 0.95})
    assert torch.load(best[0], weights_only=False)['meta']['epoch'] == 2  # still complete
    assert not (tmp_path / 'w' / 'best_acc_epoch_3.pth').exists()  # only its .tmp
