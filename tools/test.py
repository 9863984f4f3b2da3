"""Test (and evaluate) a checkpoint with any lsa config (mmdet, mmseg or mmpretrain).

``--eval`` keeps the OpenMMLab 2.x spelling and is mapped onto the config's
``test_evaluator`` (see :func:`lsa.apis.runner_config.apply_eval_metrics`)::

    python tools/test.py CONFIG CKPT --eval bbox segm     # mmdet: CocoMetric
    python tools/test.py CONFIG CKPT --eval mIoU          # mmseg: IoUMetric
    python tools/test.py CONFIG CKPT --eval accuracy      # mmpretrain: Accuracy
    tools/dist_test.sh CONFIG CKPT 8 --eval bbox segm

The checkpoint is loaded without running code from it (``--trust-checkpoint`` lifts that for
this file) and must fill every weight of the model (``--allow-partial`` to test anyway).
"""
from __future__ import annotations

import argparse
import os

import torch
from mmengine.config import Config, DictAction

from lsa.apis.cli import exit_on, load_errors
from lsa.apis.preflight import check_datasets
from lsa.apis.runner_config import (
    adapt_for_cpu_distributed,
    apply_eval_metrics,
    enable_visualization,
    resolve_work_dir,
    toolbox_of,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a checkpoint with an lsa config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the metrics log goes')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='load the checkpoint even if it needs types outside the safe '
                        'allowlist; unpickling it may run code stored in it')
    parser.add_argument('--allow-partial', action='store_true',
                        help='test even if the checkpoint leaves some weights of the model '
                        'unloaded (they keep their initial values)')
    parser.add_argument('--eval', nargs='+', metavar='METRIC',
                        help='metrics as OpenMMLab 2.x named them: bbox segm proposal (det), '
                        'mIoU mDice mFscore (seg), accuracy precision recall f1-score (cls)')
    parser.add_argument('--out', help='dump predictions (det/cls: a .pkl file; seg: a folder)')
    parser.add_argument('--show-dir', help='draw predictions into this folder')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. test_dataloader.batch_size=2')
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
    toolbox = toolbox_of(cfg)
    resolve_work_dir(cfg, args.work_dir, args.config)
    cfg.load_from = args.checkpoint
    if args.eval:
        apply_eval_metrics(cfg, args.eval)
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    if args.out and toolbox == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    elif args.out and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl file for a {toolbox} config, got {args.out!r}')
    adapt_for_cpu_distributed(cfg, args.launcher, torch.cuda.is_available())
    return cfg


def main(argv: list[str] | None = None) -> dict:
    from lsa.compat import apply
    apply()  # before mmengine's runner imports the toolboxes
    from mmengine.registry import RUNNERS, init_default_scope
    from mmengine.runner import Runner

    from lsa.apis.checkpoint_coverage import check_checkpoint_coverage
    from lsa.apis.checkpoint_loading import trust_checkpoint

    args = parse_args(argv)
    with exit_on(ValueError, FileNotFoundError):
        cfg = build_cfg(args)
        check_datasets(cfg, ('test',))
        if '://' not in args.checkpoint and not os.path.isfile(args.checkpoint):
            raise FileNotFoundError(f'checkpoint {args.checkpoint!r} does not exist')
    if args.trust_checkpoint:
        trust_checkpoint(args.checkpoint)
    cfg.load_from = None  # loaded below, then checked for coverage
    init_default_scope(cfg.default_scope)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    with exit_on(*load_errors()):
        checkpoint = runner.load_checkpoint(args.checkpoint, map_location='cpu')
        check_checkpoint_coverage(runner.model, checkpoint, args.checkpoint, args.allow_partial)
    if args.out and cfg.default_scope != 'mmseg':
        if cfg.default_scope == 'mmdet':
            from mmdet.evaluation import DumpDetResults as Dump
        else:
            from mmengine.evaluator import DumpResults as Dump
        runner.test_evaluator.metrics.append(Dump(out_file_path=args.out))
    return runner.test()


if __name__ == '__main__':
    main()
