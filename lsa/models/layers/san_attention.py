"""SAN self-attention (Zhao et al., "Exploring Self-attention for Image Recognition", CVPR 2020).

Two registered modules:

- :class:`SANAttention`: the SA module of the paper (Eq. 2 pairwise, Eq. 4 patchwise),
  NCHW in, NCHW out, spatial size preserved.
- :class:`SANBottleneck`: the pre-activation residual block of the SAN networks, which
  builds its attention from a config dict (``attn_cfg``) so the attention is swappable.

Parameter names follow the paper: ``phi``/``psi``/``beta`` are the three 1x1 projections,
``gamma`` the weight-predicting MLP and ``pos_enc`` the learned position encoding of the
pairwise form.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lsa.models.layers.fast_paths import batch_norm_, conv1x1
from lsa.ops import aggregation, reflect_min_size, subtraction, subtraction2
from lsa.ops.san_fused import FUSED_DTYPES
from lsa.ops.san_gamma import san_pairwise_gamma_attention, san_patchwise_gamma_attention
from lsa.registry import MODELS, build_block

SA_TYPES = ('pairwise', 'patchwise')


def san_position(H: int, W: int, like: Tensor) -> Tensor:
    """Normalised pixel coordinates, shape (1, 2, H, W).

    Channel 0 is ``linspace(-1, 1, W)`` along columns (x), channel 1 is
    ``linspace(-1, 1, H)`` along rows (y); dtype and device follow ``like``.
    """
    xs = torch.linspace(-1.0, 1.0, W, dtype=like.dtype, device=like.device)
    ys = torch.linspace(-1.0, 1.0, H, dtype=like.dtype, device=like.device)
    return torch.stack([xs.view(1, W).expand(H, W), ys.view(H, 1).expand(H, W)]).unsqueeze(0)


#: Smallest map (H * W) on which ``fused='auto'`` takes the fused op for a patchwise
#: training step. Below it the unfused step was faster (SANAttention(C, C, 7), batch 4,
#: forward + backward, 2 threads, medians of 5: 28x28 C=128 38 vs 42 ms fused vs unfused,
#: 14x14 C=256 43 vs 30 ms, 7x7 C=512 63 vs 27 ms; the pairwise op and inference stay
#: fused: faster at every SAN10 stage). docs/ops.md, fused patchwise section.
PATCHWISE_FUSED_MIN_PIXELS = 28 * 28


@MODELS.register_module()
class SANAttention(nn.Module):
    """SAN self-attention with interleaved weight sharing and reflect padding.

    For every pixel i with footprint R(i) (a ``kernel_size`` window, dilated by
    ``dilation``, borders reflected), the output is
    ``y_i = sum_{j in R(i)} w_ij (.) beta(x_j)`` where ``(.)`` is a per-channel
    product whose weights are shared by ``share_planes`` value channels: value
    channel c uses weight channel ``c % (out_channels // share_planes)``.

    - ``sa_type='pairwise'``: ``w_ij = softmax_j(gamma([phi(x_i) - psi(x_j), p_i - p_j]))``
      with ``p = pos_enc(coords)`` a learned 1x1 map of the normalised (x, y) pixel
      coordinates; ``gamma`` = BN-ReLU-1x1-BN-ReLU-1x1 applied per (pixel, tap).
    - ``sa_type='patchwise'``: ``w_i = gamma([phi(x_i), psi(x_R(i))])`` (the
      centre's features and the unfolded footprint, channel-major) giving all taps
      at once; no normalisation over the taps.

    Args:
        in_channels: Channels C of the input.
        out_channels: Channels of the output (the value projection ``beta``).
        kernel_size: Odd footprint size k (K = k * k taps).
        sa_type: ``'pairwise'`` or ``'patchwise'``.
        rel_channels: Channels of ``phi``/``psi``; default ``in_channels // 16``.
        share_planes: Value channels per attention weight; default 8.
        dilation: Footprint dilation (the published models use 1).
        fused: When to run through the fused op
            (:func:`lsa.ops.san_gamma.san_pairwise_gamma_attention` /
            :func:`~lsa.ops.san_gamma.san_patchwise_gamma_attention`: gamma's input, its
            MLP, the softmax (pairwise) and the aggregation tile by tile, no tensor with a
            tap axis; 16-bit activations, as under autocast, are computed in float32 and
            returned in their dtype). ``'auto'``
            (default): on CPU, in training and inference (faster than the unfused path
            at a fraction of the activation memory; docs/ops.md), except a patchwise
            training step on maps under 28x28 pixels (there the unfused path is faster:
            :data:`PATCHWISE_FUSED_MIN_PIXELS`); on CUDA the unfused
            path, until the fused CUDA kernels have run on a GPU (they compile, but
            have not). ``True``: on CPU and CUDA; ``'eval'``: only in eval mode or
            without gradients; ``False``: never, the unfused composition below. Same
            parameters, results and BatchNorm updates. A training step whose gamma
            norms are not plain ``nn.BatchNorm2d`` (e.g. SyncBatchNorm, whose batch
            statistics span processes) runs the unfused path.

    Shapes:
        input (N, C, H, W) -> output (N, out_channels, H, W); H and W must be larger
        than the reflect padding ``dilation * (kernel_size - 1) // 2``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 7,
                 sa_type: str = 'pairwise', rel_channels: int | None = None,
                 share_planes: int = 8, dilation: int = 1,
                 fused: bool | str = 'auto') -> None:
        super().__init__()
        name = type(self).__name__
        if sa_type not in SA_TYPES:
            raise ValueError(f'{name}: sa_type must be one of {SA_TYPES}, got {sa_type!r}')
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'{name}: kernel_size must be a positive odd int, got {kernel_size!r}')
        if not isinstance(dilation, int) or dilation < 1:
            raise ValueError(f'{name}: dilation must be a positive int, got {dilation!r}')
        rel_channels = in_channels // 16 if rel_channels is None else rel_channels
        if rel_channels < 1:
            raise ValueError(f'{name}: rel_channels must be >= 1, got {rel_channels} '
                             f'(in_channels={in_channels}; the default is in_channels // 16)')
        if share_planes < 1 or out_channels % share_planes != 0:
            raise ValueError(f'{name}: out_channels must be divisible by share_planes, got '
                             f'out_channels={out_channels}, share_planes={share_planes}')
        self.in_channels, self.out_channels = in_channels, out_channels
        self.rel_channels, self.share_planes = rel_channels, share_planes
        self.kernel_size, self.dilation, self.sa_type = kernel_size, dilation, sa_type
        if fused not in (True, False, 'auto', 'eval'):
            raise ValueError(f"{name}: fused must be 'auto', True, False or 'eval', "
                             f'got {fused!r}')
        self.fused = fused
        self.padding = dilation * (kernel_size - 1) // 2
        self._window = dict(kernel_size=kernel_size, stride=1, padding=self.padding,
                            dilation=dilation, pad_mode='reflect')
        taps = kernel_size * kernel_size
        weight_channels = out_channels // share_planes

        self.phi = nn.Conv2d(in_channels, rel_channels, 1)
        self.psi = nn.Conv2d(in_channels, rel_channels, 1)
        self.beta = nn.Conv2d(in_channels, out_channels, 1)
        if sa_type == 'pairwise':
            # per (pixel, tap): [rel relation channels, 2 relative positions] -> weights
            gamma_in, gamma_mid, gamma_out = rel_channels + 2, rel_channels, weight_channels
            self.pos_enc = nn.Conv2d(2, 2, 1)
        else:
            # per pixel: [centre (rel), footprint (rel * K, channel-major)] -> all K taps
            gamma_in, gamma_mid = rel_channels * (taps + 1), weight_channels
            gamma_out = weight_channels * taps
        self.gamma = nn.Sequential(OrderedDict(
            norm1=nn.BatchNorm2d(gamma_in), act1=nn.ReLU(inplace=True),
            conv1=nn.Conv2d(gamma_in, gamma_mid, 1, bias=False),
            norm2=nn.BatchNorm2d(gamma_mid), act2=nn.ReLU(inplace=True),
            conv2=nn.Conv2d(gamma_mid, gamma_out, 1)))

    def extra_repr(self) -> str:
        return (f'sa_type={self.sa_type!r}, kernel_size={self.kernel_size}, '
                f'dilation={self.dilation}, share_planes={self.share_planes}, '
                f'fused={self.fused!r}')

    def _unfold_reflect(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C * K, H * W): reflect-padded footprints, channel-major."""
        p = self.padding
        return F.unfold(F.pad(x, (p, p, p, p), mode='reflect'), self.kernel_size,
                        dilation=self.dilation)

    def attention_weights(self, x: Tensor) -> Tensor:
        """The aggregation weights, shape (N, out_channels // share_planes, K, H * W)."""
        N, _, H, W = x.shape
        taps = self.kernel_size * self.kernel_size
        x1, x2 = conv1x1(x, self.phi), conv1x1(x, self.psi)  # N, rel, H, W
        if self.sa_type == 'pairwise':
            rel = subtraction2(x1, x2, **self._window)  # N, rel, K, HW
            pos = self.pos_enc(san_position(H, W, x))  # 1, 2, H, W
            rel_pos = subtraction(pos, **self._window).expand(N, -1, -1, -1)  # N, 2, K, HW
            logits = self.gamma(torch.cat([rel, rel_pos], 1))  # N, Cw, K, HW
            return logits.softmax(dim=2)
        centre = x1.view(N, self.rel_channels, 1, H * W)
        patch = self._unfold_reflect(x2).view(N, self.rel_channels * taps, 1, H * W)
        w = self.gamma(torch.cat([centre, patch], 1))  # N, Cw * K, 1, HW
        return w.view(N, -1, taps, H * W)  # channel o -> (weight channel o // K, tap o % K)

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H, W)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__}: expected input (N, {self.in_channels}, H, '
                             f'W), got {tuple(x.shape)}')
        H, W = x.shape[-2:]
        if min(H, W) < reflect_min_size(self.padding):
            raise ValueError(
                f'{type(self).__name__}: input {H}x{W} is too small for kernel_size='
                f'{self.kernel_size}, dilation={self.dilation}: the reflect padding '
                f'{self.padding} needs height and width >= {reflect_min_size(self.padding)}')
        value = conv1x1(x, self.beta)
        if self._fused_applies(x):
            x1, x2 = conv1x1(x, self.phi), conv1x1(x, self.psi)
            if self.sa_type == 'patchwise':
                return san_patchwise_gamma_attention(x1, x2, value, self.gamma,
                                                     self.kernel_size, self.dilation)
            pos = self.pos_enc(san_position(H, W, x))
            return san_pairwise_gamma_attention(x1, x2, pos, value, self.gamma,
                                                self.kernel_size, self.dilation)
        return aggregation(value, self.attention_weights(x), **self._window)

    def _fused_applies(self, x: Tensor) -> bool:
        device = x.device.type
        training = self.training and torch.is_grad_enabled()
        auto = device == 'cpu' and not (
            training and self.sa_type == 'patchwise'
            and x.shape[-2] * x.shape[-1] < PATCHWISE_FUSED_MIN_PIXELS)
        wanted = (self.fused is True or (self.fused == 'auto' and auto)
                  or (self.fused == 'eval' and not training))
        # the fused ops fold gamma's norms with local batch statistics: only for plain BN
        local_stats = all(type(bn) is nn.BatchNorm2d or not bn.training
                          for bn in (self.gamma.norm1, self.gamma.norm2))
        # 16-bit input or autocast: the fused ops compute in float32 and return the value's
        # dtype, as the unfused path does (bf16 under CPU autocast)
        return wanted and local_stats and x.dtype in FUSED_DTYPES and device in ('cpu', 'cuda')



@MODELS.register_module()
class SANBottleneck(nn.Module):
    """SAN's pre-activation residual block (identity shortcut, width preserved).

    ``out = x + proj(relu(norm2(attn(relu(norm1(x))))))`` with ``attn`` built from
    ``attn_cfg`` through :data:`lsa.registry.MODELS` (default :class:`SANAttention`);
    the block fills in ``in_channels=channels``, ``out_channels=channels // mid_ratio``
    and ``kernel_size``, so any registered module taking those three arguments and
    preserving the spatial size can replace the attention.

    Args:
        channels: Channels C of input and output.
        kernel_size: Footprint of the attention.
        attn_cfg: Config of the attention; ``type`` defaults to ``'lsa.SANAttention'``.
        mid_ratio: The attention runs at ``channels // mid_ratio`` channels (4 in SAN).

    Shapes:
        (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, kernel_size: int = 7, attn_cfg: dict | None = None,
                 mid_ratio: int = 4) -> None:
        super().__init__()
        mid = channels // mid_ratio
        if mid < 1:
            raise ValueError(f'{type(self).__name__}: channels // mid_ratio must be >= 1, got '
                             f'channels={channels}, mid_ratio={mid_ratio}')
        cfg = dict(attn_cfg or {})
        cfg.setdefault('type', 'lsa.SANAttention')
        cfg.update(in_channels=channels, out_channels=mid, kernel_size=kernel_size)
        self.norm1 = nn.BatchNorm2d(channels)
        self.attn = build_block(cfg)
        self.norm2 = nn.BatchNorm2d(mid)
        self.proj = nn.Conv2d(mid, channels, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(batch_norm_(self.attn(self.act(self.norm1(x))), self.norm2))
        y = conv1x1(out, self.proj)
        # in place on the projection's output (autograd does not keep it), unless autocast
        # made it another dtype: then x + y promotes as the plain sum does
        return y.add_(x) if y.dtype == x.dtype else x + y
