"""Unfold-based references of the SAN ops (Zhao et al., CVPR 2020).

Notation: input (N, C, H, W), window k, stride s, padding p, dilation d,
K = kh * kw taps (``kk = th * kw + tw``), output (Ho, Wo) with
``Ho = (H + 2p - d(k-1) - 1) // s + 1``, L = Ho * Wo. Tap ``(th, tw)`` of output
``(h, w)`` reads input ``(-p + h*s + th*d, -p + w*s + tw*d)``; out-of-range reads are
0 (``'zeros'``) or reflected once (``'reflect'``, ``ReflectionPad2d`` semantics).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lsa.types import IntOr2Tuple

from .._san_args import SanGeometry, out_size, san_geometry


def _pad(x: Tensor, geom: SanGeometry) -> Tensor:
    ph, pw = geom.padding
    if geom.pad_mode == 1 and (ph or pw):
        return F.pad(x, (pw, pw, ph, ph), mode='reflect')
    return F.pad(x, (pw, pw, ph, ph))


def _unfold(x: Tensor, geom: SanGeometry) -> Tensor:
    """All K taps of every output position: (N, C, H, W) -> (N, C, K, L)."""
    N, C = x.shape[:2]
    cols = F.unfold(_pad(x, geom), geom.kernel_size, dilation=geom.dilation, stride=geom.stride)
    return cols.view(N, C, geom.kernel_size[0] * geom.kernel_size[1], -1)


def _centre(x: Tensor, geom: SanGeometry) -> Tensor:
    """The middle tap ``((kh-1)//2, (kw-1)//2)`` of every output position: (N, C, 1, L)."""
    (H, W), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = x.shape[2:], *geom[:4]
    Ho, Wo = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    oh, ow = (kh - 1) // 2 * dh, (kw - 1) // 2 * dw
    c = _pad(x, geom)[:, :, oh:oh + (Ho - 1) * sh + 1:sh, ow:ow + (Wo - 1) * sw + 1:sw]
    return c.reshape(x.shape[0], x.shape[1], 1, Ho * Wo)


def aggregation_ref(input: Tensor, weight: Tensor, kernel_size: IntOr2Tuple,
                    stride: IntOr2Tuple = 1, padding: IntOr2Tuple = 0,
                    dilation: IntOr2Tuple = 1, pad_mode: str = 'zeros') -> Tensor:
    """``y[n, c, h, w] = sum_kk weight[n, c % Cw, kk, h*Wo + w] * x~[n, c, tap kk of (h, w)]``.

    Args:
        input: (N, C, H, W).
        weight: (N, Cw, K, L) with ``C % Cw == 0``; channel c uses weight channel c % Cw.

    Returns:
        (N, C, Ho, Wo).
    """
    geom = san_geometry('aggregation_ref', kernel_size, stride, padding, dilation, pad_mode)
    N, C, H, W = input.shape
    Cw, K, L = weight.shape[1:]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom[:4]
    Ho, Wo = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    cols = _unfold(input, geom).reshape(N, C // Cw, Cw, K, L)  # N, G, Cw, K, L
    return (weight.unsqueeze(1) * cols).sum(3).reshape(N, C, Ho, Wo)


def subtraction2_ref(input1: Tensor, input2: Tensor, kernel_size: IntOr2Tuple,
                     stride: IntOr2Tuple = 1, padding: IntOr2Tuple = 0,
                     dilation: IntOr2Tuple = 1, pad_mode: str = 'zeros') -> Tensor:
    """``y[n, c, kk, q] = x1~[n, c, centre tap of q] - x2~[n, c, tap kk of q]``.

    The centre is the middle tap, read through the same padding as the neighbours;
    with SAN's padding ``p = d(k-1)/2`` it is input pixel ``(h*s, w*s)``.

    Args:
        input1, input2: (N, C, H, W).

    Returns:
        (N, C, K, L).
    """
    geom = san_geometry('subtraction2_ref', kernel_size, stride, padding, dilation, pad_mode)
    return _centre(input1, geom) - _unfold(input2, geom)


def subtraction_ref(input: Tensor, kernel_size: IntOr2Tuple, stride: IntOr2Tuple = 1,
                    padding: IntOr2Tuple = 0, dilation: IntOr2Tuple = 1,
                    pad_mode: str = 'zeros') -> Tensor:
    """``subtraction2_ref(input, input, ...)``: (N, C, H, W) -> (N, C, K, L)."""
    return subtraction2_ref(input, input, kernel_size, stride, padding, dilation, pad_mode)
