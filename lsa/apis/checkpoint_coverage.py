"""How much of a model a checkpoint fills: refuse to test or draw with mostly random weights."""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from torch import Tensor, nn

__all__ = ['PartialCheckpointError', 'check_checkpoint_coverage', 'unloaded_keys']


class PartialCheckpointError(ValueError):
    """A checkpoint leaves some of the model's weights at their initial values."""


def _state_dict_of(checkpoint: Mapping) -> Mapping:
    for key in ('state_dict', 'model', 'net'):
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def unloaded_keys(model: nn.Module, checkpoint: Mapping) -> list[str]:
    """The model's weights (parameters and buffers) that ``checkpoint`` does not fill.

    A key counts as filled when the checkpoint's state dict (its ``state_dict``, ``model``
    or ``net`` entry, or the mapping itself; a leading ``module.`` ignored) has it with the
    same shape. BN ``num_batches_tracked`` counters are not weights and are ignored.
    """
    model = getattr(model, 'module', model)  # DDP / DataParallel wrappers
    given = {k[len('module.'):] if k.startswith('module.') else k: v
             for k, v in _state_dict_of(checkpoint).items()}
    missing = []
    for key, value in model.state_dict().items():
        if key.endswith('num_batches_tracked'):
            continue
        found = given.get(key)
        if not isinstance(found, Tensor) or tuple(found.shape) != tuple(value.shape):
            missing.append(key)
    return missing


def _prefix(key: str, depth: int = 2) -> str:
    """The key's module path, cut to ``depth`` parts (``backbone.layer1.*``)."""
    parts = key.split('.')[:-1] or key.split('.')
    return '.'.join(parts[:depth]) + '.*'


def check_checkpoint_coverage(model: nn.Module, checkpoint: Mapping, source: str,
                              allow_partial: bool = False, flag: str = '--allow-partial') -> list:
    """Raise :class:`PartialCheckpointError` if ``checkpoint`` leaves any weight of ``model`` unset.

    The message says how many of the model's weight tensors (and what share of its
    parameter values) stay unloaded and which prefixes they are under. With
    ``allow_partial`` nothing is raised. Returns the unloaded keys.
    """
    missing = unloaded_keys(model, checkpoint)
    if not missing or allow_partial:
        return missing
    inner = getattr(model, 'module', model)
    total = [k for k in inner.state_dict() if not k.endswith('num_batches_tracked')]
    params = dict(inner.named_parameters())
    share = sum(params[k].numel() for k in missing if k in params) / max(
        1, sum(p.numel() for p in params.values()))
    groups = Counter(_prefix(k) for k in missing).most_common()
    listed = ', '.join(f'{p} ({n})' for p, n in groups[:10])
    more = f' and {len(groups) - 10} more prefixes' if len(groups) > 10 else ''
    raise PartialCheckpointError(
        f'{source} leaves {len(missing)} of the model\'s {len(total)} weight tensors '
        f'({share:.0%} of its parameters) unloaded, under {listed}{more}. It was probably '
        f'trained for another model or config; pass {flag} to run with the unloaded '
        'weights at their initial values anyway.')
