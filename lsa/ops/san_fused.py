"""Fused SAN pairwise attention: relation, weight MLP, softmax and aggregation in one op.

Layering: :func:`san_pairwise_attention` and :func:`san_pairwise_stats` validate, then
call ``torch.ops.lsa.san_pairwise_forward`` / ``san_pairwise_moments`` (C++ CPU / CUDA
kernels in ``csrc/san_fused/``). Both work tile by tile and never build a tensor with a
tap axis; their autograd formulas recompute the forward of a tile instead of saving
activations. Fake implementations let ``torch.compile`` trace them. The compiled ops
take float32 or float64 only; 16-bit activations (bf16, fp16) are cast to float32 here,
at the op boundary (:func:`compute_dtype`), and the output back to value's dtype, so
the kernels always accumulate in at least float32 and autograd returns each gradient in
its input's dtype (costs: float32 copies of the 16-bit activations, which the autograd
formula saves). References (the unfused composition): :mod:`lsa.ops.reference.san_fused`.
The BatchNorm glue that turns SAN's ``gamma`` into these arguments is
:mod:`lsa.ops.san_gamma`.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
from torch import Tensor

from ._checks import tensor_arg
from ._ext import HAS_EXT, refuse_double_backward, require_kernels
from ._san_args import PAD_MODES, reflect_min_size

__all__ = ['san_pairwise_attention', 'san_pairwise_stats']

FUSED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
HALF_DTYPES = (torch.bfloat16, torch.float16)


def _check_tensor(op: str, name: str, t: object, ndim: int) -> Tensor:
    t = tensor_arg(op, name, t)
    if t.dim() != ndim:
        raise ValueError(f'{op}: {name} must be {ndim}-D, got shape {tuple(t.shape)}')
    return t


def compute_dtype(op: str, activations: Dict[str, Tensor], params: Dict[str, Tensor]
                  ) -> torch.dtype:
    """The fused ops' dtype rule; returns the dtype the kernels compute in.

    All tensors on one device. The activations (u1, u2, value) share one dtype: float32 or
    float64, and then every parameter has it too (compute in it); or bfloat16 / float16,
    and then each parameter is that dtype or float32 (what CPU autocast gives: 16-bit
    activations next to float32 BatchNorm affines and weights) and the kernels compute in
    float32. Anything else (float64 next to 16-bit, integers) is a TypeError.
    """
    tensors = {**activations, **params}
    (n0, t0), *rest = tensors.items()
    for n, t in rest:
        if t.device != t0.device:
            raise RuntimeError(f'{op}: all inputs must be on one device, got {n0} on {t0.device} '
                               f'and {n} on {t.device}')
    dtype = t0.dtype
    if dtype not in FUSED_DTYPES:
        raise TypeError(f'{op}: dtype must be float32, float64, bfloat16 or float16, got '
                        f'{n0} {dtype}')
    for n, t in activations.items():
        if t.dtype != dtype:
            raise TypeError(f'{op}: the activations ({", ".join(activations)}) must have one '
                            f'dtype, got {n0} {dtype} and {n} {t.dtype}')
    allowed = (dtype, torch.float32) if dtype in HALF_DTYPES else (dtype,)
    for n, t in params.items():
        if t.dtype not in allowed:
            raise TypeError(f'{op}: with {dtype} activations the parameters must be '
                            f'{" or ".join(map(str, allowed))}, got {n} {t.dtype}')
    return torch.float32 if dtype in HALF_DTYPES else dtype


def in_dtype(dtype: torch.dtype, *tensors: Tensor) -> list[Tensor]:
    """The tensors in ``dtype`` (no copy where they have it; the cast is differentiable, so
    each gradient comes back in its input's dtype)."""
    return [t.to(dtype) for t in tensors]


def without_autocast(t: Tensor) -> torch.autocast:
    """A context with autocast off on ``t``'s device (the fused ops and their glue pick
    their dtypes themselves: matmuls must not drop to 16 bits)."""
    return torch.autocast(t.device.type, enabled=False)


def check_args(op: str, u1: Tensor, u2: Tensor, scale1: Tensor, shift1: Tensor,
               weight1: Tensor, kernel_size: int, dilation: int, pad_mode: str,
               patchwise: bool = False, **more: Tensor) -> torch.dtype:
    """Clear errors for the arguments of the fused SAN ops (pairwise and patchwise);
    returns the compute dtype (:func:`compute_dtype`).

    gamma's first layer reads ``Cr`` relation channels (pairwise) or ``Cr * (K + 1)``
    (patchwise: the centre and the unfolded window); its last layer has ``Cw`` rows
    (pairwise) or ``Cw * K`` (patchwise: one per weight channel and tap).
    """
    for name, t, nd in (('u1', u1, 4), ('u2', u2, 4), ('scale1', scale1, 1),
                        ('shift1', shift1, 1), ('weight1', weight1, 2)):
        _check_tensor(op, name, t, nd)
    for name, t in more.items():
        _check_tensor(op, name, t, 4 if name == 'value' else (2 if name == 'weight2' else 1))
    acts = dict(u1=u1, u2=u2, **({'value': more['value']} if 'value' in more else {}))
    dtype = compute_dtype(op, acts, dict(scale1=scale1, shift1=shift1, weight1=weight1,
                                         **{n: t for n, t in more.items() if n != 'value'}))
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
    ca, m = u1.shape[1] * (K + 1 if patchwise else 1), weight1.shape[0]
    expect = {'scale1': (ca,), 'shift1': (ca,), 'weight1': (m, ca), 'bias1': (m,)}
    if 'weight2' in more:
        rows = more['weight2'].shape[0]
        if patchwise and (rows < K or rows % K):
            raise ValueError(f'{op}: weight2 must have Cw * K rows (K={K}), got '
                             f'{tuple(more["weight2"].shape)}')
        expect.update(weight2=(rows, m), bias2=(rows,))
        value, cw = more['value'], max(rows // K if patchwise else rows, 1)
        if value.shape[0] != u1.shape[0] or value.shape[2:] != u1.shape[2:] \
                or value.shape[1] % cw:
            raise ValueError(f'{op}: value must be (N, C, H, W) = ({u1.shape[0]}, C, '
                             f'{u1.shape[2]}, {u1.shape[3]}) with C a multiple of the '
                             f'weight channels Cw={cw}, got {tuple(value.shape)}')
    tensors = dict(scale1=scale1, shift1=shift1, weight1=weight1, **more)
    for name, shape in expect.items():
        if name in tensors and tuple(tensors[name].shape) != shape:
            raise ValueError(f'{op}: {name} must have shape {shape}, '
                             f'got {tuple(tensors[name].shape)}')
    return dtype


def san_pairwise_attention(u1: Tensor, u2: Tensor, value: Tensor, scale1: Tensor,
                           shift1: Tensor, weight1: Tensor, bias1: Tensor, weight2: Tensor,
                           bias2: Tensor, kernel_size: int, dilation: int = 1,
                           pad_mode: str = 'reflect') -> Tensor:
    """SAN pairwise attention (Eq. 2 with gamma folded), fused.

    For pixel i and tap j of its ``kernel_size`` window (stride 1, padding
    ``dilation * (kernel_size - 1) // 2``, borders reflected or zero):
    ``a = relu(scale1 * (u1_i - u2_j) + shift1)``,
    ``l = weight2 @ relu(weight1 @ a + bias1) + bias2``, ``p = softmax_j(l)`` and
    ``y[c, i] = sum_j p[c % Cw, j] * value[c, j]``.

    Args:
        u1, u2: Centre / neighbour relation features (N, Cr, H, W) (SAN: phi(x) and
            psi(x), each followed by the 2 position channels).
        value: (N, C, H, W), ``C % Cw == 0``.
        scale1, shift1: (Cr,) the affine of gamma's first BatchNorm.
        weight1, bias1: (M, Cr), (M,) conv1 with the second BatchNorm folded in.
        weight2, bias2: (Cw, M), (Cw,) conv2.
        kernel_size: Odd window size k (K = k * k taps).
        dilation: Window dilation.
        pad_mode: ``'reflect'`` (SAN) or ``'zeros'``.

    Returns:
        (N, C, H, W).

    Dtypes: :func:`compute_dtype` (16-bit activations are computed in float32; the output
    has value's dtype, each gradient its input's); devices CPU and CUDA. Reference:
    :func:`lsa.ops.reference.san_pairwise_ref`.
    """
    op = 'san_pairwise_attention'
    dtype = check_args(op, u1, u2, scale1, shift1, weight1, kernel_size, dilation, pad_mode,
                       value=value, bias1=bias1, weight2=weight2, bias2=bias2)
    require_kernels('san_pairwise', u1)
    y = torch.ops.lsa.san_pairwise_forward(
        *in_dtype(dtype, u1, u2, value, scale1, shift1, weight1, bias1, weight2, bias2),
        kernel_size, dilation, PAD_MODES[pad_mode])
    return y.to(value.dtype)


def san_pairwise_stats(u1: Tensor, u2: Tensor, scale1: Tensor, shift1: Tensor, weight1: Tensor,
                       kernel_size: int, dilation: int = 1, pad_mode: str = 'reflect') -> Tensor:
    """Sum and sum of squares over (N, K, H*W) of ``h = weight1 @ a``,
    ``a = relu(scale1 * r + shift1)`` (the input of gamma's second BatchNorm), fused: (2, M).
    Arguments as in :func:`san_pairwise_attention`; the sums are in the compute dtype
    (float32 for 16-bit input). Reference:
    :func:`lsa.ops.reference.san_pairwise_stats_ref`.

    The kernel (``torch.ops.lsa.san_pairwise_moments``) returns ``sum a`` (Cr) and
    ``S = sum a a^T`` (Cr, Cr); then ``sum h = weight1 @ sum a`` and
    ``sum h^2 = diag(weight1 S weight1^T)``. Its backward needs only ``a`` (not gamma's
    first layer): ``da = g_a + (G + G^T) a`` for the gradients ``g_a``, ``G`` of the sums.
    """
    op = 'san_pairwise_stats'
    dtype = check_args(op, u1, u2, scale1, shift1, weight1, kernel_size, dilation, pad_mode)
    require_kernels('san_pairwise', u1)
    moments = torch.ops.lsa.san_pairwise_moments(*in_dtype(dtype, u1, u2, scale1, shift1),
                                                 kernel_size, dilation, PAD_MODES[pad_mode])
    sum_a, second = moments[0], moments[1:]
    weight1 = weight1.to(dtype)
    with without_autocast(u1):
        return torch.stack([weight1 @ sum_a, ((weight1 @ second) * weight1).sum(1)])


def register_tile_ops(name: str, moments_inputs: int,
                      moments_shape: Callable[..., Tuple[int, int]]) -> None:
    """Fake (meta) implementations and autograd formulas of the compiled tile ops
    ``lsa::<name>_forward`` (9 tensors, then kernel_size, dilation, pad_mode) and
    ``lsa::<name>_moments`` (``moments_inputs`` tensors, then the same three ints; its
    output shape is ``moments_shape(*inputs)``), through their ``*_backward`` ops."""

    def _fake_like(*tensors):
        return [torch.empty_like(t, memory_format=torch.contiguous_format) for t in tensors]

    torch.library.register_fake(f'lsa::{name}_forward')(
        lambda u1, u2, value, *args: _fake_like(value)[0])
    torch.library.register_fake(f'lsa::{name}_backward')(
        lambda grad_output, *inputs_and_args: _fake_like(*inputs_and_args[:9]))
    torch.library.register_fake(f'lsa::{name}_moments')(
        lambda u1, *args: u1.new_empty(moments_shape(u1, *args)))
    torch.library.register_fake(f'lsa::{name}_moments_backward')(
        lambda grad, *inputs_and_args: _fake_like(*inputs_and_args[:moments_inputs]))

    def _setup(ctx, inputs, n):
        ctx.save_for_backward(*inputs[:n])
        ctx.args = inputs[n:]

    def _backward(op):
        def backward(ctx, grad):
            return (*op(grad, *ctx.saved_tensors, *ctx.args), None, None, None)
        return backward

    torch.library.register_autograd(
        f'lsa::{name}_forward', _backward(getattr(torch.ops.lsa, f'{name}_backward')),
        setup_context=lambda ctx, inputs, output: _setup(ctx, inputs, 9))
    torch.library.register_autograd(
        f'lsa::{name}_moments', _backward(getattr(torch.ops.lsa, f'{name}_moments_backward')),
        setup_context=lambda ctx, inputs, output: _setup(ctx, inputs, moments_inputs))

    refuse_double_backward(
        (f'lsa::{name}_backward', f'lsa::{name}_moments_backward'),
        f'lsa::{name}: double backward (a gradient of the gradient) is not supported by the '
        "fused op; build SANAttention with fused=False (or fused='eval') for that")


if HAS_EXT and hasattr(torch.ops.lsa, 'san_pairwise_forward'):
    register_tile_ops('san_pairwise', 4, lambda u1, *args: (u1.shape[1] + 1, u1.shape[1]))
