"""ELSA: enhanced local self-attention (Hadamard attention + ghost head), Zhou et al. 2021."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lsa.ops import elsa
from lsa.registry import MODELS

from .common import check_tokens


@MODELS.register_module()
class ELSAAttention(nn.Module):
    """ELSA attention over the whole map (no windows), a drop-in for window attention.

    Token I/O, as :class:`~lsa.models.layers.window_attention.ShiftWindowAttention`:
    ``forward(x, hw_shape)`` takes (B, H*W, C) row-major tokens of an H x W map and
    returns (B, Ho*Wo, C) with ``Ho, Wo = H // stride, W // stride`` (so (B, H*W, C)
    for the default ``stride=1``).

    With ``Q = dim_qk``, ``Cv = dim_v``, heads ``G``, window ``k``::

        q, k_, v = split(qkv(x), [Q, Q, Cv])             # 1x1 conv, order q, k, v
        a = attn_gen(avg_pool_s(q * k_ * scale))          # k x k grouped conv, GELU, 1x1 conv
        A = softmax over the k*k taps of a.view(B*G, k*k, Ho, Wo)   # head g: channels g*k*k..
            (inside the ELSA op unless attention dropout is active)
        V = v.view(B*G, Cv/G, H, W)                       # head g: value channels g*Cv/G..
        out = elsa(V, A, ghost_mul, ghost_add, k, stride, dilation)
        y = proj(out)                                     # Linear(Cv, dim) on tokens

    Ghost head (the official ``lam``/``gamma``; ``ghost_head`` shapes as in the
    official checkpoints): ``lam != 0, gamma != 0``: parameter (2, 1, Cv, k, k)
    = [mul ~ N(0, 1), add ~ N(0, .02)], ``ghost_mul = mul ** lam``,
    ``ghost_add = add * gamma``; ``lam == 0``: parameter (1, Cv, k, k) ~ N(0, .02),
    ``ghost_mul = 1``, ``ghost_add = ghost_head * gamma`` (ELSA-Swin: local
    attention plus a depth-wise k x k conv); ``gamma == 0``: parameter
    (1, Cv, k, k) ~ N(0, 1), ``ghost_add = 0``; both zero: no ghost (plain
    local attention). As in the official code ``mul ** lam`` acts on the raw
    parameter (NaN for negative entries with a fractional ``lam``).

    Args:
        dim: Input/output channels C.
        num_heads: Heads G; must divide ``dim_v``.
        kernel_size: Odd window k of the attention and of the ghost head.
        dilation: Window dilation.
        stride: Output stride (the Hadamard map is average-pooled before the
            attention convs). The official module only works with 1.
        dim_qk: Width Q of q and k; default ``dim // 3 * 2``. Rounded up to a
            multiple of ``group_width``.
        dim_v: Width of v; default ``dim``.
        group_width: Channels per group of the k x k attention conv.
        groups: Groups of the 1x1 conv producing the k*k*G attention logits.
        qkv_bias: Bias in the q/k/v projection.
        qk_scale: Scale of the Hadamard product; None means ``(dim_v / G) ** -0.5``.
            ELSA-Swin uses 1.
        lam: Exponent of the multiplicative ghost (0 disables it).
        gamma: Factor of the additive ghost (0 disables it).
        attn_drop: Dropout on the attention weights.
        proj_drop: Dropout after the output projection.
        fuse_softmax: Let the ELSA op apply the softmax over the taps
            (``lsa.ops.elsa(..., softmax=True)``) when attention dropout is inactive
            (eval or ``attn_drop == 0``); ``False``: always the separate softmax (the
            attention recorder of ``lsa.analysis`` switches it off while attached, to
            read the weights at ``attn_drop``'s input).

    Defaults are ELSA-Swin's settings except ``group_width`` (ELSA-Swin-T uses 4).
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 7, dilation: int = 1,
                 stride: int = 1, dim_qk: int | None = None, dim_v: int | None = None,
                 group_width: int = 8, groups: int = 1, qkv_bias: bool = True,
                 qk_scale: float | None = 1.0, lam: float = 0.0, gamma: float = 1.0,
                 attn_drop: float = 0.0, proj_drop: float = 0.0,
                 fuse_softmax: bool = True) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, val in (('dim', dim), ('num_heads', num_heads), ('kernel_size', kernel_size),
                         ('dilation', dilation), ('stride', stride),
                         ('group_width', group_width), ('groups', groups)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f'{name}: {arg} must be an int >= 1, got {val!r}')
        if kernel_size % 2 == 0:
            raise ValueError(f'{name}: kernel_size must be odd, got {kernel_size}')
        dim_v = dim_v or dim
        dim_qk = dim_qk or dim // 3 * 2
        dim_qk = math.ceil(dim_qk / group_width) * group_width
        if dim_qk < 1:
            raise ValueError(f'{name}: dim_qk must be >= 1 (default dim // 3 * 2), got '
                             f'dim_qk={dim_qk} for dim={dim}')
        if dim_v % num_heads != 0:
            raise ValueError(f'{name}: dim_v must be divisible by num_heads, got dim_v={dim_v}, '
                             f'num_heads={num_heads}')
        n_logits = kernel_size ** 2 * num_heads
        if dim_qk % groups != 0 or n_logits % groups != 0:
            raise ValueError(f'{name}: groups must divide dim_qk and kernel_size**2 * num_heads, '
                             f'got groups={groups}, dim_qk={dim_qk}, '
                             f'kernel_size**2 * num_heads={n_logits}')
        self.dim, self.dim_qk, self.dim_v = dim, dim_qk, dim_v
        self.num_heads = num_heads
        self.kernel_size, self.dilation, self.stride = kernel_size, dilation, stride
        self.group_width, self.groups = group_width, groups
        self.lam, self.gamma = lam, gamma
        self.fuse_softmax = fuse_softmax
        self.scale = qk_scale if qk_scale is not None else (dim_v // num_heads) ** -0.5

        k = kernel_size
        self.qkv = nn.Conv2d(dim, 2 * dim_qk + dim_v, 1, bias=qkv_bias)
        self.attn_gen = nn.Sequential(
            nn.Conv2d(dim_qk, dim_qk, k, padding=(k // 2) * dilation, dilation=dilation,
                      groups=dim_qk // group_width),
            nn.GELU(),
            nn.Conv2d(dim_qk, n_logits, 1, groups=groups))
        if lam != 0 and gamma != 0:
            ghost = torch.cat([torch.randn(1, 1, dim_v, k, k),
                               nn.init.trunc_normal_(torch.empty(1, 1, dim_v, k, k), std=0.02)])
        elif gamma != 0:
            ghost = nn.init.trunc_normal_(torch.empty(1, dim_v, k, k), std=0.02)
        elif lam != 0:
            ghost = torch.randn(1, dim_v, k, k)
        else:
            ghost = None
        self.ghost_head = nn.Parameter(ghost) if ghost is not None else None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim_v, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, num_heads={self.num_heads}, dim_qk={self.dim_qk}, '
                f'dim_v={self.dim_v}, kernel_size={self.kernel_size}, dilation={self.dilation}, '
                f'stride={self.stride}, lam={self.lam}, gamma={self.gamma}, scale={self.scale}')

    def ghosts(self, batch: int, ref: Tensor) -> tuple[Tensor, Tensor]:
        """``(ghost_mul, ghost_add)`` for :func:`lsa.ops.elsa`, each broadcastable to
        (batch * heads, Cv / heads, k, k); ``ref`` gives the dtype/device of constants."""
        G, k = self.num_heads, self.kernel_size
        cg = self.dim_v // G

        def per_sample(p: Tensor) -> Tensor:  # (1, Cv, k, k) -> (B*G, Cv/G, k, k), head-major
            return p.view(1, G, cg, k, k).expand(batch, G, cg, k, k).reshape(batch * G, cg, k, k)

        one, zero = ref.new_ones(1, 1, 1, 1), ref.new_zeros(1, 1, 1, 1)
        gh = self.ghost_head
        if self.lam != 0 and self.gamma != 0:
            return per_sample(gh[0] ** self.lam), per_sample(gh[1] * self.gamma)
        if self.gamma != 0:
            return one, per_sample(gh * self.gamma)
        if self.lam != 0:
            return per_sample(gh ** self.lam), zero
        return one, zero

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """(B, H*W, C) tokens of an ``hw_shape`` map -> (B, (H//s)*(W//s), C)."""
        B, _, C = check_tokens(type(self).__name__, x, hw_shape, self.dim)
        H, W = hw_shape
        G, k, s = self.num_heads, self.kernel_size, self.stride
        Q, Cv = self.dim_qk, self.dim_v
        Ho, Wo = H // s, W // s
        # The 1x1 convs run as matmuls on the tokens, each in the layout its consumer
        # wants, so no layout copy is made: q, k on tokens (the k x k attention conv then
        # reads them as a channels-last map), v and the logits straight to NCHW (the ELSA
        # op's layout), the projection straight back to tokens.
        w, b = self.qkv.weight.view(-1, C), self.qkv.bias
        qk = F.linear(x, w[:2 * Q], None if b is None else b[:2 * Q])  # B, L, 2Q
        hadamard = qk[..., :Q] * qk[..., Q:]
        if self.scale != 1:
            hadamard = hadamard * self.scale
        hadamard = hadamard.view(B, H, W, Q).permute(0, 3, 1, 2)  # B, Q, H, W channels-last
        if s > 1:
            hadamard = F.avg_pool2d(hadamard, s)  # B, Q, H//s, W//s
        attn = _conv1x1_nchw(self.attn_gen[2], self.attn_gen[1](self.attn_gen[0](hadamard)))
        attn = attn.reshape(B * G, k * k, Ho, Wo)
        # without active dropout the op applies the softmax itself (one pass fewer each way)
        fused = self.fuse_softmax and not (self.training and self.attn_drop.p > 0)
        if not fused:
            attn = self.attn_drop(attn.softmax(dim=1))
        v = _linear_nchw(x, w[2 * Q:], None if b is None else b[2 * Q:])  # B, Cv, L
        v = v.view(B * G, Cv // G, H, W)
        ghost_mul, ghost_add = self.ghosts(B, v)
        out = elsa(v, attn, ghost_mul, ghost_add, k, stride=s, dilation=self.dilation,
                   softmax=fused)
        out = out.view(B, Cv, Ho * Wo).transpose(1, 2)  # B, Ho*Wo, Cv (a view)
        p = self.proj
        out = torch.baddbmm(p.bias.view(1, 1, -1), out, p.weight.t().expand(B, Cv, self.dim))
        return self.proj_drop(out)


def _linear_nchw(tokens: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``linear(tokens)`` of (B, L, Cin) tokens laid out as (B, Cout, L), without a copy."""
    B = tokens.shape[0]
    w = weight.expand(B, *weight.shape)
    x = tokens.transpose(1, 2)  # B, Cin, L (a view)
    if bias is None:
        return torch.bmm(w, x)
    return torch.baddbmm(bias.view(1, -1, 1), w, x)


def _conv1x1_nchw(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)`` for a 1x1 conv, contiguous NCHW out whatever the layout of ``x``."""
    if conv.groups != 1 or not x.is_contiguous(memory_format=torch.channels_last):
        return conv(x).contiguous()
    B, _, H, W = x.shape
    tokens = x.permute(0, 2, 3, 1).reshape(B, H * W, -1)  # a view for channels-last x
    y = _linear_nchw(tokens, conv.weight.view(conv.out_channels, -1), conv.bias)
    return y.view(B, -1, H, W)
