"""CPU fast paths of common modules for maps the caller owns: the same values, less memory.

Each takes the module it stands in for and calls it unchanged whenever the fast path
does not apply: another device, a subclass or hooked module, a gradient where the
fast path has none, and graph capture (``torch.jit`` tracing, which the FLOP counter
uses, and ``torch.compile``), so counted and compiled graphs see the modules.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ['batch_norm_', 'conv1x1', 'max_pool_2x2', 'must_run_module']


_GLOBAL_HOOKS = ('_global_forward_hooks', '_global_forward_pre_hooks',
                 '_global_backward_hooks', '_global_backward_pre_hooks')
_MODULE_HOOKS = ('_forward_hooks', '_forward_pre_hooks', '_backward_hooks',
                 '_backward_pre_hooks')


def must_run_module(x: Tensor, module: nn.Module | None, cls: type | None = None) -> bool:
    """Whether the module must run as itself (the fast path does not apply): ``x`` not a
    plain CPU tensor (another device, a tensor subclass such as a fake tensor), graph
    capture, or ``module`` not exactly ``cls`` or with any forward or backward hook (its
    own or a global one)."""
    if (x.device.type != 'cpu' or type(x) is not torch.Tensor or torch.jit.is_tracing()
            or torch.compiler.is_compiling()):
        return True
    if module is None:
        return False
    return (type(module) is not cls or any(getattr(module, h) for h in _MODULE_HOOKS)
            or any(getattr(nn.modules.module, h) for h in _GLOBAL_HOOKS))


def conv1x1(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(x)`` for a 1x1, stride-1, ungrouped ``nn.Conv2d`` on a contiguous NCHW map,
    as one batched GEMM.

    (O, C) @ (N, C, H*W) writes the NCHW output directly: oneDNN (used with more than
    one thread) would reorder the map to its blocked layout and back, a second
    output-sized buffer (at SAN's full-resolution stem, 98 MiB at batch 8).
    """
    w = conv.weight
    if (must_run_module(x, conv, nn.Conv2d) or w.shape[2:] != (1, 1) or conv.stride != (1, 1)
            or conv.groups != 1 or conv.padding not in ((0, 0), 'valid')
            or conv.padding_mode != 'zeros' or x.dim() != 4 or not x.is_contiguous()
            or x.shape[0] == 0):
        return conv(x)
    (N, C, H, W), O = x.shape, w.shape[0]
    x2, w2 = x.flatten(2), w.view(O, C)
    if torch.is_autocast_enabled('cpu'):  # as autocast runs bmm: in its lower precision
        dtype = torch.get_autocast_dtype('cpu')
        x2, w2 = x2.to(dtype), w2.to(dtype)
    y = _Conv1x1GEMM.apply(x2, w2).view(N, O, H, W)
    return y if conv.bias is None else y.add_(conv.bias.view(1, -1, 1, 1))


class _Conv1x1GEMM(torch.autograd.Function):
    """(N, C, L) map, (O, C) weight -> (N, O, L) by one batched GEMM (N >= 1).

    bmm, not matmul: matmul folds (O, C) @ (N, C, L) into one GEMM with a transposed output.
    The weight gradient is summed over the batch inside N GEMMs; autograd's own backward of
    the expanded weight would build it per sample first, an (N, O, C) tensor (33.5 MB at
    SAN10's last stage in a batch-4 training step). Backward and jvp are differentiable
    ops, so double backward and forward-mode AD are exact; ``torch.func`` transforms work
    (setup_context, generated vmap rule).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, w: Tensor) -> Tensor:
        return torch.bmm(w.expand(x.shape[0], *w.shape), x)

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, w = ctx.saved_tensors
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.bmm(w.t().expand(x.shape[0], *w.t().shape), grad)
        if ctx.needs_input_grad[1]:
            gw = grad[0] @ x[0].t()
            for n in range(1, x.shape[0]):
                gw = torch.addmm(gw, grad[n], x[n].t())
        return gx, gw

    @staticmethod
    def jvp(ctx, dx: Tensor | None, dw: Tensor | None) -> Tensor:
        x, w = ctx.saved_tensors
        out = None if dx is None else torch.bmm(w.expand(x.shape[0], *w.shape), dx)
        if dw is not None:
            term = torch.bmm(dw.expand(x.shape[0], *dw.shape), x)
            out = term if out is None else out + term
        return out


def batch_norm_(x: Tensor, bn: nn.Module) -> Tensor:
    """``bn(x)``, written into ``x`` in inference.

    With no gradient recorded, an eval-mode ``nn.BatchNorm2d`` normalises ``x`` in place
    through the same kernel (``native_batch_norm``: bitwise the values ``bn(x)`` gives),
    so a large map is not held twice. Otherwise (training, other norms, a dtype other
    than the norm's, ...) ``bn(x)``.
    """
    if (must_run_module(x, bn, nn.BatchNorm2d) or bn.training or bn.running_mean is None
            or torch.is_grad_enabled() or x.dtype != bn.running_mean.dtype):
        return bn(x)
    empty = x.new_empty(0)
    torch.ops.aten.native_batch_norm.out(x, bn.weight, bn.bias, bn.running_mean,
                                         bn.running_var, False, 0.0, bn.eps, out=x,
                                         save_mean=empty, save_invstd=empty)
    return x


def max_pool_2x2(x: Tensor) -> Tensor:
    """``F.max_pool2d(x, 2)`` (floor mode); in inference on NCHW maps, without indices.

    PyTorch's CPU max-pool on an NCHW map computes the int64 argmax map even when no
    gradient is needed (twice the size of its fp32 output) and is slow there (7x the
    time at SAN's 224x224 stem). With no gradient recorded and a contiguous input, the
    pool is two element-wise maxima of strided views, a few channels at a time
    (temporaries of ~1 MB): bitwise the same values, NaN included.
    """
    if must_run_module(x, None) or torch.is_grad_enabled() or not x.is_contiguous() or x.dim() != 4:
        return F.max_pool2d(x, 2)
    N, C, H, W = x.shape
    H2, W2 = H // 2, W // 2
    out = x.new_empty((N, C, H2, W2))
    step = max(1, (1 << 18) // max(1, N * H * W2))  # channels per chunk
    for c in range(0, C, step):
        xs = x[:, c:c + step, :2 * H2, :2 * W2]
        cols = torch.maximum(xs[..., 0::2], xs[..., 1::2])  # (N, step, 2 H2, W2)
        torch.maximum(cols[..., 0::2, :], cols[..., 1::2, :], out=out[:, c:c + step])
    return out
