"""LocalViT-Swin: the generic Swin host (:class:`lsa.SwinHost`) with the locality FFN."""
from __future__ import annotations

from lsa.registry import MODELS

from .swin import CfgOrCfgs, SwinHost


@MODELS.register_module()
class LocalViTSwin(SwinHost):
    """Swin-T with every MLP replaced by the locality feed-forward (official LocalViT-Swin).

    As in the official block, the LFF has no ``norm2`` and no stochastic depth and
    adds its own residual (``residual=True``, the official ``x + conv(x)``); the SE width
    is 16 in every stage (official ``reduction = dim // 4`` on a ``4 * dim`` hidden width).
    Each block wires its own feed-forward by the host protocol
    (:func:`~lsa.models.layers.locality_ffn.ffn_residual`), so per-stage ``ffn_cfg`` lists
    may mix the LFF and the MLP. Multi-scale outputs, any input size, freezing and
    checkpointing come from :class:`SwinHost`. For the published classifier use
    ``out_indices=(3,)`` (``norm3`` is the final norm) with global average pooling and a
    linear head.

    Args:
        arch: ``'tiny'`` (published) or any :class:`SwinHost` arch.
        ffn_cfg: default ``dict(type='lsa.LocalityFeedForward', act='hs+se',
            se_channels=16, residual=True)``; ``dict(type='lsa.Mlp')`` gives the plain Swin
            baseline.
        **kwargs: the other :class:`SwinHost` arguments (``drop_path_rate`` defaults to
            0.1, the value the official factory always uses).
    """

    default_ffn_cfg = dict(type='lsa.LocalityFeedForward', act='hs+se', se_channels=16,
                           residual=True)

    def __init__(self, arch: str | dict = 'tiny', ffn_cfg: CfgOrCfgs = None, **kwargs) -> None:
        for k in ('ffn_norm', 'ffn_residual'):
            if k in kwargs:
                raise ValueError(f'LocalViTSwin: {k} follows from ffn_cfg, do not pass it')
        ffn_cfg = dict(self.default_ffn_cfg) if ffn_cfg is None else ffn_cfg
        super().__init__(arch, ffn_cfg=ffn_cfg, **kwargs)
