"""Absolute position embeddings at any input size."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import nlc_to_nchw


def resize_pos_embed(pos_embed: Tensor, src_hw: Sequence[int], dst_hw: Sequence[int],
                     num_prefix: int = 0, mode: str = 'bicubic') -> Tensor:
    """Interpolate a (1, P + h*w, C) position embedding to a (1, P + H*W, C) one.

    The ``num_prefix`` leading entries (class token) are kept; the grid part is resized
    with ``F.interpolate`` (``align_corners=False``). Identity when the sizes agree.
    """
    src_hw, dst_hw = tuple(src_hw), tuple(dst_hw)
    if src_hw == dst_hw:
        return pos_embed
    h, w = src_hw
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    if grid.shape[1] != h * w:
        raise ValueError(f'resize_pos_embed: {grid.shape[1]} grid entries do not match {src_hw}')
    grid = nlc_to_nchw(grid, (h, w))
    grid = F.interpolate(grid, size=dst_hw, mode=mode, align_corners=False)
    return torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)
