"""A CheckpointHook after which a kill at any moment still leaves a checkpoint to resume from."""
from __future__ import annotations

import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

from lsa.registry import HOOKS


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
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                self.file_backend.rmtree(path)
