"""Non-overlapping patch embedding, shared by the Swin, DeiT, PVT hosts."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .common import nchw_to_nlc, to_2tuple


class PatchEmbed(nn.Module):
    """Conv patchify (kernel = stride = patch) -> tokens, optional LayerNorm.

    (B, C_in, H, W) -> ``(tokens (B, ceil(H/p) * ceil(W/p), C), (ceil(H/p), ceil(W/p)))``.
    Inputs whose sides are not multiples of the patch are zero-padded at the bottom/right
    first (as the official det/seg Swin backbones; a no-op at the official 224).

    Args:
        in_channels: C_in.
        embed_dims: C.
        patch_size: p (int or pair).
        norm_eps: LayerNorm ``eps`` after the projection; None: no norm.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int | tuple[int, int],
                 norm_eps: float | None = None) -> None:
        super().__init__()
        self.patch_size = to_2tuple(patch_size)
        self.proj = nn.Conv2d(in_channels, embed_dims, self.patch_size, stride=self.patch_size)
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps) if norm_eps is not None else None

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        ph, pw = self.patch_size
        pad_h, pad_w = -x.shape[2] % ph, -x.shape[3] % pw
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)  # B, C, H/p, W/p
        hw = (x.shape[2], x.shape[3])
        x = nchw_to_nlc(x)
        if self.norm is not None:
            x = self.norm(x)
        return x, hw
