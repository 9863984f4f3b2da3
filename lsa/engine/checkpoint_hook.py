"""A CheckpointHook after which a kill at any moment still leaves a checkpoint to resume from."""
from __future__ import annotations

import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

from lsa.registry import HOOKS


class _DeferredRemoval:
    """A file backend whose ``remove``/``rmtree`` are recorded, to be run later."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.pending: list[str] = []

    def remove(self, path: str) -> None:
        self.pending.append(path)

    def rmtree(self, path: str) -> None:
        self.pending.append(path)

    def __getattr__(self, name: str):
        return getattr(self._backend, name)


def _fsync_replace(tmp: str, dst: str) -> None:
    with open(tmp, 'rb') as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    _fsync_replace(tmp, path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's :class:`~mmengine.hooks.CheckpointHook` with crash-safe ordering.

    mmengine deletes the oldest checkpoint (``max_keep_ckpts``) *before* writing the
    new one and writes it in place, so a kill in between leaves nothing complete. Here:

    1. the checkpoint is written to ``<name>.tmp``, fsynced and renamed onto ``<name>``
       (local work dirs; other backends are written directly);
    2. ``last_checkpoint`` is replaced the same way;
    3. only then are the checkpoints beyond ``max_keep_ckpts`` removed.

    ``save_best`` checkpoints follow the same order: the new best is written through a
    temporary file and renamed, and the previous best is removed after that.

    Same arguments as ``CheckpointHook``; ``tools/train.py`` uses it in place of
    mmengine's for every config (``default_hooks.checkpoint``).
    """

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        stale = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale.append(self.keep_ckpt_ids[0])
            self.keep_ckpt_ids.append(step)  # a deque(maxlen=max_keep_ckpts)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        local = isinstance(self.file_backend, LocalBackend)
        runner.save_checkpoint(
            self.out_dir, filename + '.tmp' if local else filename, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        if local:
            _fsync_replace(self.last_ckpt + '.tmp', self.last_ckpt)
        write_text_atomic(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old in stale:
            self._remove(self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old)))

    def _remove(self, path: str) -> None:
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):
            self.file_backend.rmtree(path)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        # mmengine removes the previous best, then writes the new one in place. Run its
        # logic with removals deferred and ``best_*`` files written to a temporary name
        # and renamed, then remove what it meant to remove.
        backend, deferred = self.file_backend, _DeferredRemoval(self.file_backend)
        save = runner.save_checkpoint
        local = isinstance(backend, LocalBackend)

        def save_best_atomic(out_dir, filename, *args, **kwargs):
            if not (local and osp.basename(filename).startswith('best_')):
                return save(out_dir, filename, *args, **kwargs)
            save(out_dir, filename + '.tmp', *args, **kwargs)
            if is_main_process():
                path = backend.join_path(out_dir, filename)
                _fsync_replace(path + '.tmp', path)

        self.file_backend, runner.save_checkpoint = deferred, save_best_atomic
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
            del runner.save_checkpoint  # the instance attribute; the method shows again
        if is_main_process():
            for path in deferred.pending:
                self._remove(path)
