"""Swin (shifted) window multi-head self-attention with a relative position bias.

The layout is Microsoft Swin's (``qkv`` rows in q, k, v order; bias table
``(2w-1)^2 x heads`` indexed by ``(dy + w-1) * (2w-1) + (dx + w-1)`` with
``dy = y_i - y_j``). ELSA-Swin's stage-3 checkpoint stores the same attention
with two quirks (``pre_proj`` rows in v, q, k order; ``rb`` of shape
``(heads, (2w-1)^2)`` indexed by the *negated* offset). Those quirks live in the
converter (:mod:`lsa.converters.elsa`), not here, so this module also serves as
the plain Swin baseline.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lsa.registry import MODELS

from .common import check_tokens, window_partition, window_reverse


def relative_position_index(window_size: int) -> Tensor:
    """(N, N) index into the bias table, N = window_size**2, Swin convention.

    Entry (i, j) is ``(y_i - y_j + w - 1) * (2w - 1) + (x_i - x_j + w - 1)``.
    """
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size),
                                        indexing='ij')).flatten(1)  # 2, N
    rel = coords[:, :, None] - coords[:, None, :] + window_size - 1  # 2, N, N
    return rel[0] * (2 * window_size - 1) + rel[1]


def shifted_window_mask(hw_padded: tuple[int, int], window_size: int, shift_size: int,
                        device: torch.device | None = None) -> Tensor:
    """(nW, N, N) additive mask (0 / -100) for the cyclically shifted windows.

    Tokens of one window that came from different regions of the padded,
    rolled map must not attend to each other (Swin's -100 convention).
    """
    Hp, Wp = hw_padded
    region = torch.zeros(1, Hp, Wp, 1, device=device)
    cuts = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    label = 0
    for hs in cuts:
        for ws in cuts:
            region[:, hs, ws, :] = label
            label += 1
    win = window_partition(region, window_size).reshape(-1, window_size * window_size)  # nW, N
    diff = win[:, None, :] - win[:, :, None]  # nW, N, N
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


@MODELS.register_module()
class ShiftWindowAttention(nn.Module):
    """Swin W-MSA / SW-MSA: attention inside non-overlapping (shifted) windows.

    Token I/O: ``forward(x, hw_shape)`` takes x of shape (B, H*W, C) (row-major
    tokens of an H x W map) and returns (B, H*W, C). Any H, W work: the map is
    zero-padded right/bottom to window multiples and cropped afterwards.

    Per window (N = window_size**2 tokens, heads h, head dim d = C / h)::

        q, k, v = split(qkv(x))                       # each (h, N, d)
        attn = softmax(q @ k^T * scale + B_rel (+ mask))
        out = proj(attn @ v)

    with ``B_rel[h, i, j] = relative_position_bias_table[index(i, j), h]``.

    Args:
        dim: Channels C.
        num_heads: Heads h; must divide ``dim``.
        window_size: Window side w.
        shifted: Roll the map by ``w // 2`` before partitioning (SW-MSA) and mask
            attention between tokens from different regions. Swin blocks
            alternate ``shifted=False/True``; the hosts set it per block.
        qkv_bias: Bias in the q/k/v projection.
        qk_scale: Logit scale; None means ``d ** -0.5``.
        attn_drop: Dropout on the attention weights.
        proj_drop: Dropout after the output projection.
        pad_small_map: What to do when ``min(H, W) <= w``. False (classification
            Swin, the official ELSA-Swin classifier): no shift for such a map
            (a map smaller than the window is padded). True (the official det/seg
            backbones): shift and mask as for any other map.
    """

    #: Hosts flip ``shifted`` on every other block for attention types that set this.
    alternate_shift = True

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shifted: bool = False,
                 qkv_bias: bool = True, qk_scale: float | None = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, pad_small_map: bool = False) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f'{name}: window_size must be an int >= 1, got {window_size!r}')
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f'{name}: dim must be divisible by num_heads, got dim={dim}, '
                             f'num_heads={num_heads}')
        if shifted and window_size < 2:
            raise ValueError(f'{name}: a shifted window needs window_size >= 2, got {window_size}')
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = window_size // 2 if shifted else 0
        self.pad_small_map = pad_small_map
        head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else head_dim ** -0.5

        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer('relative_position_index', relative_position_index(window_size),
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, '
                f'shift_size={self.shift_size}, pad_small_map={self.pad_small_map}')

    def relative_position_bias(self) -> Tensor:
        """(heads, N, N) bias added to the logits of every window."""
        N = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(N, N, self.num_heads).permute(2, 0, 1)

    def window_attention(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention within windows: (B*nW, N, C) -> (B*nW, N, C); mask (nW, N, N)."""
        Bw, N, C = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(Bw, N, 3, h, C // h).permute(2, 0, 3, 1, 4)  # 3, Bw, h, N, d
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.relative_position_bias()  # Bw,h,N,N
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(Bw // nW, nW, h, N, N) + mask[None, :, None]
            attn = attn.view(Bw, h, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(Bw, N, C)
        return self.proj_drop(self.proj(out))

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """(B, H*W, C) tokens of an ``hw_shape`` map -> (B, H*W, C)."""
        B, _, C = check_tokens(type(self).__name__, x, hw_shape, self.dim)
        H, W = hw_shape
        ws = self.window_size
        shift = self.shift_size
        if min(H, W) <= ws and not self.pad_small_map:
            shift = 0
        x = x.view(B, H, W, C)
        pad_r, pad_b = (ws - W % ws) % ws, (ws - H % ws) % ws
        if pad_r or pad_b:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        mask = None
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            mask = shifted_window_mask((Hp, Wp), ws, shift, x.device).to(x.dtype)
        windows = window_partition(x, ws).reshape(-1, ws * ws, C)  # B*nW, N, C
        windows = self.window_attention(windows, mask)
        x = window_reverse(windows.reshape(-1, ws, ws, C), ws, Hp, Wp)  # B, Hp, Wp, C
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x[:, :H, :W, :].reshape(B, H * W, C)
