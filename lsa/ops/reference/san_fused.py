"""Unfused references of the fused SAN pairwise attention (the composition it replaces).

Notation: u1, u2 (N, Cr, H, W) the centre / neighbour relation features, value
(N, C, H, W), K = k * k taps of a "same" window (stride 1, padding d(k-1)/2),
gamma's MLP folded to ``scale1, shift1`` (Cr), ``weight1`` (M, Cr), ``bias1`` (M),
``weight2`` (Cw, M), ``bias2`` (Cw).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .san import aggregation_ref, subtraction2_ref


def _hidden(u1: Tensor, u2: Tensor, scale1: Tensor, shift1: Tensor, weight1: Tensor,
            kernel_size: int, dilation: int, pad_mode: str) -> Tensor:
    """conv1's output ``weight1 @ relu(scale1 * r + shift1)``, (N, M, K, H*W)."""
    p = dilation * (kernel_size - 1) // 2
    r = subtraction2_ref(u1, u2, kernel_size, 1, p, dilation, pad_mode)  # N, Cr, K, L
    a = torch.relu(r * scale1.view(1, -1, 1, 1) + shift1.view(1, -1, 1, 1))
    return torch.einsum('mc,nckl->nmkl', weight1, a)


def san_pairwise_ref(u1: Tensor, u2: Tensor, value: Tensor, scale1: Tensor, shift1: Tensor,
                     weight1: Tensor, bias1: Tensor, weight2: Tensor, bias2: Tensor,
                     kernel_size: int, dilation: int = 1, pad_mode: str = 'reflect') -> Tensor:
    """``aggregation(value, softmax_K(weight2 @ relu(weight1 @ a + bias1) + bias2))`` with
    ``a = relu(scale1 * (u1_i - u2_j) + shift1)``: (N, C, H, W)."""
    z = torch.relu(_hidden(u1, u2, scale1, shift1, weight1, kernel_size, dilation, pad_mode)
                   + bias1.view(1, -1, 1, 1))
    logits = torch.einsum('jm,nmkl->njkl', weight2, z) + bias2.view(1, -1, 1, 1)
    p = dilation * (kernel_size - 1) // 2
    return aggregation_ref(value, logits.softmax(2), kernel_size, 1, p, dilation, pad_mode)


def san_pairwise_stats_ref(u1: Tensor, u2: Tensor, scale1: Tensor, shift1: Tensor,
                           weight1: Tensor, kernel_size: int, dilation: int = 1,
                           pad_mode: str = 'reflect') -> Tensor:
    """Sum and sum of squares of conv1's output over (N, K, H*W): (2, M)."""
    z = _hidden(u1, u2, scale1, shift1, weight1, kernel_size, dilation, pad_mode)
    return torch.stack([z.sum((0, 2, 3)), (z * z).sum((0, 2, 3))])
