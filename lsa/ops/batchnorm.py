"""BatchNorm as a per-channel affine map, and its running-statistics update, for code that
folds it into another op."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def bn_affine(bn: nn.modules.batchnorm._BatchNorm, mean: Tensor | None = None,
              var: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(scale, shift)``, each (C,), with ``bn(t) == scale * t + shift`` per channel.

    ``mean``/``var`` default to the running statistics (eval mode); pass batch statistics to
    fold a training-mode BatchNorm (its running statistics are not touched here).
    """
    mean = bn.running_mean if mean is None else mean
    var = bn.running_var if var is None else var
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def update_running_stats(bn: nn.modules.batchnorm._BatchNorm, mean: Tensor, var: Tensor,
                         count: int) -> None:
    """Update ``bn``'s running statistics with one batch's ``mean`` and biased ``var``
    (each (C,), taken over ``count`` values per channel) exactly as ``bn.forward`` does
    in training: ``num_batches_tracked += 1``, then an exponential average with
    ``momentum`` (``None``: the cumulative average) of the mean and the unbiased variance
    ``var * count / (count - 1)``. Does nothing unless ``bn`` is training and tracks
    running statistics.
    """
    if not (bn.training and bn.track_running_stats and bn.running_mean is not None):
        return
    with torch.no_grad():
        f = bn.momentum
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if f is None:
                f = 1.0 / float(bn.num_batches_tracked)
        f = 0.0 if f is None else f  # as nn.BatchNorm2d: no counter, no momentum
        # in place with the statistics' own (possibly wider) dtype: one rounding per update
        bn.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
        unbiased = var.detach() * (count / max(count - 1, 1))
        bn.running_var.mul_(1 - f).add_(unbiased, alpha=f)
