"""LocalViT's locality feed-forward (LFF) and the helpers hosts use to wire a feed-forward.

The LFF replaces a transformer's MLP by ``1x1 conv -> BN -> act -> 3x3 depth-wise conv -> BN
-> act -> [SE | ECA] -> 1x1 conv -> BN`` applied to the token grid. It swaps with
:class:`lsa.models.layers.common.Mlp` in any host through :func:`build_ffn` and
:func:`ffn_residual`, which also reproduce how the official code wires the two kinds
differently (pre-norm, stochastic depth, class token).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lsa.ops.batchnorm import bn_affine
from lsa.registry import MODELS, build_block

from .common import check_tokens, maybe_checkpoint, nchw_to_nlc, nlc_to_nchw
from .fast_paths import must_run_module

# Integer activation codes of the official ``LocalVisionTransformer(act=...)``.
ACT_CODES = {1: 'relu6', 2: 'hs', 3: 'hs+se', 4: 'hs+eca'}


class HSigmoid(nn.Module):
    """``relu6(x + 3) / 6`` (MobileNetV3's hard sigmoid; the SE gate of LocalViT).

    Kept instead of ``nn.Hardsigmoid``: on CPU (torch 2.13) the two agree bitwise in
    float32/float64 but not in float16/bfloat16 (the official models run under fp16 autocast).
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(x + 3.0) / 6.0


def _hswish(x: Tensor) -> Tensor:
    """``x * (relu6(x + 3) / 6)`` with one new tensor (same rounding: clamp is relu6)."""
    return (x + 3.0).clamp_(0.0, 6.0).div_(6.0).mul_(x)


#: Elements per slice of :func:`_hswish_`: a 1 MiB fp32 temporary, which stays in cache.
_HSWISH_SLICE = 1 << 18


def _hswish_(x: Tensor) -> Tensor:
    """:func:`_hswish` in place on a contiguous ``x`` (bitwise the same values).

    Slice by slice, so the temporary ``relu6(x + 3) / 6`` is small: no new tensor of
    ``x``'s size, whose fresh pages the CPU allocator would fault in again (on CPU that
    first touch, not the arithmetic, was most of an h-swish: docs/performance.md).
    """
    for part in x.view(-1).split(_HSWISH_SLICE):
        part.mul_((part + 3.0).clamp_(0.0, 6.0).div_(6.0))
    return x


class _HSwishFunction(torch.autograd.Function):
    """``x * (relu6(x + 3) / 6)`` keeping only ``x`` for the backward pass (autograd's
    own graph keeps three tensors of its size); the gradient is autograd's, op for op."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return _hswish(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        x, = ctx.saved_tensors
        t = x + 3.0
        through_gate = torch.ops.aten.hardtanh_backward(grad * x / 6.0, t, 0.0, 6.0)
        return t.clamp_(0.0, 6.0).div_(6.0).mul_(grad).add_(through_gate)


class HSwish(nn.Module):
    """``x * (relu6(x + 3) / 6)``, the official ``x * h_sigmoid(x)``.

    Kept instead of ``nn.Hardswish``, which rounds ``x * relu6(x + 3) / 6`` in another order:
    on CPU (torch 2.13) 18 % of a float32 grid over [-8, 8] differ (relative error <= 1.3 eps).
    With gradients it keeps only its input for the backward pass.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return _HSwishFunction.apply(x)
        return _hswish(x)


class SqueezeExcite(nn.Module):
    """Channel gate ``x * hsigmoid(fc2(relu(fc1(avgpool(x)))))`` on (B, C, H, W).

    Args:
        channels: C.
        hidden: width of the bottleneck (the official ``C // reduction``).
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f'SqueezeExcite: hidden width must be >= 1, got {hidden} '
                             f'(channels={channels})')
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.gate = HSigmoid()

    def weights(self, pooled: Tensor) -> Tensor:
        """(B, C) channel means -> (B, C) gate."""
        return self.gate(self.fc2(F.relu(self.fc1(pooled))))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weights(x.mean(dim=(2, 3)))[:, :, None, None]


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive 1-D kernel size: the odd number nearest ``(log2 C + b) / gamma``."""
    t = int(abs((math.log(channels, 2) + b) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(nn.Module):
    """ECA gate: a 1-D conv across the pooled channel vector, sigmoid or hard-sigmoid gate.

    Args:
        channels: C (sets the kernel size, see :func:`eca_kernel_size`).
        hard: use :class:`HSigmoid` instead of ``sigmoid`` (the official ``'ecah'``).
    """

    def __init__(self, channels: int, hard: bool = False) -> None:
        super().__init__()
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.gate = HSigmoid() if hard else nn.Sigmoid()

    def weights(self, pooled: Tensor) -> Tensor:
        """(B, C) channel means -> (B, C) gate."""
        return self.gate(self.conv(pooled[:, None, :]))[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weights(x.mean(dim=(2, 3)))[:, :, None, None]


def parse_act(act: str | int) -> tuple[str, str | None]:
    """Official act string -> ``(activation, channel_attention)``.

    ``'hs'`` anywhere selects h-swish; **any other string means ReLU6** (the official
    quirk: ``'relu'`` is ReLU6 too). The part after ``'+'`` selects the channel
    attention: ``'se'``, ``'eca'`` (sigmoid gate) or any other string containing
    ``'eca'`` (hard-sigmoid gate, returned as ``'ecah'``). Integer codes 1-4 follow the
    official ``LocalVisionTransformer`` (anything else there is ``'hs+ecah'``).
    """
    if isinstance(act, bool) or not isinstance(act, str | int):
        raise TypeError(f'LocalityFeedForward: act must be a str or an int code, got {act!r}')
    if isinstance(act, int):
        act = ACT_CODES.get(act, 'hs+ecah')
    nonlin = 'hswish' if 'hs' in act else 'relu6'
    if '+' not in act:
        return nonlin, None
    attn = act.split('+')[1]
    if attn == 'se':
        return nonlin, 'se'
    if 'eca' in attn:
        return nonlin, 'eca' if attn == 'eca' else 'ecah'
    raise ValueError(f'LocalityFeedForward: unknown channel attention {attn!r} in act={act!r}; '
                     "expected 'se' or a string containing 'eca'")


def _act_module(name: str) -> nn.Module:
    return HSwish() if name == 'hswish' else nn.ReLU6()


@MODELS.register_module()
class LocalityFeedForward(nn.Module):
    """LocalViT's locality feed-forward branch (no residual: the host adds it).

    ``fc1`` (1x1 conv) -> ``bn1`` -> act -> ``dwconv`` (3x3 depth-wise) -> ``bn2`` -> act
    -> ``attn`` (SE / ECA / none) -> ``fc2`` (1x1 conv) -> ``bn3``. Convs have no bias.

    Token I/O: ``forward(x (B, N, C), hw_shape=(H, W)) -> (B, N, out)`` with N == H*W
    (raster order); an NCHW input (B, C, H, W) is also accepted and returns NCHW. The
    branch runs on the tokens (channels last): the 1x1 convs as ``F.linear`` on their
    (out, in, 1, 1) weights, the depth-wise conv on the channels-last view of the grid,
    BatchNorm over all B*N tokens, SE/ECA pooling over the token axis. The
    official block computes ``x + conv(x)``; here the branch is returned and
    :func:`ffn_residual` adds ``x``, so the class swaps with :class:`lsa.Mlp`.

    Args:
        in_features: C.
        hidden_features: hidden width; default ``int(C * 4)``.
        out_features: output width; default C (must be C for the residual).
        act: official act string or int code, see :func:`parse_act` (``'hs+se'``,
            ``'hs'``, ``'relu6'``, ``'hs+eca'``, ``'hs+ecah'``, 1..5).
        reduction: SE bottleneck width is ``hidden // reduction`` (official rule).
        se_channels: SE bottleneck width given directly (overrides ``reduction``).
        with_dwconv: False drops the depth-wise conv triplet (official ``wo_dp_conv``).
        dw_first: depth-wise triplet before ``fc1`` (official ``dp_first``; needs
            hidden == in_features).
        kernel_size: depth-wise kernel size (odd; 3 in every published model).
        residual: return ``x + branch`` (the official module's own output) instead of the
            branch, for hosts whose block expects the FFN to add its residual.
        recompute: in training, keep only the input ``x`` for the backward pass and
            recompute the branch there instead of storing its expanded (B, N, hidden)
            activations (same results; less memory, some time: docs/performance.md).
    """

    #: Tells hosts (see :func:`ffn_residual`) that this FFN runs on the spatial grid only,
    #: normalises itself (no pre-LN) and gets no stochastic depth, as in the official code.
    grid_ffn = True

    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None, act: str | int = 'hs+se', reduction: int = 4,
                 se_channels: int | None = None, with_dwconv: bool = True,
                 dw_first: bool = False, kernel_size: int = 3, residual: bool = False,
                 recompute: bool = True) -> None:
        super().__init__()
        hidden = int(hidden_features or in_features * 4)
        out = int(out_features or in_features)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'LocalityFeedForward: kernel_size must be odd and positive, '
                             f'got {kernel_size}')
        if dw_first and hidden != in_features:
            raise ValueError(f'LocalityFeedForward: dw_first needs hidden_features == '
                             f'in_features, got {hidden} vs {in_features}')
        if dw_first and not with_dwconv:
            raise ValueError('LocalityFeedForward: dw_first=True needs with_dwconv=True')
        nonlin, attn = parse_act(act)
        self.in_features, self.hidden_features, self.out_features = in_features, hidden, out
        self.act_name, self.attn_name, self.dw_first = nonlin, attn, dw_first
        self.residual, self.recompute = residual, recompute
        if residual and out != in_features:
            raise ValueError(f'LocalityFeedForward: residual=True needs out_features == '
                             f'in_features, got {out} vs {in_features}')
        self.fc1 = nn.Conv2d(in_features, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act1 = _act_module(nonlin)
        if with_dwconv:
            self.dwconv = nn.Conv2d(hidden, hidden, kernel_size, padding=kernel_size // 2,
                                    groups=hidden, bias=False)
            self.bn2 = nn.BatchNorm2d(hidden)
            self.act2 = _act_module(nonlin)
        else:
            self.dwconv = None
        if attn == 'se':
            if se_channels is None:
                if reduction < 1:
                    raise ValueError(f'LocalityFeedForward: reduction must be >= 1, '
                                     f'got {reduction}')
                se_channels = hidden // reduction
            self.attn = SqueezeExcite(hidden, se_channels)
        elif attn in ('eca', 'ecah'):
            self.attn = EfficientChannelAttention(hidden, hard=attn == 'ecah')
        else:
            self.attn = nn.Identity()
        self.fc2 = nn.Conv2d(hidden, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)

    def _conv_bn(self, y: Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d,
                 hw_shape: tuple[int, int] | None = None) -> Tensor:
        """``bn(conv(y))`` on (B, N, Cin) tokens -> (B, N, Cout): a 1x1 conv as ``F.linear``
        (``hw_shape=None``) or the depth-wise conv on the channels-last view of the grid.

        In eval the BatchNorm is folded into the conv (scale into the weight, shift as
        bias): one pass fewer over the expanded tensor (~5% of an LFF at DeiT-T width), the
        same model. Not while tracing: the FLOP counter then sees the BatchNorm, so counts stay
        the architecture's (BatchNorm included, as the papers count).
        """
        weight, bias, y_shape = conv.weight, None, y.shape
        if not bn.training and bn.running_mean is not None and not torch.jit.is_tracing():
            scale, bias = bn_affine(bn)
            weight = weight * scale.view(-1, 1, 1, 1)
        if hw_shape is None:  # on 2-D rows: a 3-D strided input would take a batched matmul
            y = F.linear(y.reshape(-1, y.shape[-1]), weight.flatten(1), bias)
            y = y.view(*y_shape[:-1], -1)
        else:
            B, N, C = y.shape
            grid = y.reshape(B, *hw_shape, C).permute(0, 3, 1, 2)
            grid = F.conv2d(grid, weight, bias, padding=conv.padding, groups=conv.groups)
            y = grid.permute(0, 2, 3, 1).reshape(B, N, C)
        if bias is not None:
            return y
        C = y.shape[-1]
        return bn(y.reshape(-1, C, 1, 1)).view(y.shape)

    @staticmethod
    def _act(y: Tensor, act: nn.Module) -> Tensor:
        """``act(y)`` on a tensor the branch owns: in place when no gradient flows and ``act``
        is a plain ReLU6 / :class:`HSwish` (the rule of :mod:`~lsa.models.layers.fast_paths`:
        not a subclass or hooked module, not on another device, not traced or compiled)."""
        if y.requires_grad or not y.is_contiguous():
            return act(y)
        if not must_run_module(y, act, nn.ReLU6):
            return F.relu6(y, inplace=True)
        if not must_run_module(y, act, HSwish):
            return _hswish_(y)
        return act(y)

    def _attn(self, y: Tensor) -> Tensor:
        """SE / ECA gate over the token axis of (B, N, hidden)."""
        if self.attn_name is None:
            return y
        g = self.attn.weights(y.mean(dim=1))[:, None, :]
        return y * g if y.requires_grad else y.mul_(g)

    def _branch(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """(B, N, C) tokens -> (B, N, out): the branch, channels-last throughout."""
        y = x
        if self.dw_first:
            y = self._act(self._conv_bn(y, self.dwconv, self.bn2, hw_shape), self.act2)
        y = self._act(self._conv_bn(y, self.fc1, self.bn1), self.act1)
        if self.dwconv is not None and not self.dw_first:
            y = self._act(self._conv_bn(y, self.dwconv, self.bn2, hw_shape), self.act2)
        return self._conv_bn(self._attn(y), self.fc2, self.bn3)

    def forward_tokens(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        """(B, H*W, C) tokens -> (B, H*W, out): the branch (plus ``x`` if ``residual``).

        With ``recompute`` and gradients flowing, only ``x`` is kept for the backward
        pass and the branch is recomputed there (same values, gradients and running
        statistics: see :func:`maybe_checkpoint`).
        """
        check_tokens(type(self).__name__, x, hw_shape, self.in_features)
        y = maybe_checkpoint(self._branch, x, hw_shape, enabled=self.recompute)
        return x + y if self.residual else y

    def forward_nchw(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, out, H, W), through :meth:`forward_tokens`."""
        return nlc_to_nchw(self.forward_tokens(nchw_to_nlc(x), x.shape[2:]), x.shape[2:])

    def forward(self, x: Tensor, hw_shape: tuple[int, int] | None = None) -> Tensor:
        """(B, N, C) with ``hw_shape`` -> (B, N, out); (B, C, H, W) -> (B, out, H, W)."""
        if x.dim() == 4:
            return self.forward_nchw(x)
        if hw_shape is None:
            raise ValueError('LocalityFeedForward: token input (B, N, C) needs hw_shape=(H, W)')
        return self.forward_tokens(x, tuple(hw_shape))

    def extra_repr(self) -> str:
        return f'act={self.act_name}, attn={self.attn_name}'


def is_grid_ffn(ffn: nn.Module) -> bool:
    """True for feed-forwards that declare ``grid_ffn`` (LocalViT wiring)."""
    return bool(getattr(ffn, 'grid_ffn', False))


def build_ffn(cfg: dict, in_features: int, hidden_features: int,
              se_channels: int | None = None, drop: float = 0.0) -> nn.Module:
    """Build a host's feed-forward from ``cfg`` (``type`` = ``'lsa.LocalityFeedForward'``,
    ``'lsa.Mlp'`` or any registered FFN with the same ``(x, hw_shape)`` forward).

    ``in_features``/``hidden_features`` come from the host. For a grid FFN the host's
    published SE width ``se_channels`` is used unless ``cfg`` sets ``reduction`` or
    ``se_channels`` itself; other FFNs get ``drop`` unless ``cfg`` sets it.
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'ffn_cfg must be a dict with a "type" key, got {cfg!r}')
    cfg = dict(cfg)
    cls = MODELS.get(cfg['type'])
    if cls is None:
        raise ValueError(f'ffn_cfg: unknown type {cfg["type"]!r} in the lsa registry')
    cfg.setdefault('in_features', in_features)
    cfg.setdefault('hidden_features', hidden_features)
    if getattr(cls, 'grid_ffn', False):
        if se_channels is not None and 'reduction' not in cfg:
            cfg.setdefault('se_channels', se_channels)
    else:
        cfg.setdefault('drop', drop)
    return build_block(cfg)


def ffn_residual(ffn: nn.Module, x: Tensor, hw_shape: tuple[int, int], num_prefix: int = 0,
                 norm: nn.Module | None = None, drop_path: nn.Module | None = None,
                 own_residual: bool | None = None) -> Tensor:
    """``x`` plus the feed-forward branch, wired as the official code wires ``ffn``.

    The one FFN-wiring protocol of every lsa host (DeiT, PVT, TNT, T2T, Swin blocks):

    - Grid FFN (LFF): the ``num_prefix`` leading tokens (class token) bypass it; the
      ``H*W`` grid tokens get ``t + ffn(t, hw_shape)``; no ``norm``, no ``drop_path``.
    - Any other FFN (the plain MLP baseline): ``x + drop_path(ffn(norm(x)))`` on all tokens.
    - An FFN that adds its own residual (``own_residual``, default its ``residual``
      attribute) is returned as is: ``ffn(t)`` resp. ``ffn(norm(x))``.

    Args:
        x: (B, num_prefix + H*W, C).
    """
    own = bool(getattr(ffn, 'residual', False)) if own_residual is None else own_residual
    if is_grid_ffn(ffn):
        prefix, t = x[:, :num_prefix], x[:, num_prefix:]
        t = ffn(t, hw_shape) if own else t + ffn(t, hw_shape)
        return torch.cat([prefix, t], dim=1) if num_prefix else t
    y = ffn(norm(x) if norm is not None else x, hw_shape)
    if own:
        return y
    return x + (drop_path(y) if drop_path is not None else y)


def ffn_norm(ffn: nn.Module, dim: int, eps: float) -> nn.Module | None:
    """The pre-FFN LayerNorm a host needs for ``ffn`` (None for grid FFNs)."""
    return None if is_grid_ffn(ffn) else nn.LayerNorm(dim, eps=eps)
