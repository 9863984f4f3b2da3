"""The ELSA op: Hadamard local attention with a ghost head (ELSA, Zhou et al. 2021).

``lsa.ops.elsa`` normalises its arguments and calls the compiled op
``torch.ops.lsa.elsa_forward`` (CPU and CUDA kernels in ``csrc/elsa/``), whose
backward is the compiled op ``torch.ops.lsa.elsa_backward``; with ``softmax=True``
the pair ``elsa_softmax_forward`` / ``elsa_softmax_backward``, which apply the softmax
over the k*k taps to the logits inside the op. Autograd and a fake
(meta) implementation are registered here with ``torch.library`` so that the op
works under ``torch.compile``. The pure-PyTorch definition is
:func:`lsa.ops.reference.elsa_ref`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._checks import autocast_inputs, int_arg, tensor_arg
from ._ext import HAS_EXT, refuse_double_backward, require_kernels

__all__ = ['elsa']

_OP = 'elsa'


def _fake_forward(features, attn, ghost_mul, ghost_add, kernel_size, stride, dilation):
    nb, cg, h, w = features.shape
    return features.new_empty((nb, cg, h // stride, w // stride))


def _fake_backward(grad_out, features, attn, ghost_mul, ghost_add, kernel_size, stride,
                   dilation, output_mask):
    nb, cg = features.shape[:2]
    ghost = (nb, cg, kernel_size, kernel_size)  # ghost gradients come back unreduced
    shapes = (features.shape, attn.shape, ghost, ghost)
    return tuple(features.new_empty(shape if need else (0,))
                 for shape, need in zip(shapes, output_mask))


def _fake_softmax_forward(features, logits, ghost_mul, ghost_add, kernel_size, stride,
                          dilation):
    out = _fake_forward(features, logits, ghost_mul, ghost_add, kernel_size, stride, dilation)
    return out, torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output) -> None:
    features, attn, ghost_mul, ghost_add, k, s, d = inputs
    ctx.save_for_backward(features, attn, ghost_mul, ghost_add)
    ctx.geometry = (k, s, d)


def _setup_softmax_context(ctx, inputs, output) -> None:
    features, logits, ghost_mul, ghost_add, k, s, d = inputs
    probs = output[1]  # the backward reads the softmax, not the logits
    ctx.mark_non_differentiable(probs)
    ctx.save_for_backward(features, probs, ghost_mul, ghost_add)
    ctx.shapes = (features.shape, logits.shape, ghost_mul.shape, ghost_add.shape)
    ctx.geometry = (k, s, d)


def _backward(ctx, grad_out):
    mask = list(ctx.needs_input_grad[:4])
    saved = ctx.saved_tensors  # read once (activation checkpointing allows one unpack)
    grads = torch.ops.lsa.elsa_backward(grad_out, *saved, *ctx.geometry, mask)
    return _reduced(grads, [t.shape for t in saved], mask)


def _softmax_backward(ctx, grad_out, _grad_probs):
    mask = list(ctx.needs_input_grad[:4])
    grads = torch.ops.lsa.elsa_softmax_backward(grad_out, *ctx.saved_tensors, *ctx.geometry,
                                                mask)
    return _reduced(grads, ctx.shapes, mask)


def _reduced(grads, shapes, mask) -> tuple:
    # a broadcast ghost gets the sum of its (Nb, Cg, k, k) gradient over the broadcast dims
    return (*(g.sum_to_size(shape) if need else None
              for g, shape, need in zip(grads, shapes, mask)), None, None, None)


if HAS_EXT and hasattr(torch.ops.lsa, 'elsa_forward'):
    torch.library.register_fake('lsa::elsa_forward')(_fake_forward)
    torch.library.register_fake('lsa::elsa_backward')(_fake_backward)
    torch.library.register_autograd('lsa::elsa_forward', _backward,
                                    setup_context=_setup_context)
    torch.library.register_fake('lsa::elsa_softmax_forward')(_fake_softmax_forward)
    torch.library.register_fake('lsa::elsa_softmax_backward')(_fake_backward)
    torch.library.register_autograd('lsa::elsa_softmax_forward', _softmax_backward,
                                    setup_context=_setup_softmax_context)
    refuse_double_backward(('lsa::elsa_backward', 'lsa::elsa_softmax_backward'),
                           f'{_OP}: double backward (a gradient of the gradient) is not '
                           'supported; use lsa.ops.reference.elsa_ref for that')


def elsa(features: Tensor, attn: Tensor, ghost_mul: Tensor, ghost_add: Tensor,
         kernel_size: int, stride: int = 1, dilation: int = 1, softmax: bool = False) -> Tensor:
    """ELSA local attention: per-pixel attention modulated by a per-channel ghost head.

    With ``r = k // 2``, ``off(t) = (t - r) * d``::

        out[n, c, y, x] = sum_{ky, kx} features[n, c, y*s + off(ky), x*s + off(kx)]
                          * (attn[n, ky*k + kx, y, x] * ghost_mul[n, c, ky, kx]
                             + ghost_add[n, c, ky, kx])

    Taps outside the image contribute nothing (zero padding ``r * d``). Heads are
    folded into the batch by the caller: ``Nb = batch * heads``, ``Cg`` channels per
    head, and every channel of a head shares that head's ``attn``.

    Mapping from the official ``elsa_op(V, ghost_mul=M, ghost_add=D, h_attn=A, lam,
    gamma)`` (the (lam, gamma) preprocessing belongs to the ELSA module, not here)::

        ghost_mul = M ** lam if lam != 0 else features.new_ones(1, 1, 1, 1)
        ghost_add = D * gamma if gamma != 0 else features.new_zeros(1, 1, 1, 1)

    ELSA-Swin uses ``lam=0, gamma=1``: ``ghost_mul`` is the constant one (pass a
    (1, 1, 1, 1) ones tensor, no per-sample copy is needed) and ``ghost_add`` is the
    shared parameter ``ghost_head`` of shape (1, heads*Cg, k, k); it is per head, so
    lay it out per folded sample with
    ``ghost_head.view(1, heads, Cg, k, k).expand(B, -1, -1, -1, -1).reshape(B*heads, Cg, k, k)``
    (or pass it as (heads, Cg, k, k) when B == 1). Autograd reduces the gradient of
    any broadcast ghost back to its own shape.

    Args:
        features: (Nb, Cg, H, W) values ``V``.
        attn: (Nb, k*k, H // s, W // s) attention ``A``; channel ``ky*k + kx``.
        ghost_mul: multiplicative ghost, broadcastable to (Nb, Cg, k, k).
        ghost_add: additive ghost, broadcastable to (Nb, Cg, k, k).
        kernel_size: odd window size ``k``.
        stride: output stride ``s``; the output is ``H // s`` x ``W // s`` (floor).
        dilation: window dilation ``d``.
        softmax: ``attn`` holds logits and the op uses ``attn.softmax(dim=1)`` (over the
            k*k taps of each pixel), computed inside the kernels together with the op
            and its gradient (faster than a separate softmax; the softmax is kept for the
            backward, as a separate one would be).

    Returns:
        (Nb, Cg, H // s, W // s) tensor of the inputs' dtype.

    All four tensors must share one device (cpu or cuda) and one floating dtype
    (float32, float64, float16, bfloat16; half precision accumulates in float32).
    Inputs may be non-contiguous; ``Nb = 0`` gives an empty result. Under
    ``torch.autocast`` the float32/16-bit inputs are cast to the autocast dtype first and
    float64 ones are left alone, as PyTorch does (the official op instead upcast to float32
    and returned float32). Bad inputs raise ValueError/TypeError from the C++ op's checks;
    double backward raises NotImplementedError.
    """
    names = ('features', 'attn', 'ghost_mul', 'ghost_add')
    tensors = [tensor_arg(_OP, n, t) for n, t in zip(names, (features, attn, ghost_mul,
                                                               ghost_add))]
    k, s, d = (int_arg(_OP, n, v) for n, v in (('kernel_size', kernel_size), ('stride', stride),
                                                ('dilation', dilation)))
    if not isinstance(softmax, bool):
        raise TypeError(f'{_OP}: softmax must be a bool, got {softmax!r}')
    features, attn, ghost_mul, ghost_add = autocast_inputs(*tensors)
    require_kernels(_OP, features)
    if softmax:
        return torch.ops.lsa.elsa_softmax_forward(features, attn, ghost_mul, ghost_add, k, s, d)[0]
    return torch.ops.lsa.elsa_forward(features, attn, ghost_mul, ghost_add, k, s, d)
