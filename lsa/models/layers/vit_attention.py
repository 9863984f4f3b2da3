"""Global multi-head self-attention on tokens, as the ViT-family hosts of LocalViT use it.

One scaled-dot-product core (:class:`TokenAttention`) with three projection layouts, each
keeping its official parameter names: DeiT (``qkv``), PVT (``q`` + ``kv`` over a
spatially reduced grid), TNT (``qk`` + ``v``). Scale ``(C / heads) ** -0.5`` throughout.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .common import nchw_to_nlc, nlc_to_nchw


class TokenAttention(nn.Module):
    """Shared core: per-head SDPA, head merge, ``proj`` Linear(C, C) and dropout.

    Subclasses build their input projections, then call :meth:`_init_output`, and run
    :meth:`attend` on (B, heads, N_q, C/heads) queries and (B, heads, N_kv, C/heads) keys
    and values, which returns (B, N_q, C).
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'{type(self).__name__}: dim {dim} is not divisible by '
                             f'num_heads {num_heads}')
        self.num_heads, self.attn_drop = num_heads, attn_drop

    def _init_output(self, dim: int, proj_drop: float) -> None:
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, N, C) -> (B, heads, N, C/heads)."""
        B, N, C = x.shape
        return x.reshape(B, N, self.num_heads, C // self.num_heads).transpose(1, 2)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        B, h, N, d = q.shape
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0)  # B, heads, N, d
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, h * d)))


class MultiheadSelfAttention(TokenAttention):
    """ViT/DeiT attention: ``qkv`` Linear(C, 3C) rows [q; k; v], head-major inside each.

    Token I/O (B, N, C) -> (B, N, C); ``hw_shape`` is unused (same call as spatial
    attentions).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads, attn_drop)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self._init_output(dim, proj_drop)

    def forward(self, x: Tensor, hw_shape: tuple[int, int] | None = None) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        return self.attend(*qkv.permute(2, 0, 3, 1, 4).unbind(0))  # 3 x (B, heads, N, d)


class SpatialReductionAttention(TokenAttention):
    """PVT attention: keys/values from a ``sr``-strided conv of the grid (+ LayerNorm).

    ``q`` Linear(C, C); ``sr`` Conv2d(C, C, sr, stride sr) and ``norm`` LN(eps 1e-5) when
    ``sr_ratio > 1``; ``kv`` Linear(C, 2C) rows [k; v]. Token I/O (B, N, C) -> (B, N, C);
    ``hw_shape`` is the grid of the N tokens when ``sr_ratio > 1`` (with ``sr_ratio == 1``
    any tokens, e.g. a class token, are allowed).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads, attn_drop)
        if sr_ratio < 1:
            raise ValueError(f'SpatialReductionAttention: sr_ratio must be >= 1, got {sr_ratio}')
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self._init_output(dim, proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, hw_shape: tuple[int, int] | None = None) -> Tensor:
        B, N, C = x.shape
        kv_in = x
        if self.sr_ratio > 1:
            kv_in = self.norm(nchw_to_nlc(self.sr(nlc_to_nchw(x, hw_shape))))
        kv = self.kv(kv_in).reshape(B, -1, 2, self.num_heads, C // self.num_heads)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, heads, N_kv, d)
        return self.attend(self.split_heads(self.q(x)), k, v)


class TNTAttention(TokenAttention):
    """TNT attention: ``qk`` Linear(C, 2C) rows [q; k], separate ``v`` Linear(C, C).

    Token I/O (B, N, C) -> (B, N, C).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads, attn_drop)
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self._init_output(dim, proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        qk = self.qk(x).reshape(B, N, 2, self.num_heads, C // self.num_heads)
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, heads, N, d)
        return self.attend(q, k, self.split_heads(self.v(x)))
