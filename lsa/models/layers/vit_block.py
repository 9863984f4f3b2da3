"""The pre-norm transformer block of LocalViT's DeiT, PVT and T2T hosts."""
from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from .common import DropPath
from .locality_ffn import build_ffn, ffn_norm, ffn_residual


class LocalViTBlock(nn.Module):
    """Pre-norm transformer block: the host's attention and a feed-forward from ``ffn_cfg``.

    ``x = x + drop_path(attn(norm1(x), hw_shape))`` then :func:`ffn_residual` (the LFF skips
    the ``num_prefix`` class token and has no norm2 / drop path; the plain MLP is the usual
    pre-norm branch). Token I/O (B, num_prefix + H*W, C) -> same. Used by the DeiT, PVT and
    T2T hosts.
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float, ffn_cfg: dict,
                 se_channels: int | None = None, drop: float = 0.0, drop_path: float = 0.0,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.ffn = build_ffn(ffn_cfg, dim, int(dim * mlp_ratio), se_channels, drop)
        self.norm2 = ffn_norm(self.ffn, dim, norm_eps)

    def forward(self, x: Tensor, hw_shape: tuple[int, int], num_prefix: int = 1) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
        return ffn_residual(self.ffn, x, hw_shape, num_prefix, self.norm2, self.drop_path)
