"""Checks the tools run before any heavy work, so a mistake is reported once, by name.

- :func:`check_datasets`: every dataset (and evaluator annotation file) a config reads exists.
- :func:`check_schedule`: training length, intervals and LR milestones are in range.
- :func:`check_demo_env`: the ``LSA_DEMO_*`` knobs of ``demo/run_demo.sh`` are integers in range.
- :func:`check_process_count`: ``tools/dist_train.sh``'s process count fits the machine.
"""
from __future__ import annotations

import os
import os.path as osp
import sys
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ['DATASET_DOCS', 'check_datasets', 'check_demo_env', 'check_process_count',
           'check_schedule']

DATASET_DOCS = 'docs/get_started.md#prepare-datasets'

#: Demo knobs (environment variables) and their smallest allowed value.
DEMO_ENV_MIN = {'LSA_DEMO_EPOCHS': 1, 'LSA_DEMO_NUM_TRAIN': 1, 'LSA_DEMO_NUM_VAL': 1,
                'LSA_DEMO_SEED': 0}


def _leaf_datasets(cfg: Any, where: str) -> Iterable[tuple[str, Mapping]]:
    """``(config path, dataset cfg)`` for each dataset, looking through wrappers."""
    if not isinstance(cfg, Mapping):
        return
    if 'datasets' in cfg:  # ConcatDataset
        for i, sub in enumerate(cfg['datasets']):
            yield from _leaf_datasets(sub, f'{where}.datasets[{i}]')
    elif 'dataset' in cfg:  # RepeatDataset, ClassBalancedDataset, ...
        yield from _leaf_datasets(cfg['dataset'], f'{where}.dataset')
    else:
        yield where, cfg


def _is_remote(path: str) -> bool:
    return '://' in path


def _dataset_paths(ds: Mapping) -> list[tuple[str, str]]:
    root = ds.get('data_root') or ''
    paths = []
    if ds.get('ann_file'):
        paths.append(('ann_file', osp.join(root, ds['ann_file'])))
    for key, prefix in (ds.get('data_prefix') or {}).items():
        if isinstance(prefix, str) and prefix:
            paths.append((f'data_prefix.{key}', osp.join(root, prefix)))
    if root and not paths:
        paths.append(('data_root', root))
    return paths


def check_datasets(cfg: Mapping, splits: Iterable[str]) -> None:
    """Raise FileNotFoundError naming the first missing dataset path of ``splits``.

    ``splits``: e.g. ``('train', 'val')``; each reads ``<split>_dataloader.dataset`` (through
    dataset wrappers) and ``<split>_evaluator.ann_file``. Remote (``s3://``...) paths are
    not checked.
    """
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not isinstance(loader, Mapping):
            continue
        checks = []
        for where, ds in _leaf_datasets(loader.get('dataset'), f'{split}_dataloader.dataset'):
            checks += [(f'{where}.{key}', path, ds) for key, path in _dataset_paths(ds)]
        evaluators = cfg.get(f'{split}_evaluator')
        for i, ev in enumerate(evaluators if isinstance(evaluators, list) else [evaluators]):
            if isinstance(ev, Mapping) and isinstance(ev.get('ann_file'), str):
                where = f'{split}_evaluator' + (f'[{i}]' if isinstance(evaluators, list) else '')
                checks.append((f'{where}.ann_file', ev['ann_file'], ev))
        for where, path, ds in checks:
            if not _is_remote(path) and not osp.exists(path):
                raise FileNotFoundError(
                    f'dataset not found: {path} does not exist ({where} of the '
                    f'{ds.get("type", "dataset")} the config reads, data_root='
                    f'{ds.get("data_root")!r}). Prepare the dataset as {DATASET_DOCS} describes, '
                    'or point the config at it, e.g. --cfg-options '
                    f'{split}_dataloader.dataset.data_root=/path/to/it/')


def _demo_hint() -> str:
    set_knobs = [f'{k}={os.environ[k]}' for k in DEMO_ENV_MIN if k in os.environ]
    return f' (the demo knobs set: {", ".join(set_knobs)})' if set_knobs else ''


def check_schedule(cfg: Mapping) -> None:
    """Raise ValueError if the training length, intervals or LR milestones are out of range.

    ``train_cfg.max_epochs``/``max_iters`` and ``val_interval`` must be >= 1,
    ``default_hooks.checkpoint.interval`` >= 1, and every ``MultiStepLR`` milestone must lie
    strictly inside its scheduler's ``[begin, end)`` span, after ``begin`` (a milestone at
    0 drops the LR before the first step).
    """
    train_cfg = cfg.get('train_cfg') or {}
    for key in ('max_epochs', 'max_iters', 'val_interval'):
        value = train_cfg.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f'train_cfg.{key} must be an integer >= 1, got {value!r}'
                             + _demo_hint())
    ckpt = (cfg.get('default_hooks') or {}).get('checkpoint') or {}
    if ckpt.get('interval') is not None and ckpt['interval'] < 1:
        raise ValueError('default_hooks.checkpoint.interval must be >= 1, got '
                         f'{ckpt["interval"]!r}' + _demo_hint())
    schedulers = cfg.get('param_scheduler') or []
    for i, sch in enumerate(schedulers if isinstance(schedulers, list) else [schedulers]):
        if not isinstance(sch, Mapping) or sch.get('type') != 'MultiStepLR':
            continue
        begin, end = sch.get('begin', 0), sch.get('end')
        length = (end - begin) if isinstance(end, int) else None
        for m in sch.get('milestones', []):
            if m < 1 or (length is not None and m >= length):
                span = f'[1, {length})' if length is not None else '>= 1'
                raise ValueError(
                    f'param_scheduler[{i}] (MultiStepLR) milestone {m} is outside {span}: '
                    f'counted from begin={begin}, it would change the LR '
                    + ('before the first step' if m < 1 else 'after training ends')
                    + _demo_hint())


def check_demo_env(env: Mapping[str, str] | None = None) -> None:
    """Raise ValueError if a set ``LSA_DEMO_*`` knob is not an integer >= its minimum."""
    env = os.environ if env is None else env
    for name, low in DEMO_ENV_MIN.items():
        if name not in env:
            continue
        raw = env[name]
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f'{name} must be an integer >= {low}, got {raw!r}') from None
        if value < low:
            raise ValueError(f'{name} must be an integer >= {low}, got {value}')


def check_process_count(gpus: str, cuda_count: int | None = None,
                        cpu_count: int | None = None) -> str:
    """Validate ``tools/dist_train.sh CONFIG GPUS``; return a one-line notice, raise on error.

    With CUDA, ``GPUS`` may not exceed the visible GPUs. Without CUDA the processes run on
    CPU with gloo (tests and smoke runs), at most one per CPU core.
    """
    try:
        n = int(gpus)
    except ValueError:
        raise ValueError(f'GPUS must be a positive integer, got {gpus!r}') from None
    if n < 1:
        raise ValueError(f'GPUS must be a positive integer, got {n}')
    if cuda_count is None:
        import torch
        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cpu_count is None:
        cpu_count = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') \
            else (os.cpu_count() or 1)
    if cuda_count:
        if n > cuda_count:
            raise ValueError(f'asked for {n} GPUs but this machine has {cuda_count} '
                             f'CUDA GPU{"s" if cuda_count > 1 else ""} visible; use at most '
                             f'{cuda_count} (or check CUDA_VISIBLE_DEVICES)')
        return f'{n} processes on {n} of {cuda_count} GPUs'
    if n > cpu_count:
        raise ValueError(f'asked for {n} GPUs but this machine has no CUDA GPU: the processes '
                         f'would run on CPU with gloo, and it has {cpu_count} CPU cores; '
                         f'use a GPU machine, or at most {cpu_count} CPU processes')
    return f'no CUDA GPU here: running {n} CPU processes with gloo (for checks, not training)'


if __name__ == '__main__':  # tools/dist_train.sh: python -m lsa.apis.preflight GPUS
    try:
        print(check_process_count(sys.argv[1]), file=sys.stderr)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        sys.exit(2)
