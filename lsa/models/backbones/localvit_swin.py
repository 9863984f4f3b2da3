"""LocalViT-Swin: the generic Swin host (:class:`lsa.SwinHost`) with the locality FFN."""
from __future__ import annotations

import torch.nn as nn

from lsa.models.layers.locality_ffn import LocalityFeedForward
from lsa.registry import MODELS

from .swin import CfgOrCfgs, SwinHost


@MODELS.register_module()
class LocalViTSwin(SwinHost):
    """Swin-T with every MLP replaced by the locality feed-forward (official LocalViT-Swin).

    As in the official block, the LFF has no ``norm2`` and no stochastic depth and
    adds its own residual (``residual=True``); the SE width is 16 in every stage
    (official ``reduction = dim // 4`` on a ``4 * dim`` hidden width). Multi-scale
    outputs, any input size, freezing and checkpointing come from :class:`SwinHost`.
    For the published classifier use ``out_indices=(3,)`` (``norm3`` is the final norm)
    with global average pooling and a linear head.

    Args:
        arch: ``'tiny'`` (published) or any :class:`SwinHost` arch.
        ffn_cfg: default ``dict(type='lsa.LocalityFeedForward', act='hs+se',
            se_channels=16)``; ``dict(type='lsa.Mlp')`` gives the plain Swin baseline.
        **kwargs: the other :class:`SwinHost` arguments (``drop_path_rate`` defaults to
            0.1, the value the official factory always uses).
    """

    default_ffn_cfg = dict(type='lsa.LocalityFeedForward', act='hs+se', se_channels=16)

    def __init__(self, arch: str | dict = 'tiny', ffn_cfg: CfgOrCfgs = None, **kwargs) -> None:
        ffn_cfg = dict(self.default_ffn_cfg) if ffn_cfg is None else ffn_cfg
        first = ffn_cfg if isinstance(ffn_cfg, dict) else ffn_cfg[0]
        cls = MODELS.get(first['type']) if isinstance(first.get('type'), str) else None
        grid = bool(getattr(cls, 'grid_ffn', False))
        for k in ('ffn_norm', 'ffn_residual'):
            if k in kwargs:
                raise ValueError(f'LocalViTSwin: {k} follows from ffn_cfg, do not pass it')
        super().__init__(arch, ffn_cfg=ffn_cfg, ffn_norm=not grid, ffn_residual=not grid,
                         **kwargs)

    def build_ffn(self, cfg: dict, dim: int, stage: int) -> nn.Module:
        ffn = super().build_ffn(cfg, dim, stage)
        if isinstance(ffn, LocalityFeedForward):
            ffn.residual = True  # the block adds no residual around a grid FFN
        return ffn
