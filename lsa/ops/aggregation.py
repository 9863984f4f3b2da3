"""SAN aggregation: weighted sum over a local window with shared weights.

Layering (the op template of ``docs/ops.md``): :func:`aggregation` normalises its arguments,
then calls ``torch.ops.lsa.aggregation_forward`` (checks and C++ CPU / CUDA kernels in
``csrc/aggregation/``); its autograd formula calls the backward ops, whose own autograd
formulas make double backward exact; fake implementations let ``torch.compile`` trace. The
pure-PyTorch :func:`lsa.ops.reference.aggregation_ref` defines the semantics.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from lsa.types import IntOr2Tuple

from ._checks import autocast_inputs, tensor_arg
from ._ext import HAS_EXT, require_kernels
from ._san_args import out_size, san_geometry

__all__ = ['aggregation', 'Aggregation']


def aggregation(input: Tensor, weight: Tensor, kernel_size: IntOr2Tuple,
                stride: IntOr2Tuple = 1, padding: IntOr2Tuple = 0, dilation: IntOr2Tuple = 1,
                pad_mode: str = 'zeros') -> Tensor:
    """Local weighted aggregation (SAN, Eq. 1/4): ``y_i = sum_{j in R(i)} w_ij * x_j``.

    ``y[n, c, h, w] = sum_kk weight[n, c % Cw, kk, h*Wo + w] * x~[n, c, hi, wi]`` with
    ``hi = -p + h*s + th*d``, ``wi = -p + w*s + tw*d``, ``kk = th*kw + tw``; ``x~`` is
    ``input`` padded with zeros or reflected once (``ReflectionPad2d``). Channel c
    uses weight channel ``c % Cw`` (interleaved sharing, as in SAN).

    Args:
        input: Features, (N, C, H, W).
        weight: Weights, (N, Cw, kh*kw, Ho*Wo) with ``C % Cw == 0``.
        kernel_size, stride, padding, dilation: Window geometry (int or (h, w) pair).
        pad_mode: ``'zeros'`` or ``'reflect'`` (needs padding < input size).

    Returns:
        (N, C, Ho, Wo), ``Ho = (H + 2p - d(k-1) - 1) // s + 1``.

    Dtypes: float32/float64/float16/bfloat16 (accumulation in fp32 for the 16-bit
    types; under ``torch.autocast`` float32/16-bit inputs are cast to the autocast dtype,
    float64 ones are left alone, as PyTorch does); devices: CPU and CUDA. Differentiable to
    any order. Bad inputs raise ValueError/TypeError from the C++ op's checks.
    Reference: :func:`lsa.ops.reference.aggregation_ref`.
    """
    op = 'aggregation'
    input, weight = autocast_inputs(tensor_arg(op, 'input', input),
                                    tensor_arg(op, 'weight', weight))
    geom = san_geometry(op, kernel_size, stride, padding, dilation, pad_mode)
    require_kernels(op, input)
    return torch.ops.lsa.aggregation_forward(input, weight, *geom.as_op_args())


class Aggregation(nn.Module):
    """Module form of :func:`aggregation` (holds the window geometry)."""

    def __init__(self, kernel_size: IntOr2Tuple, stride: IntOr2Tuple = 1,
                 padding: IntOr2Tuple = 0, dilation: IntOr2Tuple = 1,
                 pad_mode: str = 'zeros') -> None:
        super().__init__()
        san_geometry('Aggregation', kernel_size, stride, padding, dilation, pad_mode)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.pad_mode = dilation, pad_mode

    def forward(self, input: Tensor, weight: Tensor) -> Tensor:
        """(N, C, H, W), (N, Cw, K, Ho*Wo) -> (N, C, Ho, Wo)."""
        return aggregation(input, weight, self.kernel_size, self.stride, self.padding,
                           self.dilation, self.pad_mode)

    def extra_repr(self) -> str:
        return (f'kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, '
                f'dilation={self.dilation}, pad_mode={self.pad_mode!r}')


def _register() -> None:
    """Fake (meta) implementations and the autograd formula of the compiled ops."""

    @torch.library.register_fake('lsa::aggregation_forward')
    def _fake_forward(input, weight, kernel_size, stride, padding, dilation, pad_mode):
        Ho = out_size(input.shape[2], kernel_size[0], stride[0], padding[0], dilation[0])
        Wo = out_size(input.shape[3], kernel_size[1], stride[1], padding[1], dilation[1])
        return input.new_empty((input.shape[0], input.shape[1], Ho, Wo))

    @torch.library.register_fake('lsa::aggregation_backward_input')
    def _fake_backward_input(grad_output, input, weight, *args):
        return torch.empty_like(input, memory_format=torch.contiguous_format)

    @torch.library.register_fake('lsa::aggregation_backward_weight')
    def _fake_backward_weight(grad_output, input, weight, *args):
        return torch.empty_like(weight, memory_format=torch.contiguous_format)

    def _setup_context(ctx, inputs, output):
        input, weight, *args = inputs
        ctx.save_for_backward(input, weight)
        ctx.args = args

    def _backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        grad_input = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_input = ops.aggregation_backward_input(grad_output, input, weight, *ctx.args)
        if ctx.needs_input_grad[1]:
            grad_weight = ops.aggregation_backward_weight(grad_output, input, weight, *ctx.args)
        return grad_input, grad_weight, None, None, None, None, None

    # The backward ops are bilinear; their derivatives are again aggregation ops, so every
    # order of differentiation is exact. With y = F(x, w) (the forward), bi(g, w) = F_x^T g
    # and bw(g, x) = F_w^T g: <bi(g, w), u> = <g, F(u, w)> and <bw(g, x), v> = <g, F(x, v)>.
    # `input` of bi and `weight` of bw give only shapes (no gradient).

    def _setup_context_bwd(ctx, inputs, output):
        grad_output, input, weight, *args = inputs
        ctx.save_for_backward(grad_output, input, weight)
        ctx.args = args

    def _backward_of_backward_input(ctx, gg):  # gg: gradient w.r.t. grad_input
        grad_output, input, weight = ctx.saved_tensors
        d_go = d_w = None
        if ctx.needs_input_grad[0]:
            d_go = ops.aggregation_forward(gg, weight, *ctx.args)
        if ctx.needs_input_grad[2]:
            d_w = ops.aggregation_backward_weight(grad_output, gg, weight, *ctx.args)
        return d_go, None, d_w, None, None, None, None, None

    def _backward_of_backward_weight(ctx, gg):  # gg: gradient w.r.t. grad_weight
        grad_output, input, weight = ctx.saved_tensors
        d_go = d_x = None
        if ctx.needs_input_grad[0]:
            d_go = ops.aggregation_forward(input, gg, *ctx.args)
        if ctx.needs_input_grad[1]:
            d_x = ops.aggregation_backward_input(grad_output, input, gg, *ctx.args)
        return d_go, d_x, None, None, None, None, None, None

    ops = torch.ops.lsa
    torch.library.register_autograd('lsa::aggregation_forward', _backward,
                                    setup_context=_setup_context)
    torch.library.register_autograd('lsa::aggregation_backward_input',
                                    _backward_of_backward_input, setup_context=_setup_context_bwd)
    torch.library.register_autograd('lsa::aggregation_backward_weight',
                                    _backward_of_backward_weight,
                                    setup_context=_setup_context_bwd)


if HAS_EXT and hasattr(torch.ops.lsa, 'aggregation_forward'):
    _register()
