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
from ._san_args import PAD_MODES, reflect_min_size
from .san_fused import _check_same, _check_tensor, register_tile_ops

__all__ = ['san_patchwise_attention', 'san_patchwise_stats']


def _check(op: str, u1: Tensor, u2: Tensor, scale1: Tensor, shift1: Tensor, weight1: Tensor,
           kernel_size: int, dilation: int, pad_mode: str, **more: Tensor) -> None:
    for name, t, nd in (('u1', u1, 4), ('u2', u2, 4), ('scale1', scale1, 1),
                        ('shift1', shift1, 1), ('weight1', weight1, 2)):
        _check_tensor(op, name, t, nd)
    for name, t in more.items():
        _check_tensor(op, name, t, 4 if name == 'value' else (2 if name == 'weight2' else 1))
    _check_same(op, u1=u1, u2=u2, scale1=scale1, shift1=shift1, weight1=weight1, **more)
    if pad_mode not in PAD_MODES:
        raise ValueError(f'{op}: pad_mode must be one of {sorted(PAD_MODES)}, got {pad_mode!r}')
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 \
            or kernel_size % 2 == 0:
        raise ValueError(f'{op}: kernel_size must be a positive odd int, got {kernel_size!r}')
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f'{op}: dilation must be an int >= 1, got {dilation!r}')
    p, (H, W) = dilation * (kernel_size - 1) // 2, u1.shape[2:]
    if pad_mode == 'reflect' and min(H, W) < reflect_min_size(p):
        raise ValueError(f"{op}: pad_mode='reflect' needs padding < input size, got "
                         f'padding={(p, p)} for an input of size {(H, W)}')
    if u2.shape != u1.shape:
        raise ValueError(f'{op}: u2 must have the shape of u1 {tuple(u1.shape)}, '
                         f'got {tuple(u2.shape)}')
    K = kernel_size * kernel_size
    ca, m = u1.shape[1] * (K + 1), weight1.shape[0]
    expect = {'scale1': (ca,), 'shift1': (ca,), 'weight1': (m, ca), 'bias1': (m,)}
    if 'weight2' in more:
        rows = more['weight2'].shape[0]
        if rows < K or rows % K:
            raise ValueError(f'{op}: weight2 must have Cw * K rows (K={K}), got '
                             f'{tuple(more["weight2"].shape)}')
        expect.update(weight2=(rows, m), bias2=(rows,))
        value, cw = more['value'], rows // K
        if value.shape[0] != u1.shape[0] or value.shape[2:] != u1.shape[2:] \
                or value.shape[1] % cw:
            raise ValueError(f'{op}: value must be (N, C, H, W) = ({u1.shape[0]}, C, '
                             f'{u1.shape[2]}, {u1.shape[3]}) with C a multiple of '
                             f'Cw={cw}, got {tuple(value.shape)}')
    tensors = dict(scale1=scale1, shift1=shift1, weight1=weight1, **more)
    for name, shape in expect.items():
        if name in tensors and tuple(tensors[name].shape) != shape:
            raise ValueError(f'{op}: {name} must have shape {shape}, '
                             f'got {tuple(tensors[name].shape)}')


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

    Dtypes float32/float64; devices CPU and CUDA. Reference:
    :func:`lsa.ops.reference.san_patchwise_ref`.
    """
    op = 'san_patchwise_attention'
    _check(op, u1, u2, scale1, shift1, weight1, kernel_size, dilation, pad_mode, value=value,
           bias1=bias1, weight2=weight2, bias2=bias2)
    require_kernels('san_patchwise', u1)
    return torch.ops.lsa.san_patchwise_forward(u1, u2, value, scale1, shift1, weight1, bias1,
                                               weight2, bias2, kernel_size, dilation,
                                               PAD_MODES[pad_mode])


def san_patchwise_stats(u1: Tensor, u2: Tensor, scale1: Tensor, shift1: Tensor, weight1: Tensor,
                        kernel_size: int, dilation: int = 1, pad_mode: str = 'reflect') -> Tensor:
    """Sum and sum of squares over (N, H*W) of ``h = weight1 @ relu(scale1 * t + shift1)``
    (the input of gamma's second BatchNorm), fused: (2, M). Arguments as in
    :func:`san_patchwise_attention`. Reference: :func:`lsa.ops.reference.san_patchwise_stats_ref`.
    """
    op = 'san_patchwise_stats'
    _check(op, u1, u2, scale1, shift1, weight1, kernel_size, dilation, pad_mode)
    require_kernels('san_patchwise', u1)
    return torch.ops.lsa.san_patchwise_moments(u1, u2, scale1, shift1, weight1, kernel_size,
                                               dilation, PAD_MODES[pad_mode])


if HAS_EXT and hasattr(torch.ops.lsa, 'san_patchwise_forward'):
    register_tile_ops('san_patchwise', 5, lambda u1, u2, s1, t1, weight1, *args:
                      (2, weight1.shape[0]))
