"""SAN's weight MLP ``gamma`` (BN-ReLU-conv1x1-BN-ReLU-conv1x1) as fused-op arguments.

The fused ops take gamma with both BatchNorms reduced to per-channel affines. In eval
mode the affines come from the running statistics (BN2 folded into conv1). In training
mode they come from the batch statistics ``nn.BatchNorm2d`` would compute on the
tap-expanded tensors, without building those tensors:

- pairwise (over (N, K, H*W)): BN1 normalises the relation ``r = u1_i - u2_j``; its mean
  and variance follow in closed form from (N, C, H, W)-sized sums
  (:func:`relation_moments`); BN2's sums come from the fused statistics pass
  (:func:`lsa.ops.san_fused.san_pairwise_stats`);
- patchwise (over (N, H*W)): BN1 normalises ``[u1, unfold(u2)]``; the unfolded channels'
  moments are window sums of u2 and u2^2 (:func:`patch_moments`); BN2's sums come from
  :func:`lsa.ops.san_patchwise.san_patchwise_stats`.

Both are differentiable, so autograd sees the same function as the unfused module, and
``running_mean``/``running_var``/``num_batches_tracked`` are updated as BatchNorm does.
With 16-bit activations (a bf16 module, or CPU autocast) the statistics and affines are
computed in float32 with autocast off, and the fused ops return value's dtype.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batchnorm import bn_affine, update_running_stats
from .san_fused import in_dtype, san_pairwise_attention, san_pairwise_stats, without_autocast
from .san_patchwise import san_patchwise_attention, san_patchwise_stats

__all__ = ['patch_moments', 'relation_moments', 'san_pairwise_gamma_attention',
           'san_patchwise_gamma_attention']


def _tap_counts(length: int, kernel_size: int, dilation: int, pad_mode: str,
                device: torch.device) -> Tensor:
    """How many (output, tap) pairs of one axis read each input index: (length,)."""
    p = dilation * (kernel_size - 1) // 2
    v = (torch.arange(length, device=device).view(1, -1)
         + (torch.arange(kernel_size, device=device) * dilation - p).view(-1, 1)).flatten()
    if pad_mode == 'reflect':
        v = v.abs()
        v = torch.where(v >= length, 2 * (length - 1) - v, v)
    else:
        v = v[(v >= 0) & (v < length)]
    return torch.bincount(v, minlength=length)


def relation_moments(u1: Tensor, u2: Tensor, kernel_size: int, dilation: int = 1,
                     pad_mode: str = 'reflect') -> Tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance over (N, K, H*W) of ``r = u1_i - u2_j``
    (j = tap of i; zero padding reads 0), from sums over (N, C, H, W): two (C,) tensors.

    ``sum r = K sum u1 - sum cnt u2`` and
    ``sum r^2 = K sum u1^2 - 2 sum u1 box(u2) + sum cnt u2^2``, where ``cnt`` counts the
    taps reading a pixel and ``box`` sums a pixel's taps. With reflect padding both
    inputs are first shifted by the mean of u1 (r does not change) against cancellation.
    16-bit inputs are summed in float32 (the results are float32).
    """
    with without_autocast(u1):
        return _relation_moments(*in_dtype(_stats_dtype(u1), u1, u2), kernel_size, dilation,
                                 pad_mode)


def _relation_moments(u1: Tensor, u2: Tensor, kernel_size: int, dilation: int,
                      pad_mode: str) -> Tuple[Tensor, Tensor]:
    N, C, H, W = u1.shape
    K, p = kernel_size * kernel_size, dilation * (kernel_size - 1) // 2
    if pad_mode == 'reflect':
        centre = u1.detach().mean((0, 2, 3), keepdim=True)
        u1, u2 = u1 - centre, u2 - centre
    cnt = (_tap_counts(H, kernel_size, dilation, pad_mode, u1.device).view(H, 1)
           * _tap_counts(W, kernel_size, dilation, pad_mode, u1.device).view(1, W)).to(u1.dtype)
    padded = F.pad(u2, (p, p, p, p), mode='reflect' if pad_mode == 'reflect' else 'constant')
    box = F.conv2d(padded, u2.new_ones(C, 1, kernel_size, kernel_size), dilation=dilation,
                   groups=C)
    total = N * K * H * W
    mean = (K * u1.sum((0, 2, 3)) - (u2 * cnt).sum((0, 2, 3))) / total
    sq = (K * (u1 * u1).sum((0, 2, 3)) - 2 * (u1 * box).sum((0, 2, 3))
          + (u2 * u2 * cnt).sum((0, 2, 3))) / total
    return mean, (sq - mean * mean).clamp_min(0)


def patch_moments(u1: Tensor, u2: Tensor, kernel_size: int, dilation: int = 1,
                  pad_mode: str = 'reflect') -> Tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance over (N, H*W) of patchwise gamma's input
    ``[u1, unfold(u2)]`` (R * (K + 1) channels, the unfold channel-major ``c * K + k``;
    zero padding reads 0) without unfolding: two (R * (K + 1),) tensors.

    Channel (c, k) sums u2[c] over the H x W slice of the padded map at tap k's offset;
    one depthwise convolution of the batch sums of padded u2 and u2^2 with an H x W box
    gives all K slices. With reflect padding u2 is first shifted by its mean (the
    variance does not change) against cancellation. 16-bit inputs are summed in float32
    (the results are float32).
    """
    with without_autocast(u1):
        return _patch_moments(*in_dtype(_stats_dtype(u1), u1, u2), kernel_size, dilation,
                              pad_mode)


def _patch_moments(u1: Tensor, u2: Tensor, kernel_size: int, dilation: int,
                   pad_mode: str) -> Tuple[Tensor, Tensor]:
    N, R, H, W = u1.shape
    p, count = dilation * (kernel_size - 1) // 2, N * H * W
    centre = u2.detach().mean((0, 2, 3), keepdim=True) if pad_mode == 'reflect' else 0
    padded = F.pad(u2 - centre, (p, p, p, p), mode='reflect' if pad_mode == 'reflect'
                   else 'constant')
    sums = torch.cat([padded.sum(0), (padded * padded).sum(0)])  # 2R, H + 2p, W + 2p
    box = F.conv2d(sums[None], sums.new_ones(2 * R, 1, H, W), groups=2 * R)
    box = box[0, :, ::dilation, ::dilation].reshape(2, R * kernel_size ** 2) / count
    mean2 = box[0] + (centre.flatten().repeat_interleave(kernel_size ** 2)
                      if pad_mode == 'reflect' else 0)
    var2 = (box[1] - box[0] * box[0]).clamp_min(0)
    return (torch.cat([u1.mean((0, 2, 3)), mean2]),
            torch.cat([u1.var((0, 2, 3), unbiased=False), var2]))


def _stats_dtype(t: Tensor) -> torch.dtype:
    """The dtype statistics of ``t`` are taken in: at least float32."""
    return torch.promote_types(t.dtype, torch.float32)


def _bn_affine(bn: nn.BatchNorm2d, batch_moments: Callable[[], Tuple[Tensor, Tensor]],
               count: int) -> Tuple[Tensor, Tensor]:
    """``(scale, shift)`` with ``bn(t) == scale * t + shift`` for this call, using batch
    statistics exactly when ``bn.forward`` would, and updating its running statistics."""
    if bn.training or bn.running_mean is None:
        mean, var = batch_moments()
        update_running_stats(bn, mean, var, count)
        return bn_affine(bn, mean, var)
    return bn_affine(bn, *in_dtype(_stats_dtype(bn.running_mean), bn.running_mean,
                                   bn.running_var))


def _folded_gamma(gamma: nn.Module, count: int,
                  input_moments: Callable[[], Tuple[Tensor, Tensor]],
                  hidden_sums: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Tuple[Tensor, ...]:
    """gamma's BatchNorms folded for this call: ``(scale1, shift1, weight1, bias1, weight2,
    bias2)``, the fused ops' arguments. ``input_moments()`` gives BN1's batch statistics,
    ``hidden_sums(scale1, shift1, weight1)`` the (2, M) sums of conv1's output over the
    ``count`` positions BN2 normalises."""
    scale1, shift1 = _bn_affine(gamma.norm1, input_moments, count)
    weight1 = gamma.conv1.weight.flatten(1)
    conv1_bias = gamma.conv1.bias

    def hidden_moments() -> Tuple[Tensor, Tensor]:
        sums = hidden_sums(scale1, shift1, weight1) / count
        mean = sums[0] if conv1_bias is None else sums[0] + conv1_bias
        return mean, (sums[1] - sums[0] * sums[0]).clamp_min(0)

    scale2, shift2 = _bn_affine(gamma.norm2, hidden_moments, count)
    bias1 = shift2 if conv1_bias is None else shift2 + scale2 * conv1_bias
    conv2 = gamma.conv2
    bias2 = conv2.bias if conv2.bias is not None else conv2.weight.new_zeros(conv2.out_channels)
    return scale1, shift1, scale2[:, None] * weight1, bias1, conv2.weight.flatten(1), bias2


def san_pairwise_gamma_attention(x1: Tensor, x2: Tensor, pos: Tensor, value: Tensor,
                                 gamma: nn.Module, kernel_size: int, dilation: int = 1,
                                 pad_mode: str = 'reflect') -> Tensor:
    """SAN pairwise attention with gamma given as its modules (fused path of SANAttention).

    Args:
        x1, x2: phi(x) and psi(x), (N, R, H, W).
        pos: The position encoding, (1, 2, H, W).
        value: beta(x), (N, C, H, W).
        gamma: Has ``norm1`` (BatchNorm2d, R + 2), ``conv1`` (1x1, R + 2 -> M),
            ``norm2`` (BatchNorm2d, M), ``conv2`` (1x1, M -> Cw, C % Cw == 0).

    Returns:
        (N, C, H, W), equal to aggregating ``value`` with ``softmax_K(gamma(relation))``.
    """
    N, _, H, W = x1.shape
    pos = pos.expand(N, -1, -1, -1)
    u1, u2 = torch.cat([x1, pos], 1), torch.cat([x2, pos], 1)
    window = (kernel_size, dilation, pad_mode)
    args = _folded_gamma(
        gamma, N * kernel_size * kernel_size * H * W,
        lambda: relation_moments(u1, u2, *window),
        lambda s1, t1, w1: san_pairwise_stats(u1, u2, s1, t1, w1, *window))
    return san_pairwise_attention(u1, u2, value, *args, *window)


def san_patchwise_gamma_attention(x1: Tensor, x2: Tensor, value: Tensor, gamma: nn.Module,
                                  kernel_size: int, dilation: int = 1,
                                  pad_mode: str = 'reflect') -> Tensor:
    """SAN patchwise attention with gamma given as its modules (fused path of SANAttention).

    Args:
        x1, x2: phi(x) and psi(x), (N, R, H, W).
        value: beta(x), (N, C, H, W).
        gamma: Has ``norm1`` (BatchNorm2d, R * (K + 1)), ``conv1`` (1x1 -> M),
            ``norm2`` (BatchNorm2d, M), ``conv2`` (1x1, M -> Cw * K, C % Cw == 0).

    Returns:
        (N, C, H, W), equal to aggregating ``value`` with ``gamma([x1, unfold(x2)])``.
    """
    N, _, H, W = x1.shape
    window = (kernel_size, dilation, pad_mode)
    args = _folded_gamma(
        gamma, N * H * W, lambda: patch_moments(x1, x2, *window),
        lambda s1, t1, w1: san_patchwise_stats(x1, x2, s1, t1, w1, *window))
    return san_patchwise_attention(x1, x2, value, *args, *window)
