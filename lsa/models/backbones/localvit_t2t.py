"""LocalViT-T2T: Tokens-to-Token ViT-7 (performer T2T module) with the locality feed-forward.

The T2T module re-tokenises the image with three overlapping "soft splits" (unfolds with
strides 4, 2, 2); between them a single-head performer attention (random-feature softmax
kernel) mixes the tokens. LocalViT swaps the FFN of both the T2T token layers (LFF
without SE, hidden = width) and the encoder blocks (LFF with SE) for the locality
feed-forward. The encoder adds a fixed sinusoidal position embedding.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lsa.models.layers.common import nlc_to_nchw, to_2tuple
from lsa.models.layers.locality_ffn import build_ffn, ffn_residual, is_grid_ffn
from lsa.models.layers.weight_init import init_vit_weights
from lsa.registry import MODELS
from lsa.types import OutIndices

from .base import BaseLSABackbone, ClassTokenEncoderMixin, TokenParamsFreezeMixin
from .localvit import LFF_CFG

#: The LFF of the T2T token layers in the official model: h-swish, no channel attention.
TOKEN_LFF_CFG = dict(type='lsa.LocalityFeedForward', act='hs')
#: (kernel, stride, padding) of the three soft splits.
SOFT_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))
#: Image pixels per encoder token (the product of the soft-split strides: 16).
T2T_STRIDE = math.prod(s for _, s, _ in SOFT_SPLITS)


def sinusoid_pos_embed(num_positions: int, dim: int) -> Tensor:
    """Transformer sinusoid table (1, num_positions, dim), float32.

    ``PE[p, j] = sin(p / 10000 ** (2 * (j // 2) / dim))`` for even j, ``cos`` for odd j
    (computed in float64 like the official numpy table).
    """
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    freq = torch.pow(10000.0, 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim)
    angle = pos / freq
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


def soft_split_hw(hw: tuple[int, int], kernel: int, stride: int, padding: int) -> tuple[int, int]:
    """Grid size after an unfold with the given kernel / stride / padding."""
    return tuple((s + 2 * padding - kernel) // stride + 1 for s in hw)


def t2t_resolution(img_hw: tuple[int, int]) -> tuple[int, int]:
    """Token grid of the T2T module for an (H, W) image (14x14 at 224)."""
    for k, s, p in SOFT_SPLITS:
        img_hw = soft_split_hw(img_hw, k, s, p)
    return img_hw


def token_ffn_cfg_for(ffn_cfg: dict) -> dict:
    """Default T2T token-layer FFN for an encoder ``ffn_cfg``: the SE-less LFF when the
    encoder uses a grid FFN (LocalViT-T2T), otherwise ``ffn_cfg`` itself (T2T-ViT)."""
    cls = MODELS.get(ffn_cfg['type']) if isinstance(ffn_cfg.get('type'), str) else None
    return dict(TOKEN_LFF_CFG) if getattr(cls, 'grid_ffn', False) else dict(ffn_cfg)


class PerformerTokenLayer(nn.Module):
    """T2T token layer: single-head performer attention on ``norm1(x)``, then an FFN.

    ``kqv`` Linear(dim, 3 * out) is split in the order **k, q, v**. With the positive random
    features ``phi(z) = exp(z @ w.T - |z|^2 / 2) / sqrt(m)`` (``w`` a fixed (m, out)
    orthogonal matrix scaled by sqrt(m), part of the checkpoint), the attention is
    ``phi(q) (phi(k).T v) / (phi(q) sum_t phi(k_t) + 1e-8)``; the result is
    ``v + drop(proj(attn))`` (the value is the skip path: widths differ). The kernel is
    evaluated in float32 (autocast off). The FFN follows :func:`ffn_residual` on the token
    grid: the LFF adds its branch directly (official; ``norm2`` then exists but is unused
    and frozen, kept for the checkpoint layout), a plain MLP gets ``x + mlp(norm2(x))``.

    Token I/O: (B, H*W, dim) with ``hw_shape`` -> (B, H*W, out).

    Args:
        dim: input width (channels x unfold kernel area).
        out_dim: token width (official ``token_dim``, 64).
        ffn_cfg: the FFN; its hidden width is ``out_dim``.
        kernel_ratio: m = ``int(out_dim * kernel_ratio)`` random features.
        drop: dropout after ``proj`` (and in a plain MLP); the official value is 0.1.
    """

    def __init__(self, dim: int, out_dim: int, ffn_cfg: dict, kernel_ratio: float = 0.5,
                 drop: float = 0.1, eps: float = 1e-8) -> None:
        super().__init__()
        self.out_dim, self.eps = out_dim, eps
        self.m = int(out_dim * kernel_ratio)
        if self.m < 1:
            raise ValueError(f'PerformerTokenLayer: kernel_ratio {kernel_ratio} gives no random '
                             f'features for out_dim {out_dim}')
        self.norm1 = nn.LayerNorm(dim)
        self.kqv = nn.Linear(dim, 3 * out_dim)
        self.proj = nn.Linear(out_dim, out_dim)
        self.drop = nn.Dropout(drop)
        self.norm2 = nn.LayerNorm(out_dim)
        self.ffn = build_ffn(ffn_cfg, out_dim, out_dim, None, drop)
        if is_grid_ffn(self.ffn):
            self.norm2.requires_grad_(False)  # unused (official layout only)
        w = nn.init.orthogonal_(torch.empty(self.m, out_dim)) * math.sqrt(self.m)
        self.w = nn.Parameter(w, requires_grad=False)

    def features(self, z: Tensor) -> Tensor:
        """(B, T, out) -> positive random features (B, T, m), float32."""
        z = z.float()
        proj = z @ self.w.float().t()
        return torch.exp(proj - 0.5 * z.square().sum(-1, keepdim=True)) / math.sqrt(self.m)

    def attention(self, x: Tensor) -> Tensor:
        """(B, T, dim) normalised tokens -> (B, T, out) including the value skip path."""
        k, q, v = self.kqv(x).split(self.out_dim, dim=-1)
        with torch.autocast(x.device.type, enabled=False):
            fk, fq = self.features(k), self.features(q)
            num = fq @ (fk.transpose(1, 2) @ v.float())  # (B, T, out)
            den = fq @ fk.sum(1)[:, :, None]  # (B, T, 1)
            y = num / (den + self.eps)
        return v + self.drop(self.proj(y.to(v.dtype)))

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        x = self.attention(self.norm1(x))
        norm = None if is_grid_ffn(self.ffn) else self.norm2
        return ffn_residual(self.ffn, x, hw_shape, 0, norm)


class T2TModule(nn.Module):
    """Tokens-to-token stem: unfold(7, s4, p2) -> token layer -> unfold(3, s2, p1) ->
    token layer -> unfold(3, s2, p1) -> ``project`` Linear(9 * token, embed).

    (B, C, H, W) -> ``(tokens (B, h*w, embed), (h, w))``; any H, W (non-square included);
    the grid after each unfold is tracked instead of assuming a square.
    """

    def __init__(self, in_channels: int, embed_dims: int, token_dims: int, ffn_cfg: dict,
                 kernel_ratio: float = 0.5, drop: float = 0.1) -> None:
        super().__init__()
        (k0, _, _), (k1, _, _), (k2, _, _) = SOFT_SPLITS
        self.attention1 = PerformerTokenLayer(in_channels * k0 * k0, token_dims, ffn_cfg,
                                              kernel_ratio, drop)
        self.attention2 = PerformerTokenLayer(token_dims * k1 * k1, token_dims, ffn_cfg,
                                              kernel_ratio, drop)
        self.project = nn.Linear(token_dims * k2 * k2, embed_dims)

    @staticmethod
    def soft_split(x: Tensor, i: int) -> tuple[Tensor, tuple[int, int]]:
        """(B, C, H, W) -> overlapping patches as tokens (B, h*w, C*k*k) and (h, w)."""
        k, s, p = SOFT_SPLITS[i]
        hw = soft_split_hw((x.shape[2], x.shape[3]), k, s, p)
        return F.unfold(x, k, padding=p, stride=s).transpose(1, 2), hw

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x, hw = self.soft_split(x, 0)
        x, hw = self.soft_split(nlc_to_nchw(self.attention1(x, hw), hw), 1)
        x, hw = self.soft_split(nlc_to_nchw(self.attention2(x, hw), hw), 2)
        return self.project(x), hw


@MODELS.register_module()
class LocalViTT2T(ClassTokenEncoderMixin, TokenParamsFreezeMixin, BaseLSABackbone):
    """LocalViT-T2T (official ``localvit_T2t_conv7``): T2T-ViT-7 with locality FFNs.

    Every encoder block is a "stage" (stride 16). ``out_type='cls_token'`` returns the
    final-normed class token (B, C) for a ``LinearClsHead`` (the published classifier);
    ``'featmap'`` returns (B, C, h, w) token maps. Beyond the official 224-only model any
    input size works: the T2T grid is ``((H - 3) // 4 + 1)`` then halved twice (rounding
    up), and the fixed sinusoidal position table stored for the ``img_size`` grid is
    bicubically interpolated as a 2-D grid (class slot kept), like the T2T-ViT transfer
    recipe. It is not regenerated for the new token count: the official table runs over
    the raster index, so a regenerated one would change which offsets mean "one row".

    ``pos_embed`` and the performer ``w`` matrices are parameters with
    ``requires_grad=False`` (in the checkpoint, never trained), as in the official model.

    Args:
        arch: ``'t2t-7'`` or a dict with ``embed_dims, depth, num_heads, mlp_ratio,
            se_channels``.
        ffn_cfg: encoder FFN; default the LFF (``act='hs+se'``, SE width from arch);
            ``dict(type='lsa.Mlp')`` gives the plain T2T-ViT-7 baseline.
        token_ffn_cfg: FFN of the two T2T token layers (hidden = ``token_dims``); default
            the SE-less LFF (``act='hs'``) when ``ffn_cfg`` is a grid FFN, else ``ffn_cfg``.
        token_dims: width of the T2T tokens (64).
        kernel_ratio: performer random features per token width (0.5 -> m = 32).
        token_drop: dropout in the T2T token layers (hard-coded 0.1 officially).
        img_size: pretraining size, sets the stored position-embedding grid.
    """

    arch_zoo = {
        't2t-7': dict(embed_dims=256, depth=7, num_heads=4, mlp_ratio=2, se_channels=4),
    }
    essential_keys = {'embed_dims', 'depth', 'num_heads', 'mlp_ratio', 'se_channels'}

    def __init__(self, arch: str | dict = 't2t-7', ffn_cfg: dict | None = None,
                 token_ffn_cfg: dict | None = None, img_size: int | tuple[int, int] = 224,
                 in_channels: int = 3, token_dims: int = 64, kernel_ratio: float = 0.5,
                 token_drop: float = 0.1, qkv_bias: bool = False, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-5, out_indices: OutIndices = -1,
                 out_type: str = 'cls_token', final_norm: bool = True, frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False, compile: bool | dict = False,
                 init_cfg: dict | list | None = None) -> None:
        super().__init__(frozen_stages, norm_eval, with_cp, init_cfg, compile)
        C = self._resolve_host(arch, out_type, final_norm)
        ffn_cfg = dict(LFF_CFG if ffn_cfg is None else ffn_cfg)
        if not isinstance(ffn_cfg.get('type'), str):
            raise TypeError(f'LocalViTT2T: ffn_cfg needs a registered "type" string, '
                            f'got {ffn_cfg!r}')
        token_ffn_cfg = token_ffn_cfg_for(ffn_cfg) if token_ffn_cfg is None else token_ffn_cfg
        self.patch_resolution = t2t_resolution(to_2tuple(img_size))
        self.tokens_to_token = T2TModule(in_channels, C, token_dims, token_ffn_cfg,
                                         kernel_ratio, token_drop)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(
            sinusoid_pos_embed(1 + math.prod(self.patch_resolution), C), requires_grad=False)
        self._build_encoder(ffn_cfg, T2T_STRIDE, out_indices, qkv_bias, drop_rate,
                            attn_drop_rate, drop_path_rate, norm_eps)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_vit_weights)
        self._freeze_stages()

    def stem_modules(self) -> list[nn.Module]:
        return [self.tokens_to_token]

    def stage_params(self, i: int) -> list[nn.Parameter]:
        return [self.cls_token] if i == -1 else []

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.encode_tokens(*self.tokens_to_token(x))
