"""LESA: Locally Enhanced Self-Attention (Yang et al., 2021, arXiv:2107.05637).

One block replaces the 3x3 convolution of a ResNet bottleneck. It adds a
*unary* (local) term -- a grouped 3x3 conv -> 1x1 conv -> BN -- to a *binary*
(context) term -- grouped global self-attention with BN-normalised, summed
content and position logits -- and fuses the two with a learned gate::

    u    = BN(conv1x1(gconv3x3(x)))                              # local term
    b    = attention(x)                                          # context term
    g    = sigmoid(BN(conv(ReLU(BN(conv(ReLU(cat[u, b])))))))    # dynamic fusion
    out  = AvgPool_s(g * b + u)

Two position encodings, as released:

* ``'classification'``: a 1-D relative embedding over the *raster-flattened*
  token index (offsets -(L-1)..L-1 for L = H*W tokens), with a query, a key and
  a value part, shared by all groups. It is tied to the map size it was built
  for; other sizes raise a ``ValueError``.
* ``'detection_qr'``: a query-only 2-D relative embedding, ``rel_h`` for the row
  offset and ``rel_w`` for the column offset, tables of ``2F-1`` rows for a
  ``F x F`` design size. **Size-independent extension (lsa):** the embedding of
  an offset does not depend on the input size; offsets beyond the table
  (``|dy| > Fh-1`` or ``|dx| > Fw-1``) are clipped to the last entry (relative
  position clipping, Shaw et al. 2018). At ``H x W == Fh x Fw`` no offset is
  clipped and the computation is exactly the released one; smaller maps use
  the central part of the tables; any H, W (non-square included) works.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from lsa.models.layers.common import maybe_checkpoint, to_2tuple
from lsa.ops.batchnorm import bn_affine, update_running_stats
from lsa.registry import MODELS
from lsa.types import IntOr2Tuple

_PE_ALIASES = {'classification': 'classification', 'cls': 'classification',
               'detection_qr': 'detection_qr', 'det': 'detection_qr'}


def build_dcn_conv(dcn: dict, in_channels: int, out_channels: int, stride: int = 1,
                   groups: int = 1) -> nn.Module:
    """A 3x3 deformable conv (pad 1, no bias) from an mmdet-style ``dcn`` dict.

    ``dcn=dict(type='DCN' | 'DCNv2', deform_groups=1, fallback_on_stride=False)``
    builds mmcv's ``DeformConv2dPack`` / ``ModulatedDeformConv2dPack``; mmcv is
    imported here, lazily, so the lsa core never needs it. With
    ``fallback_on_stride=True`` a strided conv stays a plain ``nn.Conv2d``.
    """
    cfg = dict(dcn)
    kind = cfg.pop('type', 'DCN')
    fallback = cfg.pop('fallback_on_stride', False)
    if fallback and stride > 1:
        return nn.Conv2d(in_channels, out_channels, 3, stride, 1, groups=groups, bias=False)
    try:
        from mmcv.ops import DeformConv2dPack, ModulatedDeformConv2dPack
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(f'dcn={dcn} needs mmcv with its compiled ops (mmcv.ops): {e}') from e
    table = {'DCN': DeformConv2dPack, 'DCNv1': DeformConv2dPack,
             'DCNv2': ModulatedDeformConv2dPack}
    if kind not in table:
        raise ValueError(f'dcn type must be one of {sorted(table)}, got {kind!r}')
    return table[kind](in_channels, out_channels, kernel_size=3, stride=stride, padding=1,
                       dilation=1, groups=groups, bias=False, **cfg)


def relative_index_1d(size: int, table_size: int) -> Tensor:
    """Index ``[a, b] = clip(b - a) + table_size - 1`` into a table of ``2*table_size-1`` rows.

    Row ``a`` is the query position, column ``b`` the key position; offsets are
    clipped to ``[-(table_size-1), table_size-1]``. Shape (size, size), int64.
    """
    pos = torch.arange(size)
    off = (pos[None, :] - pos[:, None]).clamp(-(table_size - 1), table_size - 1)
    return off + table_size - 1


def skew(r: Tensor) -> Tensor:
    """Relative to absolute positions: ``out[..., i, j] = r[..., i, j - i + L - 1]``.

    (..., L, 2L-1) with contiguous last two dims -> (..., L, L), a view of ``r``:
    row ``i`` of the result starts at flat offset ``L - 1 + i (2L - 2)``.
    """
    L = r.shape[-2]
    if r.shape[-1] != 2 * L - 1:
        raise ValueError(f'skew: expected (..., L, 2L-1), got {tuple(r.shape)}')
    if L == 1:
        return r
    flat = r.flatten(-2)
    return flat[..., L - 1:L - 1 + L * (2 * L - 2)].unflatten(-1, (L, 2 * L - 2))[..., :L]


def _pad(a: Tensor) -> Tensor:
    """(..., L, L) -> (..., L, 2L-1) zeros with ``skew(out) = a``."""
    L = a.shape[-1]
    out = a.new_zeros(*a.shape[:-1], 2 * L - 1)
    skew(out).copy_(a)
    return out


def _rel_logits(x: Tensor, table: Tensor) -> Tensor:
    """``out[..., i, j] = sum_c x[..., c, i] * table[c, j - i + L - 1]``; (..., d, L) -> (..., L, L)."""
    return skew(torch.matmul(x.transpose(-1, -2), table))


def _padded_product(table: Tensor, padded: Tensor) -> Tensor:
    """``table @ padded^T``: (d, 2L-1), (..., L, 2L-1) -> (..., d, L).

    With ``padded = _pad(a)``: ``out[..., c, i] = sum_j a[..., i, j] * table[c, j - i + L - 1]``.
    """
    return torch.matmul(table, padded.transpose(-1, -2))


def _table_grad(x: Tensor, padded: Tensor) -> Tensor:
    """``sum over (..., i) of x[..., c, i] * padded[..., i, m]``: the (d, 2L-1) table gradient."""
    d, m = x.shape[-2], padded.shape[-1]
    return x.transpose(-1, -2).reshape(-1, d).t() @ padded.reshape(-1, m)


class _RelLogits(torch.autograd.Function):
    """:func:`_rel_logits` (one GEMM against the (d, 2L-1) table + :func:`skew`).

    Its input gradient is the relative value product (:class:`_RelValue`) of the
    output gradient, and vice versa. Only the (..., d, L) input and the table are
    kept. A traced op of its own, so FLOP counters see the relative product
    (L * L * d per map), not the GEMM's 2L-1 columns.
    """

    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor) -> Tensor:
        ctx.save_for_backward(x, table)
        return _rel_logits(x, table)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, table = ctx.saved_tensors
        padded = _pad(grad)
        gx = _padded_product(table, padded) if ctx.needs_input_grad[0] else None
        gt = _table_grad(x, padded) if ctx.needs_input_grad[1] else None
        return gx, gt


class _RelValue(torch.autograd.Function):
    """``out[..., c, i] = sum_j a[..., i, j] * table[c, j - i + L - 1]``: (..., d, L).

    ``a`` scattered into a zero-padded (..., L, 2L-1) copy, then one GEMM
    (:func:`_padded_product`). Only ``a`` (the attention, kept for the softmax
    anyway) and the table are kept; the padded copy is rebuilt in the backward pass.
    """

    @staticmethod
    def forward(ctx, a: Tensor, table: Tensor) -> Tensor:
        ctx.save_for_backward(a, table)
        return _padded_product(table, _pad(a))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, table = ctx.saved_tensors
        ga = _rel_logits(grad, table) if ctx.needs_input_grad[0] else None
        gt = _table_grad(grad, _pad(a)) if ctx.needs_input_grad[1] else None
        return ga, gt


@MODELS.register_module()
class LESAAttention(nn.Module):
    """The LESA block: local conv term + context self-attention + dynamic fusion.

    NCHW I/O: (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride).
    There is no norm/activation after the block (the host bottleneck applies ReLU).

    Args:
        in_channels: Input channels (``Cin``); divisible by ``groups``.
        out_channels: Block width ``P``; divisible by ``2 * groups``. Defaults to ``in_channels``.
        fmap_size: Design map size ``F`` (int) or ``(Fh, Fw)``: the token grid of the
            classification embedding, or the table sizes of the detection one.
        pe_type: ``'classification'`` (alias ``'cls'``) or ``'detection_qr'`` (``'det'``).
        groups: Attention groups (heads) ``G``; also the groups of the 3x3 local conv.
        stride: Average pooling applied after everything else (attention runs at full size);
            output size ``ceil(H / stride)`` (partial last windows average what they cover).
        df_channel_shrink: Channel shrink factor of each fusion conv (released: ``(2,)``).
        df_kernel_size: Kernel of each fusion conv, then of the gate projection (released
            ``(1, 1)``); the projection is padded to keep the size (the release only works
            for a 1x1 projection, where this is the same).
        df_group: Groups of each fusion conv, then of the projection (released ``(1, 1)``).
        dcn: mmdet-style dict making the grouped 3x3 local conv deformable
            (e.g. ``dict(type='DCN', deform_groups=1)``); mmcv is imported only then.
        with_cp: Gradient-checkpoint the local and the context term separately
            (the release's ``with_cp_UB_terms_only``); same outputs.
        recompute: In training, keep q and k instead of the n_terms (B, G, L, L)
            logit terms for the backward pass and recompute the terms there (exact;
            costs their forward once more). ``False`` keeps them.

    Shapes: ``d_qk = P // G // 2`` and ``d_v = P // G`` channels per group.

    Example:
        >>> blk = LESAAttention(64, fmap_size=16, pe_type='det')
        >>> blk(torch.rand(2, 64, 12, 20)).shape
        torch.Size([2, 64, 12, 20])
    """

    def __init__(self, in_channels: int, out_channels: int | None = None,
                 fmap_size: IntOr2Tuple = 14, pe_type: str = 'classification', groups: int = 8,
                 stride: int = 1, df_channel_shrink: Sequence[float] = (2,),
                 df_kernel_size: Sequence[int] = (1, 1), df_group: Sequence[int] = (1, 1),
                 dcn: dict | None = None, with_cp: bool = False,
                 recompute: bool = True) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        name = type(self).__name__
        if pe_type not in _PE_ALIASES:
            raise ValueError(f'{name}: pe_type must be one of {sorted(_PE_ALIASES)}, '
                             f'got {pe_type!r}')
        if groups < 1 or in_channels % groups or out_channels % (2 * groups):
            raise ValueError(f'{name}: in_channels must be divisible by groups and out_channels '
                             f'by 2 * groups, got in_channels={in_channels}, '
                             f'out_channels={out_channels}, groups={groups}')
        if len(df_kernel_size) != len(df_channel_shrink) + 1 or \
                len(df_group) != len(df_channel_shrink) + 1:
            raise ValueError(f'{name}: df_kernel_size and df_group need one entry per fusion conv '
                             f'plus one for the projection, got df_channel_shrink='
                             f'{tuple(df_channel_shrink)}, df_kernel_size={tuple(df_kernel_size)}, '
                             f'df_group={tuple(df_group)}')
        if any(k % 2 == 0 for k in df_kernel_size):
            raise ValueError(f'{name}: df_kernel_size entries must be odd, got '
                             f'{tuple(df_kernel_size)}')
        if stride < 1:
            raise ValueError(f'{name}: stride must be >= 1, got {stride}')
        self.in_channels, self.out_channels = in_channels, out_channels
        self.pe_type = _PE_ALIASES[pe_type]
        self.groups, self.stride, self.with_cp = groups, stride, with_cp
        self.recompute = recompute
        self.fmap_size = to_2tuple(fmap_size)
        self.qk_dim = out_channels // groups // 2
        self.v_dim = out_channels // groups
        P = out_channels

        # local (unary) term
        local = [build_dcn_conv(dcn, in_channels, P, groups=groups) if dcn is not None else
                 nn.Conv2d(in_channels, P, 3, padding=1, groups=groups, bias=False)]
        if groups != 1:
            local.append(nn.Conv2d(P, P, 1, bias=False))
        self.local_conv = nn.Sequential(*local)
        self.local_norm = nn.BatchNorm2d(P)

        # context (binary) term
        self.qkv = nn.Conv2d(in_channels, 2 * P, 1, bias=False)  # per group: [q | k | v]
        self.qkv_norm = nn.BatchNorm2d(2 * P)
        n_terms = 3 if self.pe_type == 'classification' else 2  # [qk, qr(, kr)]
        self.logit_norm = nn.BatchNorm2d(n_terms * groups)
        self.value_norm = nn.BatchNorm2d(P)  # on A.v
        if self.pe_type == 'classification':
            self.pos_value_norm = nn.BatchNorm2d(P)  # on A.E_v
            num_tokens = self.fmap_size[0] * self.fmap_size[1]
            self.rel_pos = nn.Parameter(torch.empty(2 * self.qk_dim + self.v_dim,
                                                    2 * num_tokens - 1))
        else:
            fh, fw = self.fmap_size
            self.rel_h = nn.Parameter(torch.empty(2 * fh - 1, self.qk_dim))
            self.rel_w = nn.Parameter(torch.empty(2 * fw - 1, self.qk_dim))

        # dynamic fusion: gate = sigmoid(gate(fuse(cat[u, b])))
        fuse: list[nn.Module] = [nn.ReLU(inplace=True)]
        c = 2 * P
        for shrink, k, g in zip(df_channel_shrink, df_kernel_size, df_group):
            c_out = int(c / shrink)
            fuse += [nn.Conv2d(c, c_out, k, padding=(k - 1) // 2, groups=g, bias=False),
                     nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c = c_out
        self.fuse = nn.Sequential(*fuse)
        k = df_kernel_size[-1]
        self.gate = nn.Sequential(
            nn.Conv2d(c, P, k, padding=(k - 1) // 2, groups=df_group[-1], bias=False),
            nn.BatchNorm2d(P))
        # ceil_mode: odd sizes keep the size of the host's strided shortcut (the last window
        # averages the pixels it has); identical to the release for sizes divisible by s
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The released initialisation of the projections and position tables.

        (Host networks init the 2-D convs with kaiming fan_out and then call this.)
        """
        nn.init.normal_(self.qkv.weight, 0.0, math.sqrt(1.0 / self.in_channels))
        if self.pe_type == 'classification':
            nn.init.normal_(self.rel_pos, 0.0, math.sqrt(1.0 / self.v_dim))
        else:
            for t in (self.rel_h, self.rel_w):
                nn.init.normal_(t, 0.0, self.qk_dim ** -0.5)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, pe_type={self.pe_type!r}, '
                f'fmap_size={self.fmap_size}, groups={self.groups}, stride={self.stride}')

    # ---------------------------------------------------------------- position logits
    def _check_size(self, H: int, W: int) -> None:
        if self.pe_type == 'classification' and (H, W) != self.fmap_size:
            fh, fw = self.fmap_size
            raise ValueError(
                f'{type(self).__name__}(pe_type=classification): its 1-D relative embedding '
                f'was built for a {fh}x{fw} map ({fh * fw} raster-ordered tokens) and cannot '
                f'serve a {H}x{W} map; run at the training resolution (224x224 input for '
                f'LESA-ResNet) or use pe_type="detection_qr", which accepts any size')

    def _cls_tables(self) -> tuple[Tensor, Tensor, Tensor]:
        """The query, key and value tables, flipped: column ``m`` holds offset ``L - 1 - m``.

        With ``E[c, i, j] = rel_pos[c, i - j + L - 1]`` (spec A1.4) and ``t`` a flipped
        table, ``E[c, i, j] = t[c, j - i + L - 1]``: what :func:`skew` reads. Each (d, 2L-1).
        """
        dqk = self.qk_dim
        return self.rel_pos.flip(1).split([dqk, dqk, self.v_dim], dim=0)

    def _cls_pos_logits(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """qr[i, j] = q_i . Eq[:, i, j], kr[i, j] = k_j . Ek[:, j, i]; (B, G, L, L) views.

        One (L, d) x (d, 2L-1) GEMM per term against the table, then :func:`skew`;
        the (d, L, L) embedding tensor E is never built.
        """
        tq, tk, _ = self._cls_tables()
        return _RelLogits.apply(q, tq), _RelLogits.apply(k, tk).transpose(-1, -2)

    def _det_pos_logits(self, q: Tensor, H: int, W: int) -> Tensor:
        """qr[(x,y),(i,j)] = q(x,y) . (rel_h[i-x] + rel_w[j-y]); (B, G, L, L) from (B, G, d, L)."""
        B, G, d, _ = q.shape
        fh, fw = self.fmap_size
        q = q.reshape(B, G, d, H, W)
        lh = torch.einsum('bgdxy,rd->bgxyr', q, self.rel_h)  # B, G, H, W, 2Fh-1
        lw = torch.einsum('bgdxy,rd->bgxyr', q, self.rel_w)  # B, G, H, W, 2Fw-1
        idx_h = relative_index_1d(H, fh).to(q.device)  # [x, i]
        idx_w = relative_index_1d(W, fw).to(q.device)  # [y, j]
        lh = torch.gather(lh, 4, idx_h[None, None, :, None, :].expand(B, G, H, W, H))  # ..x,y,i
        lw = torch.gather(lw, 4, idx_w[None, None, None, :, :].expand(B, G, H, W, W))  # ..x,y,j
        qr = lh[..., :, None] + lw[..., None, :]  # B, G, H, W, H, W
        return qr.reshape(B, G, H * W, H * W)

    def _fused_norm(self) -> bool:
        """Whether the logit norm is a plain affine ``BatchNorm2d`` (applied in :meth:`_normed_sum`)."""
        bn = self.logit_norm
        return type(bn) is nn.BatchNorm2d and bn.affine

    def _normed_sum(self, terms: list[Tensor]) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``logit_norm(cat(terms, 1)).unflatten(1, (-1, G)).sum(1)``: (B, G, L, L) each -> same.

        A plain ``BatchNorm2d`` runs per term (its own kernel, ``native_batch_norm``,
        with batch statistics; summed in place), or, with running statistics, as one
        scale and shift per term and group (``addcmul_``): neither the concatenation nor
        its normalised copy is made. Other norms (SyncBatchNorm) run as modules. Also
        returns the batch mean and variance (n_terms * G) when they were used, else
        ``None``: the caller updates the running statistics with them (the logits may be
        computed twice, see ``recompute``).
        """
        bn, G = self.logit_norm, self.groups
        if not self._fused_norm():
            return bn(torch.cat(terms, dim=1)).unflatten(1, (-1, G)).sum(1), None, None
        if bn.training or bn.running_mean is None:
            out, mean, invstd = None, [], []
            for t, w, b in zip(terms, bn.weight.view(-1, G), bn.bias.view(-1, G)):
                # the position terms are skew views: BatchNorm (forward and backward) on a
                # contiguous copy takes half the time, and keeps (B, G, L, L), not the
                # (B, G, L, 2L-1) buffer the view reads
                y, m, s = torch.native_batch_norm(t.contiguous(), w, b, None, None, True, 0.0,
                                                  bn.eps)
                out = y if out is None else out.add_(y)
                mean.append(m)
                invstd.append(s)
            return out, torch.cat(mean), torch.cat(invstd).pow(-2) - bn.eps
        scale, shift = bn_affine(bn)  # n_terms * G
        shift = shift.view(-1, G).sum(0)  # G
        scale = scale.view(-1, 1, G, 1, 1)
        out = torch.addcmul(shift.view(1, G, 1, 1), terms[0], scale[0])
        for t, sc in zip(terms[1:], scale[1:]):
            out.addcmul_(t, sc)
        return out, None, None

    def _logits(self, q: Tensor, k: Tensor, H: int, W: int
                ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Normed sum of the content and position logits (B, G, L, L) from q, k (B, G, d, L).

        Returns the logits and the batch statistics of :meth:`_normed_sum`.
        """
        qk = torch.matmul(q.transpose(-1, -2), k)  # no 1/sqrt(d) scaling (as released)
        if self.pe_type == 'classification':
            return self._normed_sum([qk, *self._cls_pos_logits(q, k)])
        return self._normed_sum([qk, self._det_pos_logits(q, H, W)])

    # ---------------------------------------------------------------- terms
    def _local(self, x: Tensor) -> Tensor:
        return self.local_norm(self.local_conv(x))

    def _context(self, x: Tensor) -> Tensor:
        B, _, H, W = x.shape
        L, G, dqk, dv = H * W, self.groups, self.qk_dim, self.v_dim
        qkv = self.qkv_norm(self.qkv(x)).reshape(B, G, 2 * dqk + dv, L)
        q, k, v = qkv.split([dqk, dqk, dv], dim=2)  # B, G, d, L
        bn = self.logit_norm
        if self.recompute and self._fused_norm() and torch.is_grad_enabled():
            # keep q and k, not the n_terms (B, G, L, L) logit terms, for the backward pass
            logits, mean, var = torch.utils.checkpoint.checkpoint(
                self._logits, q, k, H, W, use_reentrant=False, preserve_rng_state=False)
        else:
            logits, mean, var = self._logits(q, k, H, W)
        if mean is not None:  # the batch statistics were used: update the running ones
            update_running_stats(bn, mean, var, logits.numel() // G)
        attn = logits.softmax(dim=-1)
        out = self.value_norm(torch.matmul(v, attn.transpose(-1, -2)).reshape(B, -1, H, W))
        if self.pe_type == 'classification':
            sve = _RelValue.apply(attn, self._cls_tables()[2])  # B, G, d_v, L
            out = out + self.pos_value_norm(sve.reshape(B, -1, H, W))
        return out  # B, P, H, W

    def forward(self, x: Tensor) -> Tensor:
        """(B, Cin, H, W) -> (B, P, H / stride, W / stride)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__}: expected (B, {self.in_channels}, H, W), '
                             f'got {tuple(x.shape)}')
        self._check_size(x.shape[2], x.shape[3])
        unary = maybe_checkpoint(self._local, x, enabled=self.with_cp)
        binary = maybe_checkpoint(self._context, x, enabled=self.with_cp)
        gate = torch.sigmoid(self.gate(self.fuse(torch.cat([unary, binary], dim=1))))
        return self.pool(gate * binary + unary)


__all__ = ['LESAAttention', 'build_dcn_conv', 'relative_index_1d', 'skew']
