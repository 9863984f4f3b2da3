"""SAN subtraction / subtraction2: centre minus each neighbour of a local window.

Layering (the op template of ``docs/ops.md``): :func:`subtraction` and :func:`subtraction2`
normalise their arguments, then call ``torch.ops.lsa.subtraction2_forward`` (checks and C++
CPU / CUDA kernels in ``csrc/subtraction/``; ``subtraction(x)`` is ``subtraction2(x, x)``,
autograd adds the two gradients). Its autograd formula calls ``subtraction2_backward``
(given the input size only), whose own formula is the forward op; fake implementations let
``torch.compile`` trace it. References: :mod:`lsa.ops.reference.san`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from lsa.types import IntOr2Tuple

from ._checks import autocast_inputs, tensor_arg
from ._ext import HAS_EXT, require_kernels
from ._san_args import out_size, san_geometry

__all__ = ['subtraction', 'subtraction2', 'Subtraction', 'Subtraction2']


def subtraction2(input1: Tensor, input2: Tensor, kernel_size: IntOr2Tuple,
                 stride: IntOr2Tuple = 1, padding: IntOr2Tuple = 0, dilation: IntOr2Tuple = 1,
                 pad_mode: str = 'zeros') -> Tensor:
    """Pairwise relation of SAN (Eq. 3, ``delta = phi(x_i) - psi(x_j)``).

    ``y[n, c, kk, h*Wo + w] = x1~[n, c, hc, wc] - x2~[n, c, hi, wi]`` with the
    neighbour ``hi = -p + h*s + th*d`` (``kk = th*kw + tw``) and the centre the middle
    tap ``hc = -p + h*s + ((kh-1)//2)*d`` (the input pixel ``(h*s, w*s)`` with SAN's
    padding ``p = d(k-1)/2``); ``x~`` is zero padded or reflected once.

    Args:
        input1: Centre features, (N, C, H, W).
        input2: Neighbour features, (N, C, H, W).
        kernel_size, stride, padding, dilation: Window geometry (int or (h, w) pair).
        pad_mode: ``'zeros'`` or ``'reflect'`` (needs padding < input size).

    Returns:
        (N, C, kh*kw, Ho*Wo).

    Dtypes: float32/float64/float16/bfloat16 (under ``torch.autocast`` float32/16-bit inputs
    are cast to the autocast dtype, float64 ones are left alone); devices: CPU and CUDA.
    Differentiable to any order. Bad inputs raise ValueError/TypeError from the C++ checks.
    Reference: :func:`lsa.ops.reference.subtraction2_ref`.
    """
    op = 'subtraction2'
    input1, input2 = autocast_inputs(tensor_arg(op, 'input1', input1),
                                     tensor_arg(op, 'input2', input2))
    return _subtraction2(op, input1, input2, kernel_size, stride, padding, dilation, pad_mode)


def subtraction(input: Tensor, kernel_size: IntOr2Tuple, stride: IntOr2Tuple = 1,
                padding: IntOr2Tuple = 0, dilation: IntOr2Tuple = 1,
                pad_mode: str = 'zeros') -> Tensor:
    """``subtraction2(input, input, ...)``: (N, C, H, W) -> (N, C, kh*kw, Ho*Wo).

    Used by SAN for relative positions. Reference: :func:`lsa.ops.reference.subtraction_ref`.
    """
    op = 'subtraction'
    (input,) = autocast_inputs(tensor_arg(op, 'input', input))
    return _subtraction2(op, input, input, kernel_size, stride, padding, dilation, pad_mode)


def _subtraction2(op, input1, input2, kernel_size, stride, padding, dilation, pad_mode):
    geom = san_geometry(op, kernel_size, stride, padding, dilation, pad_mode)
    require_kernels('subtraction2', input1)
    return torch.ops.lsa.subtraction2_forward(input1, input2, *geom.as_op_args())


class _SubtractionBase(nn.Module):
    def __init__(self, kernel_size: IntOr2Tuple, stride: IntOr2Tuple = 1,
                 padding: IntOr2Tuple = 0, dilation: IntOr2Tuple = 1,
                 pad_mode: str = 'zeros') -> None:
        super().__init__()
        san_geometry(type(self).__name__, kernel_size, stride, padding, dilation, pad_mode)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.pad_mode = dilation, pad_mode

    def _geom(self) -> tuple:
        return self.kernel_size, self.stride, self.padding, self.dilation, self.pad_mode

    def extra_repr(self) -> str:
        return (f'kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, '
                f'dilation={self.dilation}, pad_mode={self.pad_mode!r}')


class Subtraction(_SubtractionBase):
    """Module form of :func:`subtraction`."""

    def forward(self, input: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, K, Ho*Wo)."""
        return subtraction(input, *self._geom())


class Subtraction2(_SubtractionBase):
    """Module form of :func:`subtraction2`."""

    def forward(self, input1: Tensor, input2: Tensor) -> Tensor:
        """(N, C, H, W) x 2 -> (N, C, K, Ho*Wo)."""
        return subtraction2(input1, input2, *self._geom())


def _register() -> None:
    """Fake (meta) implementations and the autograd formula of the compiled ops."""

    @torch.library.register_fake('lsa::subtraction2_forward')
    def _fake_forward(input1, input2, kernel_size, stride, padding, dilation, pad_mode):
        Ho = out_size(input1.shape[2], kernel_size[0], stride[0], padding[0], dilation[0])
        Wo = out_size(input1.shape[3], kernel_size[1], stride[1], padding[1], dilation[1])
        K = kernel_size[0] * kernel_size[1]
        return input1.new_empty((input1.shape[0], input1.shape[1], K, Ho * Wo))

    @torch.library.register_fake('lsa::subtraction2_backward')
    def _fake_backward(grad_output, input_size, *args):
        return grad_output.new_empty(input_size), grad_output.new_empty(input_size)

    def _setup_context(ctx, inputs, output):
        input1, _, *args = inputs
        ctx.input_size = list(input1.shape)  # the backward needs only the size: keep no input
        ctx.args = args

    def _backward(ctx, grad_output):
        grad1, grad2 = ops.subtraction2_backward(grad_output, ctx.input_size, *ctx.args)
        return grad1, grad2, None, None, None, None, None

    # The backward op is linear in grad_output and is the transpose of the forward:
    # <bwd(g), (u1, u2)> = <g, subtraction2(u1, u2)>, so its derivative is the forward op
    # (exact at every order).

    def _setup_context_bwd(ctx, inputs, output):
        ctx.args = inputs[2:]

    def _backward_of_backward(ctx, gg1, gg2):
        d_go = ops.subtraction2_forward(gg1, gg2, *ctx.args) if ctx.needs_input_grad[0] else None
        return d_go, None, None, None, None, None, None

    ops = torch.ops.lsa
    torch.library.register_autograd('lsa::subtraction2_forward', _backward,
                                    setup_context=_setup_context)
    torch.library.register_autograd('lsa::subtraction2_backward', _backward_of_backward,
                                    setup_context=_setup_context_bwd)


if HAS_EXT and hasattr(torch.ops.lsa, 'subtraction2_forward'):
    _register()
