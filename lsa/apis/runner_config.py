"""Config adjustments behind ``tools/train.py`` and ``tools/test.py`` (one pair for all toolboxes).

Pure :class:`mmengine.config.Config` edits, importable with torch + mmengine alone:

- :func:`toolbox_of`: which toolbox a config belongs to (its ``default_scope``).
- :func:`apply_eval_metrics`: the OpenMMLab 2.x ``--eval bbox segm`` / ``mIoU`` /
  ``accuracy`` flags mapped onto the config's ``test_evaluator``.
- :func:`adapt_for_cpu_distributed`: gloo, ``device_ids=None`` DDP and plain BN when a
  distributed launcher runs on a machine without CUDA.
- :func:`enable_amp`, :func:`apply_resume`, :func:`enable_visualization`, :func:`resolve_work_dir`,
  :func:`use_atomic_checkpoints`.
"""
from __future__ import annotations

import copy
import os.path as osp
from typing import Any

from mmengine.config import Config, ConfigDict

__all__ = [
    'EVAL_METRICS', 'TOOLBOXES', 'adapt_for_cpu_distributed', 'apply_eval_metrics',
    'apply_resume', 'enable_amp', 'enable_visualization', 'latest_checkpoint',
    'normalize_eval_metrics', 'resolve_work_dir', 'toolbox_of', 'use_atomic_checkpoints',
]

TOOLBOXES = ('mmdet', 'mmseg', 'mmpretrain')

#: ``--eval`` names each toolbox accepts (the 2.x spellings).
EVAL_METRICS: dict[str, tuple[str, ...]] = {
    'mmdet': ('bbox', 'segm', 'proposal', 'proposal_fast'),
    'mmseg': ('mIoU', 'mDice', 'mFscore'),
    'mmpretrain': ('accuracy', 'precision', 'recall', 'f1-score', 'support'),
}
_ALIASES = {'f1_score': 'f1-score', 'top1': 'accuracy', 'acc': 'accuracy'}


def toolbox_of(cfg: Config) -> str:
    """The toolbox (``'mmdet'``, ``'mmseg'`` or ``'mmpretrain'``) named by ``cfg.default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TOOLBOXES:
        raise ValueError(f'config default_scope must be one of {TOOLBOXES} to pick the toolbox, '
                         f'got {scope!r}')
    return scope


def _metric_type(metric_cfg: dict) -> str:
    return str(metric_cfg.get('type', '')).split('.')[-1]


def _as_list(evaluator: Any) -> list:
    if evaluator is None:
        return []
    return list(evaluator) if isinstance(evaluator, list | tuple) else [evaluator]


def normalize_eval_metrics(toolbox: str, metrics: list[str]) -> list[str]:
    """Canonical spellings of ``metrics`` (case-insensitive); unknown names raise ValueError."""
    allowed = EVAL_METRICS[toolbox]
    lookup = {m.lower(): m for m in allowed}
    lookup.update({k: v for k, v in _ALIASES.items() if v in allowed})
    out = []
    for name in metrics:
        canon = lookup.get(name.lower())
        if canon is None:
            raise ValueError(f'--eval: unknown metric {name!r} for a {toolbox} config; '
                             f'allowed: {", ".join(allowed)}')
        if canon not in out:
            out.append(canon)
    if not out:
        raise ValueError(f'--eval: give at least one metric; allowed: {", ".join(allowed)}')
    return out


def apply_eval_metrics(cfg: Config, metrics: list[str]) -> Config:
    """Map OpenMMLab 2.x ``--eval`` names onto ``cfg.test_evaluator`` (in place).

    - mmdet: ``bbox segm proposal proposal_fast`` -> ``CocoMetric.metric``.
    - mmseg: ``mIoU mDice mFscore`` -> ``IoUMetric.iou_metrics``.
    - mmpretrain: ``accuracy`` -> an ``Accuracy`` metric (the config's, or top-1);
      ``precision recall f1-score support`` -> ``SingleLabelMetric.items``.

    Raises:
        ValueError: An unknown metric (naming it and the allowed ones), or a
            ``test_evaluator`` without the metric type the names map onto.
    """
    toolbox = toolbox_of(cfg)
    names = normalize_eval_metrics(toolbox, metrics)
    evaluators = [copy.deepcopy(e) for e in _as_list(cfg.get('test_evaluator'))]
    if toolbox in ('mmdet', 'mmseg'):
        wanted, key = ('CocoMetric', 'metric') if toolbox == 'mmdet' else ('IoUMetric',
                                                                           'iou_metrics')
        hits = [e for e in evaluators if _metric_type(e) == wanted]
        if not hits:
            found = [_metric_type(e) for e in evaluators]
            raise ValueError(f'--eval {" ".join(metrics)}: the config\'s test_evaluator has no '
                             f'{wanted} to set {key!r} on (found {found})')
        for e in hits:
            e[key] = names
    else:
        accuracy = [e for e in evaluators if _metric_type(e) == 'Accuracy']
        evaluators = []
        if 'accuracy' in names:
            evaluators.append(accuracy[0] if accuracy else ConfigDict(type='Accuracy', topk=(1,)))
        items = [n for n in names if n != 'accuracy']
        if items:
            evaluators.append(ConfigDict(type='SingleLabelMetric', items=items))
    cfg.test_evaluator = evaluators[0] if len(evaluators) == 1 else evaluators
    return cfg


def _replace_sync_bn(node: Any) -> int:
    count = 0
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _replace_sync_bn(value)
    elif isinstance(node, list | tuple):
        for value in node:
            count += _replace_sync_bn(value)
    return count


def adapt_for_cpu_distributed(cfg: Config, launcher: str, cuda_available: bool) -> bool:
    """Make a distributed launch work without CUDA (in place); True if anything changed.

    With ``launcher != 'none'`` and no CUDA: ``env_cfg.dist_cfg.backend='gloo'``,
    ``model_wrapper_cfg`` = ``MMDistributedDataParallel(device_ids=None)`` (keeping the
    config's other wrapper options), and SyncBN norms become BN (SyncBatchNorm
    needs CUDA tensors).
    """
    if launcher == 'none' or cuda_available:
        return False
    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
    dist_cfg['backend'] = 'gloo'
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    cfg.model_wrapper_cfg = ConfigDict(wrapper)
    _replace_sync_bn(cfg.model)
    return True


def enable_amp(cfg: Config, cuda_available: bool) -> Config:
    """Turn the config's optimizer wrapper into mmengine's ``AmpOptimWrapper`` (in place)."""
    if not cuda_available:
        raise ValueError('--amp needs a CUDA device (mmengine AmpOptimWrapper); '
                         'none is available here')
    wrapper = cfg.optim_wrapper
    if wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
        return cfg
    if wrapper.get('type', 'OptimWrapper') != 'OptimWrapper':
        raise ValueError(f'--amp: cannot replace optim_wrapper type {wrapper["type"]!r}; '
                         f'expected OptimWrapper')
    wrapper.type = 'AmpOptimWrapper'
    wrapper.setdefault('loss_scale', 'dynamic')
    return cfg


def latest_checkpoint(work_dir: str) -> str | None:
    """The checkpoint ``work_dir/last_checkpoint`` names (None if there is none).

    Raises:
        FileNotFoundError: ``last_checkpoint`` names a file that does not exist.
    """
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        path = f.read().strip()
    if not path:
        return None
    if not osp.isfile(path):
        raise FileNotFoundError(f'--resume: {record} names {path}, which does not exist')
    return path


def apply_resume(cfg: Config, resume: str | None) -> Config:
    """Resolve ``--resume`` onto ``cfg.resume``/``cfg.load_from`` (in place; needs ``cfg.work_dir``).

    - ``'latest'`` (a bare ``--resume``): the checkpoint ``work_dir/last_checkpoint``
      names; an error if there is none (a new or misspelt work dir);
    - ``'auto'``: the same when there is one, otherwise train from scratch;
    - a path: that checkpoint (an error if it does not exist).

    Raises:
        FileNotFoundError: Nothing to resume from, naming the work dir and ``--resume auto``.
    """
    if resume is None:
        return cfg
    if resume in ('latest', 'auto'):
        path = latest_checkpoint(cfg.work_dir)
        if path is None and resume == 'latest':
            raise FileNotFoundError(
                f'--resume: nothing to resume from in work dir {cfg.work_dir!r} (no '
                'last_checkpoint file: a new or misspelt --work-dir?). Give a checkpoint '
                '(--resume CKPT), or --resume auto to resume when possible and start from '
                'scratch otherwise')
        if path is None:
            print(f'--resume auto: no checkpoint in {cfg.work_dir}, starting from scratch')
            cfg.resume = False
            return cfg
    else:
        path = resume
        if '://' not in path and not osp.isfile(path):
            raise FileNotFoundError(f'--resume: checkpoint {path!r} does not exist')
    cfg.resume = True
    cfg.load_from = path
    return cfg


def enable_visualization(cfg: Config, show_dir: str) -> Config:
    """Switch on the toolbox's visualization hook so test images are drawn into ``show_dir``."""
    toolbox = toolbox_of(cfg)
    hooks = cfg.get('default_hooks') or {}
    if 'visualization' not in hooks:
        raise ValueError('--show-dir needs default_hooks.visualization in the config '
                         '(e.g. dict(type="DetVisualizationHook"))')
    hook = hooks['visualization']
    if toolbox == 'mmdet':
        hook.update(draw=True, test_out_dir=osp.abspath(show_dir))
    elif toolbox == 'mmseg':
        hook.update(draw=True)
        cfg.visualizer['save_dir'] = show_dir
    else:
        hook.update(enable=True, out_dir=show_dir)
    return cfg


def use_atomic_checkpoints(cfg: Config) -> bool:
    """Swap mmengine's ``CheckpointHook`` for :class:`lsa.engine.AtomicCheckpointHook` (in place).

    Returns True if the config's checkpoint hook was replaced (another hook type is kept).
    """
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not hook or str(hook.get('type', '')).split('.')[-1] != 'CheckpointHook':
        return False
    hook['type'] = 'lsa.AtomicCheckpointHook'
    return True


def resolve_work_dir(cfg: Config, work_dir: str | None, config_path: str) -> str:
    """CLI ``--work-dir`` > the config's ``work_dir`` > ``./work_dirs/<config name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])
    return cfg.work_dir
