"""Pure-PyTorch reference of the ELSA op (unfold-based, differentiable).

It is the test oracle of the compiled kernels and the executable form of the
op's definition; it materialises a ``k*k``-times-the-input tensor, so it is
only meant for small inputs.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def elsa_ref(features: Tensor, attn: Tensor, ghost_mul: Tensor, ghost_add: Tensor,
             kernel_size: int, stride: int = 1, dilation: int = 1,
             softmax: bool = False) -> Tensor:
    """ELSA local attention with a ghost head, by unfolding ``features``.

    ``out[n, c, y, x] = sum_{ky, kx} features[n, c, y*s + (ky-r)*d, x*s + (kx-r)*d]
    * (attn[n, ky*k + kx, y, x] * ghost_mul[n, c, ky, kx] + ghost_add[n, c, ky, kx])``
    with ``r = k // 2`` and zero padding (out-of-image taps contribute nothing).

    Args:
        features: (Nb, Cg, H, W) values.
        attn: (Nb, k*k, H // s, W // s) per-pixel attention, shared by all channels.
        ghost_mul: broadcastable to (Nb, Cg, k, k).
        ghost_add: broadcastable to (Nb, Cg, k, k).
        kernel_size: odd window size k.
        stride: output stride s (output size is ``H // s``, floor).
        dilation: window dilation d.
        softmax: ``attn`` holds logits; ``attn.softmax(dim=1)`` (over the taps) is used.

    Returns:
        (Nb, Cg, H // s, W // s) tensor. Inputs are not validated here.
    """
    if softmax:
        attn = attn.softmax(dim=1)
    nb, cg, h, w = features.shape
    k, s, d = kernel_size, stride, dilation
    ho, wo = h // s, w // s
    # unfold with padding r*d yields ceil(H/s) x ceil(W/s) windows; the op keeps H//s x W//s.
    hu, wu = -(-h // s), -(-w // s)
    cols = F.unfold(features.reshape(nb, cg, h, w), k, dilation=d, padding=(k // 2) * d, stride=s)
    cols = cols.view(nb, cg, k * k, hu, wu)[..., :ho, :wo]
    mul = ghost_mul.expand(nb, cg, k, k).reshape(nb, cg, k * k, 1, 1)
    add = ghost_add.expand(nb, cg, k, k).reshape(nb, cg, k * k, 1, 1)
    filters = attn.view(nb, 1, k * k, ho, wo) * mul + add
    return (cols * filters).sum(2)
