"""Throughput and memory of the model of any lsa config (cls, det or seg).

Runs the config's own dataloaders (so the data must exist) and reports:

- inference img/s: ``model.test_step`` on test batches (pre/post-processing included);
- training img/s: full ``model.train_step`` (forward, backward, optimizer step);
- peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, the process's max RSS on CPU.

::

    python tools/analysis_tools/benchmark.py configs/det/mask_rcnn_lesa_r50.py --iters 50
"""
from __future__ import annotations

import argparse
import resource
import time

import torch
from mmengine.config import Config, DictAction
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import Runner

from lsa.apis.runner_config import toolbox_of
from lsa.compat import apply as apply_compat


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Inference/training img/s and peak memory')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--checkpoint', help='optional weights to load')
    parser.add_argument('--iters', type=int, default=20, help='timed iterations per phase')
    parser.add_argument('--warmup', type=int, default=3, help='untimed iterations first')
    parser.add_argument('--skip-train', action='store_true', help='inference only')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. test_dataloader.batch_size=8')
    return parser.parse_args(argv)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _batches(loader, n: int):
    """Yield ``n`` batches, cycling through the loader as often as needed."""
    done = 0
    while done < n:
        for batch in loader:
            yield batch
            done += 1
            if done == n:
                return


def _time(step, loader, warmup: int, iters: int, device: torch.device) -> float:
    """Images per second of ``step(batch)`` over ``iters`` batches after ``warmup``."""
    images, elapsed = 0, 0.0
    for i, batch in enumerate(_batches(loader, warmup + iters)):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step(batch)
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        if i >= warmup:
            elapsed += time.perf_counter() - start
            images += len(batch['inputs'])
    return images / elapsed


def main(argv: list[str] | None = None) -> dict:
    apply_compat()  # before any toolbox import
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(toolbox_of(cfg))
    device = torch.device(args.device)
    model = MODELS.build(cfg.model).to(device)
    if args.checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    results = {}

    model.eval()
    test_loader = Runner.build_dataloader(cfg.test_dataloader)
    with torch.no_grad():
        results['inference img/s'] = _time(model.test_step, test_loader, args.warmup,
                                           args.iters, device)
    if not args.skip_train:
        model.train()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        train_loader = Runner.build_dataloader(cfg.train_dataloader)
        results['training img/s'] = _time(lambda b: model.train_step(b, optim_wrapper),
                                          train_loader, args.warmup, args.iters, device)
    results['peak memory (MB)'] = _peak_memory_mb(device)
    print(f'Config: {args.config} on {device}')
    for k, v in results.items():
        print(f'{k}: {v:.2f}')
    return results


if __name__ == '__main__':
    main()
