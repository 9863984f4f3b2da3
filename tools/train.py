"""Train any lsa config (mmdet, mmseg or mmpretrain, chosen by its ``default_scope``).

Examples::

    python tools/train.py configs/det/mask_rcnn_lesa_r50.py
    python tools/train.py CONFIG --work-dir work_dirs/x --resume        # latest in work_dir
    python tools/train.py CONFIG --work-dir work_dirs/x --resume auto   # ... or from scratch
    python tools/train.py CONFIG --resume work_dirs/x/epoch_3.pth --amp
    tools/dist_train.sh CONFIG 8                                      # --launcher pytorch

Checkpoints are written atomically and the previous one is removed only after the new one
is complete (:class:`lsa.engine.AtomicCheckpointHook`); every file loaded (``--resume``,
``load_from``, ``init_cfg``) goes through lsa's safe loader (``--trust-checkpoint FILE``).
"""
from __future__ import annotations

import argparse
import os

import torch
from mmengine.config import Config, DictAction

from lsa.apis.cli import exit_on, load_errors
from lsa.apis.preflight import check_datasets, check_demo_env, check_schedule
from lsa.apis.runner_config import (
    adapt_for_cpu_distributed,
    apply_resume,
    enable_amp,
    resolve_work_dir,
    toolbox_of,
    use_atomic_checkpoints,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model with an lsa config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument('--resume', nargs='?', type=str, const='latest', metavar='CKPT|auto',
                        help='resume from CKPT; without a value from the latest checkpoint in '
                        'the work dir (an error if there is none); "auto": resume if there is '
                        'one, else start from scratch')
    parser.add_argument('--trust-checkpoint', action='append', default=[], metavar='FILE',
                        help='load FILE (resume, load_from or init_cfg) even if it needs types '
                        'outside the safe allowlist; unpickling it may run code stored in it')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training (CUDA)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual batch size (auto_scale_lr in config)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. train_cfg.max_epochs=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--check-only', action='store_true',
                        help='check the config, datasets and resume target, then exit '
                        '(tools/dist_train.sh runs this once before starting processes)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_cfg(args: argparse.Namespace) -> Config:
    """The config with every CLI option applied and checked (no Runner built, no data read)."""
    check_demo_env()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    toolbox_of(cfg)
    check_schedule(cfg)
    resolve_work_dir(cfg, args.work_dir, args.config)
    cuda = torch.cuda.is_available()
    if args.amp:
        enable_amp(cfg, cuda)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    apply_resume(cfg, args.resume)
    use_atomic_checkpoints(cfg)
    adapt_for_cpu_distributed(cfg, args.launcher, cuda)
    return cfg


def main(argv: list[str] | None = None) -> None:
    from lsa.compat import apply
    apply()  # before mmengine's runner imports the toolboxes
    from mmengine.registry import RUNNERS, init_default_scope
    from mmengine.runner import Runner

    from lsa.apis.checkpoint_loading import trust_checkpoint

    args = parse_args(argv)
    with exit_on(ValueError, FileNotFoundError):
        cfg = build_cfg(args)
        check_datasets(cfg, ('train', 'val') if cfg.get('val_cfg') else ('train',))
    if args.check_only:
        print(f'{args.config}: config, datasets and resume target look fine')
        return
    for path in args.trust_checkpoint:
        trust_checkpoint(path)
    init_default_scope(cfg.default_scope)
    with exit_on(*load_errors()):
        runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
        runner.train()


if __name__ == '__main__':
    main()
