"""CPU fast paths for ``max_pool2d(relu(bn(conv1x1(x))), 2)`` (SAN's full-resolution stem
and the pool in front of its first stage) that allocate no full-resolution map for the
whole batch: in training, and in inference (BatchNorm folded into the conv, the window
elements a chunk of samples at a time; at batch 8 the plain stem's map is 98 MB).

The plain modules create about five (N, O, H, W) maps in a training step (conv output, BN
output, the pool's zero-filled gradient, ReLU's and BN's gradients) plus the pool's int64
argmax map; at SAN10's 224x224 stem, batch 4, each is 51 MB, above glibc's 32 MiB mmap
ceiling, so every one is a fresh mmap whose pages fault in. Here:

- BatchNorm's batch statistics follow from the input's moments, since the 1x1 conv is
  linear: ``mean_o = w_o . mu`` and ``var_o = w_o^T Cov w_o`` with ``mu`` (C,) and the
  centred ``Cov`` (C, C) of ``x`` over (N, H, W), accumulated in float64 (two passes,
  so no ``E[x^2] - E[x]^2`` cancellation; for C = 3 these are tiny);
- the pooled map is computed a few samples at a time from the four elements of each
  2x2 window (temporaries of a few MB, reused by the allocator);
- backward recomputes each chunk's window elements, routes the gradient through the ReLU
  to the element ``F.max_pool2d`` chose (:func:`relu_max_pool_backward_`), and reduces
  BatchNorm's and the conv's gradients to per-channel sums: with ``dy`` the gradient at
  the BN output and ``T_o = sum_p dy_o(p) (x(p) - mu)`` (an (O, C) sum over the chosen
  elements only),
  ``dbeta = S1 = sum dy``, ``dgamma = S2 = invstd * (w_o . T_o)``,
  ``dW_o = scale_o (T_o - S2_o invstd_o Cov w_o)`` and
  ``dx = W^T (scale * dy) - W^T (scale S1) / M - W^T diag(scale S2 invstd / M) W (x - mu)``.
"""
from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
from torch import Tensor

from lsa.ops.batchnorm import update_running_stats

from .fast_paths import max_pool_2x2, must_run_module

__all__ = ['conv_bn_relu_max_pool_2x2', 'relu_max_pool_backward_']

_CHUNK_BYTES = 8 << 20  # per chunk of samples: the (c, O, 4, H//2 * W//2) window elements


def conv_bn_relu_max_pool_2x2(x: Tensor, stem: nn.Module) -> Tensor:
    """``max_pool_2x2(stem(x))`` for a stem computing ``stem.act(stem.norm(stem.conv(x)))``.

    On CPU, for a float32/float64 contiguous NCHW ``x``, ``conv`` an unhooked 1x1 stride-1
    bias-free ``nn.Conv2d``, ``norm`` an affine ``nn.BatchNorm2d`` tracking running
    statistics, ``act`` an ``nn.ReLU``, no hooks on ``stem``, and no autocast, tracing,
    ``torch.compile``, ``torch.func`` transform or forward-mode AD, without
    full-resolution maps (see the module docstring): in training (gradient enabled,
    ``norm`` training) the same values and gradients and the same running-statistics
    update; in inference (no gradient, ``norm`` in eval mode) the same values up to
    rounding (the BatchNorm folded into the conv). Otherwise ``stem(x)`` and
    :func:`~lsa.models.layers.fast_paths.max_pool_2x2`. The caller vouches that
    ``stem.forward`` is that composition.

    Shapes: (N, C, H, W) -> (N, O, H // 2, W // 2).
    """
    norm = getattr(stem, 'norm', None)
    if _applies(x, stem, training=True):
        return _ConvBNReLUMaxPool2x2.apply(x, stem.conv.weight, norm.weight, norm.bias, norm)
    if _applies(x, stem, training=False):
        return _pooled_inference(x, stem.conv.weight, norm)
    return max_pool_2x2(stem(x))


def _pooled_inference(x: Tensor, weight: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    """Inference (no gradient, BatchNorm on its running statistics): the pooled map from
    the folded conv + BatchNorm, a chunk of samples at a time (equal to the modules up to
    rounding: the BatchNorm is folded into the conv)."""
    scale = bn.weight.double() * (bn.running_var.double() + bn.eps).rsqrt()
    return _pooled(x, _folded(weight.flatten(1).double(), scale, bn.running_mean.double(),
                              bn.bias))


def _pooled(x: Tensor, wk: Tensor) -> Tensor:
    """``relu(max over each 2x2 window of wk @ [x; 1])``: (N, C, H, W), (O, C + 1) ->
    (N, O, H // 2, W // 2), a chunk of samples at a time (see :func:`_window_chunks`)."""
    N, C, H, W = x.shape
    O = wk.shape[0]
    out = x.new_empty((N, O, H // 2, W // 2))
    z = None
    for n0, xw in _window_chunks(x, O):
        z = torch.matmul(wk, xw, out=z if z is not None and len(z) == len(xw) else None)
        torch.amax(z.unflatten(2, (4, -1)), 2, out=out[n0:n0 + len(xw)].flatten(2))
    return out.relu_()


def _applies(x: Tensor, stem: nn.Module, training: bool) -> bool:
    """Whether the training (gradient enabled, BatchNorm on batch statistics) or the
    inference (no gradient, BatchNorm on running statistics) fast path applies."""
    conv, bn, act = (getattr(stem, name, None) for name in ('conv', 'norm', 'act'))
    if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            and isinstance(act, nn.ReLU)):
        return False
    if (must_run_module(x, stem, type(stem)) or must_run_module(x, conv, nn.Conv2d)
            or must_run_module(x, bn, nn.BatchNorm2d) or must_run_module(x, act, nn.ReLU)):
        return False
    if (torch.is_grad_enabled() != training or torch.is_autocast_enabled('cpu')
            or x.dtype not in (torch.float32, torch.float64) or x.dim() != 4
            or not x.is_contiguous() or min(x.shape[2:]) < 2 or x.shape[0] == 0):
        return False
    if torch._C._functorch.peek_interpreter_stack() is not None or any(
            fwAD.unpack_dual(t).tangent is not None
            for t in (x, conv.weight, bn.weight, bn.bias)):
        return False  # torch.func transforms, forward-mode AD: this Function has neither
    conv_ok = (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
               and conv.padding in ((0, 0), 'valid') and conv.bias is None
               and conv.in_channels == x.shape[1] and conv.weight.dtype == x.dtype)
    bn_ok = (bn.training == training and bn.track_running_stats
             and bn.running_mean is not None and bn.affine
             and bn.num_features == conv.out_channels and bn.weight.dtype == x.dtype)
    return conv_ok and bn_ok


def relu_max_pool_backward_(z: Tensor, grad: Tensor) -> Tensor:
    """The gradient of ``relu(max over each 2x2 window)`` w.r.t. the window elements, as
    CPU ``F.max_pool2d`` (after a ReLU) routes it, written into ``z``.

    ``z`` (..., 4, L) holds each window's elements in row-major order ((0, 0), (0, 1),
    (1, 0), (1, 1)); ``grad`` (..., L) is the gradient of the pooled map. The pool scans
    a window in that order and takes an element greater than the current maximum or
    NaN, so the first maximum wins ties and the last NaN wins; the ReLU passes the
    gradient where the chosen value is not <= 0 (NaN included). Returns ``z``.
    """
    value = z.amax(-2)  # the chosen value (NaN if any element is NaN)
    mask = torch.gt(value, 0, out=torch.empty_like(value))  # 0/1 in z's dtype: fast
    d = grad * mask
    if not torch.isfinite(value.sum() + d.sum()):
        return _relu_max_pool_backward_scan_(z, grad)
    # all finite: the first element equal to the maximum takes the gradient
    for j in range(3):
        zj = z.select(-2, j)
        d.sub_(torch.mul(d, torch.eq(zj, value, out=mask), out=zj))
    z.select(-2, 3).copy_(d)
    return z


def _relu_max_pool_backward_scan_(z: Tensor, grad: Tensor) -> Tensor:
    """:func:`relu_max_pool_backward_` as the pool's own scan (exact with NaN and inf)."""
    value = z.select(-2, 0).clone()
    index = torch.zeros(value.shape, dtype=torch.uint8)
    for j in (1, 2, 3):
        v = z.select(-2, j)
        take = torch.gt(v, value).logical_or_(v.isnan())
        torch.where(take, v, value, out=value)
        index.masked_fill_(take, j)
    d = grad.masked_fill(value <= 0, 0).unsqueeze(-2)
    onehot = index.unsqueeze(-2) == torch.arange(4, dtype=torch.uint8).view(4, 1)
    return torch.where(onehot, d, z.new_zeros(()), out=z)


def _window_chunks(x: Tensor, out_channels: int):
    """Yield ``(n0, xw)`` per chunk of samples: ``xw`` (c, C + 1, 4 * L), L = H//2 * W//2,
    holds ``x`` at the four elements of each pooling window (the last odd row/column,
    which floor pooling drops, left out) and a channel of ones (for the BN shift). A
    chunk's (c, out_channels, 4, L) map of window elements takes about ``_CHUNK_BYTES``
    (at least one sample)."""
    N, C, H, W = x.shape
    H2, W2 = H // 2, W // 2
    step = max(1, _CHUNK_BYTES // (out_channels * 4 * H2 * W2 * x.element_size()))
    for n0 in range(0, N, step):
        xs = x[n0:n0 + step, :, :2 * H2, :2 * W2]
        c = xs.shape[0]
        xw = x.new_empty((c, C + 1, 2, 2, H2, W2))
        # (c, C, H2, 2, W2, 2) -> (c, C, 2, 2, H2, W2)
        xw[:, :C].copy_(xs.unflatten(3, (W2, 2)).unflatten(2, (H2, 2)).permute(0, 1, 3, 5, 2, 4))
        xw[:, C].fill_(1)
        yield n0, xw.view(c, C + 1, 4 * H2 * W2)


def _input_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 mean (C,) and biased centred covariance (C, C) of ``x`` over (N, H, W)."""
    N, C = x.shape[:2]
    count = x.numel() // C
    mu = x.sum((0, 2, 3), dtype=torch.float64) / count
    cov = x.new_zeros((C, C), dtype=torch.float64)
    step = max(1, _CHUNK_BYTES // (x[0].numel() * 8))
    for n0 in range(0, N, step):
        xc = x[n0:n0 + step].flatten(2).double() - mu.view(1, C, 1)
        cov += torch.bmm(xc, xc.transpose(1, 2)).sum(0)
    return mu, cov / count


def _folded(w64: Tensor, scale: Tensor, mean: Tensor, beta: Tensor) -> Tensor:
    """BN(conv(.)) as one (O, C + 1) matrix on ``[x; 1]``: the conv weight times BN's
    ``scale`` (O,), then BN's shift ``beta - scale * mean`` with ``mean`` (O,) the conv
    output's mean (the batch's in training, the running one in inference); in ``beta``'s
    dtype.

    ``x`` is not centred first: equal inputs whose products are exact (zeros, as in
    padded or black regions) give bitwise-equal values at every position, as in the
    plain modules, so the pool breaks those ties the same way."""
    shift = beta.double() - scale * mean
    return torch.cat([scale[:, None] * w64, shift[:, None]], 1).to(beta.dtype)


class _ConvBNReLUMaxPool2x2(torch.autograd.Function):
    """(x, conv weight (O, C, 1, 1), bn weight (O,), bn bias (O,), bn) -> pooled (N, O, H/2, W/2)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, gamma: Tensor, beta: Tensor,
                bn: nn.BatchNorm2d) -> Tensor:
        count = x.numel() // x.shape[1]
        w64 = weight.detach().flatten(1).double()
        mu, cov = _input_moments(x)
        mean, var = w64 @ mu, ((w64 @ cov) * w64).sum(1).clamp_min(0)
        update_running_stats(bn, mean, var, count)
        invstd = (var + bn.eps).rsqrt()
        wk = _folded(w64, gamma.detach().double() * invstd, mean, beta)
        ctx.save_for_backward(x, weight, gamma, beta)
        ctx.stats = (mu, cov, invstd, mean)
        return _pooled(x, wk)

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: not a silently constant backward
            raise NotImplementedError(
                'conv_bn_relu_max_pool_2x2 (the training fast path of the SAN stem): double '
                'backward (a gradient of the gradient) is not supported; build SAN with '
                'fast_stem=False (and SANAttention with fused=False) for that')
        return _backward(ctx, grad)


def _backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
    """Gradients of x, conv weight, BN weight and bias (see the module docstring)."""
    x, weight, gamma, beta = ctx.saved_tensors
    mu, cov, invstd, mean = ctx.stats
    N, C, H, W = x.shape
    O, count, f64 = weight.shape[0], N * H * W, torch.float64
    w64 = weight.flatten(1).double()
    scale = gamma.double() * invstd
    wk = _folded(w64, scale, mean, beta)
    grad = grad.contiguous()
    need_x = ctx.needs_input_grad[0]
    dx = torch.zeros_like(x) if need_x else None
    t = x.new_zeros((O, C + 1), dtype=f64)  # [sum_p dy(p) (x(p) - mu)^T, sum_p dy(p)]
    mu_x = mu.to(x.dtype).view(1, C, 1)
    z = None
    for n0, xw in _window_chunks(x, O):
        c = len(xw)
        z = torch.matmul(wk, xw, out=z if z is not None and len(z) == c else None)
        # dy, the gradient at BN's output (zero outside the pooling windows' choices)
        dy = relu_max_pool_backward_(z.unflatten(2, (4, -1)), grad[n0:n0 + c].flatten(2))
        dy = dy.flatten(2)
        xw[:, :C] -= mu_x  # centred for the product: no cancellation against s1 * mu
        t += torch.matmul(dy, xw.transpose(1, 2)).sum(0, dtype=f64)
        if need_x:  # W^T (scale * dy), back to the window elements' places
            part = torch.matmul(wk[:, :C].t(), dy)
            H2, W2 = H // 2, W // 2
            dx[n0:n0 + c, :, :2 * H2, :2 * W2].unflatten(3, (W2, 2)).unflatten(
                2, (H2, 2)).copy_(part.view(c, C, 2, 2, H2, W2).permute(0, 1, 4, 2, 5, 3))
    s1, t = t[:, C], t[:, :C] - t[:, C:] * (mu - mu_x.view(C).double())  # exact centring
    s2 = invstd * (w64 * t).sum(1)
    grad_w = scale[:, None] * (t - (s2 * invstd)[:, None] * (w64 @ cov))
    if need_x:
        a = w64.t() @ ((scale * s2 * invstd / count)[:, None] * w64)  # (C, C)
        b = w64.t() @ (scale * s1 / count) - a @ mu  # (C,)
        dense = torch.matmul(a.to(x.dtype), x.flatten(2)).add_(b.to(x.dtype).view(C, 1))
        dx.flatten(2).sub_(dense)
    grads = (grad_w.to(weight.dtype).view_as(weight), s2.to(gamma.dtype),
             s1.to(beta.dtype))
    return (dx, *(g if need else None for g, need in zip(grads, ctx.needs_input_grad[1:4])),
            None)
