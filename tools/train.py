"""Train any lsa config (mmdet, mmseg or mmpretrain, chosen by its ``default_scope``).

Examples::

    python tools/train.py configs/det/mask_rcnn_lesa_r50.py
    python tools/train.py CONFIG --work-dir work_dirs/x --resume            # latest in work_dir
    python tools/train.py CONFIG --resume work_dirs/x/epoch_3.pth --amp
    tools/dist_train.sh CONFIG 8                                          # --launcher pytorch
"""
from __future__ import annotations

import argparse
import os

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import Runner

import lsa  # noqa: F401  (applies lsa.compat before any toolbox import)
from lsa.runner_config import (
    adapt_for_cpu_distributed,
    apply_resume,
    enable_amp,
    resolve_work_dir,
    toolbox_of,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model with an lsa config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the work dir '
                        'when no path is given')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training (CUDA)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual batch size (auto_scale_lr in config)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. train_cfg.max_epochs=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_cfg(args: argparse.Namespace) -> Config:
    """The config with every CLI option applied (no Runner built)."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    toolbox_of(cfg)
    resolve_work_dir(cfg, args.work_dir, args.config)
    cuda = torch.cuda.is_available()
    if args.amp:
        enable_amp(cfg, cuda)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    apply_resume(cfg, args.resume)
    adapt_for_cpu_distributed(cfg, args.launcher, cuda)
    return cfg


def main(argv: list[str] | None = None) -> None:
    cfg = build_cfg(parse_args(argv))
    init_default_scope(cfg.default_scope)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
