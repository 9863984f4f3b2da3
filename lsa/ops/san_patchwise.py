"""Fused SAN patchwise attention: gamma's first layer, its MLP and the aggregation in one op.

Layering as in :mod:`lsa.ops.san_fused`: :func:`san_patchwise_attention` and
:func:`san_patchwise_stats` validate, then call ``torch.ops.lsa.san_patchwise_forward`` /
``san_patchwise_moments`` (C++ CPU / CUDA kernels in ``csrc/san_patchwise/``). Per tile
of 64 pixels they read gamma's input (the centre's ``u1`` and the unfolded window of
``u2``) through the tap runs and never build a tensor with a tap axis; their autograd
formulas recompute a tile's forward instead of saving activations. References (the
unfused composition): :mod:`lsa.ops.reference.san_patchwise`. The BatchNorm glue is
:func:`lsa.ops.san_gamma.san_patchwise_gamma_attention`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._ext import HAS_EXT, require_kernels
from ._san_args import PAD_MODES
from .san_fused import check_args, in_dtype, register_tile_ops

__all__ = ['san_patchwise_attention', 'san_patchwise_stats']


def san_patchwise_attention(u1: Tensor, u2: Tensor, value: Tensor, scale1: Tensor,
                            shift1: Tensor, weight1: Tensor, bias1: Tensor, weight2: Tensor,
                            bias2: Tensor, kernel_size: int, dilation: int = 1,
                            pad_mode: str = 'reflect') -> Tensor:
    """SAN patchwise attention (Eq. 4, sa_type 1, gamma folded), fused.

    For pixel i with taps j_k of its ``kernel_size`` window (stride 1, padding
    ``dilation * (kernel_size - 1) // 2``, borders reflected or zero):
    ``t = [u1_i, u2[c, j_k] at row R + c * K + k]`` (R * (K + 1) channels),
    ``w = weight2 @ relu(weight1 @ relu(scale1 * t + shift1) + bias1) + bias2`` (Cw * K,
    row ``j * K + k``) and ``y[c, i] = sum_k w[(c % Cw) * K + k] * value[c, j_k]``.

    Args:
        u1, u2: phi(x) and psi(x), (N, R, H, W).
        value: (N, C, H, W), ``C % Cw == 0``.
        scale1, shift1: (R * (K + 1),) the affine of gamma's first BatchNorm.
        weight1, bias1: (M, R * (K + 1)), (M,) conv1 with the second BatchNorm folded in.
        weight2, bias2: (Cw * K, M), (Cw * K,) conv2.
        kernel_size: Odd window size k (K = k * k taps).
        dilation: Window dilation.
        pad_mode: ``'reflect'`` (SAN) or ``'zeros'``.

    Returns:
        (N, C, H, W).

    Dtypes: :func:`lsa.ops.san_fused.compute_dtype` (16-bit activations are computed in
    float32; the output has value's dtype, each gradient its input's); devices CPU and
    CUDA. Reference:
    :func:`lsa.ops.reference.san_patchwise_ref`.
    """
    op = 'san_patchwise_attention'
    dtype = check_args(op, u1, u2, scale1, shift1, weight1, kernel_size, dilation, pad_mode,
                       patchwise=True, value=value, bias1=bias1, weight2=weight2, bias2=bias2)
    require_kernels('san_patchwise', u1)
    y = torch.ops.lsa.san_patchwise_forward(
        *in_dtype(dtype, u1, u2, value, scale1, shift1, weight1, bias1, weight2, bias2),
        kernel_size, dilation, PAD_MODES[pad_mode])
    return y.to(value.dtype)


def san_patchwise_stats(u1: Tensor, u2: Tensor, scale1: Tensor, shift1: Tensor, weight1: Tensor,
                        kernel_size: int, dilation: int = 1, pad_mode: str = 'reflect') -> Tensor:
    """Sum and sum of squares over (N, H*W) of ``h = weight1 @ relu(scale1 * t + shift1)``
    (the input of gamma's second BatchNorm), fused: (2, M), in the compute dtype (float32 for
    16-bit input). Arguments as in :func:`san_patchwise_attention`. Reference:
    :func:`lsa.ops.reference.san_patchwise_stats_ref`.
    """
    op = 'san_patchwise_stats'
    dtype = check_args(op, u1, u2, scale1, shift1, weight1, kernel_size, dilation, pad_mode,
                       patchwise=True)
    require_kernels('san_patchwise', u1)
    return torch.ops.lsa.san_patchwise_moments(*in_dtype(dtype, u1, u2, scale1, shift1, weight1),
                                               kernel_size, dilation, PAD_MODES[pad_mode])


if HAS_EXT and hasattr(torch.ops.lsa, 'san_patchwise_forward'):
    register_tile_ops('san_patchwise', 5, lambda u1, u2, s1, t1, weight1, *args:
                      (2, weight1.shape[0]))
