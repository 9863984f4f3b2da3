"""The ELSA op: Hadamard local attention with a ghost head (ELSA, Zhou et al. 2021).

``lsa.ops.elsa`` validates its inputs and calls the compiled op
``torch.ops.lsa.elsa_forward`` (CPU and CUDA kernels in ``csrc/elsa/``), whose
backward is the compiled op ``torch.ops.lsa.elsa_backward``. Autograd and a fake
(meta) implementation are registered here with ``torch.library`` so that the op
works under ``torch.compile``. The pure-PyTorch definition is
:func:`lsa.ops.reference.elsa_ref`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._checks import FLOAT_DTYPES, check_device_dtype, check_same, positive_int
from ._ext import HAS_EXT, require_ext

__all__ = ['elsa']

_OP = 'elsa'


def _check_ghost(name: str, t: object, target: tuple) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f'{_OP}: {name} must be a torch.Tensor, got {type(t).__name__}')
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f'{_OP}: {name} must be a floating tensor '
                        f'(float32/float64/float16/bfloat16), got {t.dtype}')
    shape = tuple(t.shape)
    ok = t.dim() <= 4 and all(a in (1, b) for a, b in zip(shape[::-1], target[::-1]))
    if not ok:
        raise ValueError(f'{_OP}: {name} of shape {shape} is not broadcastable to '
                         f'(Nb, Cg, k, k) = {target}')
    return t


def _check_4d(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f'{_OP}: {name} must be a torch.Tensor, got {type(t).__name__}')
    if t.dim() != 4:
        raise ValueError(f'{_OP}: {name} must be 4-D, got shape {tuple(t.shape)}')
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f'{_OP}: {name} must be a floating tensor '
                        f'(float32/float64/float16/bfloat16), got {t.dtype}')
    return t


def _validate(features: Tensor, attn: Tensor, ghost_mul: Tensor, ghost_add: Tensor,
              kernel_size: int, stride: int, dilation: int) -> tuple:
    k = positive_int(_OP, 'kernel_size', kernel_size)
    if k % 2 == 0:
        raise ValueError(f'{_OP}: kernel_size must be odd, got {kernel_size}')
    s = positive_int(_OP, 'stride', stride)
    d = positive_int(_OP, 'dilation', dilation)
    _check_4d('features', features)
    _check_4d('attn', attn)
    nb, cg, h, w = features.shape
    target = (nb, cg, k, k)
    _check_ghost('ghost_mul', ghost_mul, target)
    _check_ghost('ghost_add', ghost_add, target)
    check_same(_OP, features=features, attn=attn, ghost_mul=ghost_mul, ghost_add=ghost_add)
    check_device_dtype(_OP, features)
    want = (nb, k * k, h // s, w // s)
    if tuple(attn.shape) != want:
        raise ValueError(f'{_OP}: attn must have shape (Nb, k*k, H//s, W//s) = {want} for features '
                         f'{tuple(features.shape)}, kernel_size={k}, stride={s}; '
                         f'got {tuple(attn.shape)}')
    return k, s, d


def _autocast(*tensors):
    """Under autocast, run in the autocast dtype (like conv): AMP hands the op fp16/bf16
    values next to a float32 softmax. The kernels accumulate in float32 anyway."""
    t0 = tensors[0]
    if not isinstance(t0, Tensor) or t0.device.type not in ('cpu', 'cuda'):
        return tensors
    if not torch.is_autocast_enabled(t0.device.type):
        return tensors
    dtype = torch.get_autocast_dtype(t0.device.type)
    return tuple(t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t
                 for t in tensors)


def _has_op() -> bool:
    return HAS_EXT and hasattr(torch.ops.lsa, 'elsa_forward')


def _fake_forward(features, attn, ghost_mul, ghost_add, kernel_size, stride, dilation):
    nb, cg, h, w = features.shape
    return features.new_empty((nb, cg, h // stride, w // stride))


def _fake_backward(grad_out, features, attn, ghost_mul, ghost_add, kernel_size, stride,
                   dilation, output_mask):
    like = (features, attn, ghost_mul, ghost_add)
    return tuple(t.new_empty(t.shape) if need else t.new_empty((0,))
                 for t, need in zip(like, output_mask))


def _setup_context(ctx, inputs, output) -> None:
    features, attn, ghost_mul, ghost_add, k, s, d = inputs
    ctx.save_for_backward(features, attn, ghost_mul, ghost_add)
    ctx.geometry = (k, s, d)


def _backward(ctx, grad_out):
    mask = list(ctx.needs_input_grad[:4])
    grads = torch.ops.lsa.elsa_backward(grad_out, *ctx.saved_tensors, *ctx.geometry, mask)
    return (*(g if need else None for g, need in zip(grads, mask)), None, None, None)


def _no_double_backward(ctx, *grads):
    raise NotImplementedError(f'{_OP}: double backward (a gradient of the gradient) is not '
                              'supported; use lsa.ops.reference.elsa_ref for that')


if _has_op():
    torch.library.register_fake('lsa::elsa_forward')(_fake_forward)
    torch.library.register_fake('lsa::elsa_backward')(_fake_backward)
    torch.library.register_autograd('lsa::elsa_forward', _backward,
                                    setup_context=_setup_context)
    torch.library.register_autograd('lsa::elsa_backward', _no_double_backward,
                                    setup_context=lambda ctx, inputs, output: None)


def elsa(features: Tensor, attn: Tensor, ghost_mul: Tensor, ghost_add: Tensor,
         kernel_size: int, stride: int = 1, dilation: int = 1) -> Tensor:
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

    Returns:
        (Nb, Cg, H // s, W // s) tensor of the inputs' dtype.

    All four tensors must share one device (cpu or cuda) and one floating dtype
    (float32, float64, float16, bfloat16; half precision accumulates in float32).
    Inputs may be non-contiguous; ``Nb = 0`` gives an empty result. Under
    ``torch.autocast`` all four are cast to the autocast dtype first (the official op
    instead upcast to float32 and returned float32).
    """
    features, attn, ghost_mul, ghost_add = _autocast(features, attn, ghost_mul, ghost_add)
    k, s, d = _validate(features, attn, ghost_mul, ghost_add, kernel_size, stride, dilation)
    if not HAS_EXT:
        require_ext(_OP)
    nb, cg = features.shape[:2]
    mul = ghost_mul.expand(nb, cg, k, k)
    add = ghost_add.expand(nb, cg, k, k)
    if not _has_op():
        raise RuntimeError(f'{_OP}: lsa._C was built without the ELSA kernels (csrc/elsa); '
                           'rebuild it with `pip install -e . --no-build-isolation`')
    return torch.ops.lsa.elsa_forward(features, attn, mul, add, k, s, d)
