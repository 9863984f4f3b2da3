"""Unfused references of the fused SAN patchwise attention (the composition it replaces).

Notation: u1, u2 (N, R, H, W) phi(x) and psi(x), value (N, C, H, W), K = k * k taps of a
"same" window (stride 1, padding d(k-1)/2), gamma folded to ``scale1, shift1``
(R * (K + 1)), ``weight1`` (M, R * (K + 1)), ``bias1`` (M), ``weight2`` (Cw * K, M),
``bias2`` (Cw * K).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._san_args import san_geometry
from .san import _unfold, aggregation_ref


def _hidden(u1: Tensor, u2: Tensor, scale1: Tensor, shift1: Tensor, weight1: Tensor,
            kernel_size: int, dilation: int, pad_mode: str) -> Tensor:
    """conv1's output ``weight1 @ relu(scale1 * t + shift1)``, (N, M, H*W), where
    ``t = [u1, unfold(u2)]`` (N, R * (K + 1), H*W), the unfold channel-major."""
    N, R = u1.shape[:2]
    p = dilation * (kernel_size - 1) // 2
    geom = san_geometry('san_patchwise_ref', kernel_size, 1, p, dilation, pad_mode)
    t = torch.cat([u1.flatten(2), _unfold(u2, geom).reshape(N, -1, u1.shape[2] * u1.shape[3])], 1)
    a = torch.relu(t * scale1.view(1, -1, 1) + shift1.view(1, -1, 1))
    return torch.einsum('mc,ncl->nml', weight1, a)


def san_patchwise_ref(u1: Tensor, u2: Tensor, value: Tensor, scale1: Tensor, shift1: Tensor,
                      weight1: Tensor, bias1: Tensor, weight2: Tensor, bias2: Tensor,
                      kernel_size: int, dilation: int = 1, pad_mode: str = 'reflect') -> Tensor:
    """``aggregation(value, weight2 @ relu(weight1 @ a + bias1) + bias2)`` with
    ``a = relu(scale1 * [u1, unfold(u2)] + shift1)``, conv2's row o = (o // K, tap o % K):
    (N, C, H, W)."""
    z = torch.relu(_hidden(u1, u2, scale1, shift1, weight1, kernel_size, dilation, pad_mode)
                   + bias1.view(1, -1, 1))
    w = torch.einsum('om,nml->nol', weight2, z) + bias2.view(1, -1, 1)
    K = kernel_size * kernel_size
    w = w.view(u1.shape[0], -1, K, w.shape[-1])
    p = dilation * (kernel_size - 1) // 2
    return aggregation_ref(value, w, kernel_size, 1, p, dilation, pad_mode)


def san_patchwise_stats_ref(u1: Tensor, u2: Tensor, scale1: Tensor, shift1: Tensor,
                            weight1: Tensor, kernel_size: int, dilation: int = 1,
                            pad_mode: str = 'reflect') -> Tensor:
    """Sum and sum of squares of conv1's output over (N, H*W): (2, M)."""
    h = _hidden(u1, u2, scale1, shift1, weight1, kernel_size, dilation, pad_mode)
    return torch.stack([h.sum((0, 2)), (h * h).sum((0, 2))])
