"""BatchNorm as a per-channel affine map, for code that folds it into another op."""
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
