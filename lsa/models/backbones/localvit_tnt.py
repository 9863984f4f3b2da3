"""LocalViT-TNT: Transformer-in-Transformer (TNT-T) with the locality feed-forward."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lsa.models.layers.common import DropPath, Mlp, maybe_checkpoint, nlc_to_nchw, to_2tuple
from lsa.models.layers.locality_ffn import build_ffn, ffn_norm, ffn_residual
from lsa.models.layers.pos_embed import resize_pos_embed
from lsa.models.layers.vit_attention import TNTAttention
from lsa.models.layers.weight_init import init_vit_weights
from lsa.registry import MODELS
from lsa.types import OutIndices

from .base import BaseLSABackbone, TokenParamsFreezeMixin, check_out_type, resolve_arch
from .localvit import LFF_CFG

__all__ = ['LocalViTTNT', 'TNTAttention']  # the attention's former home


class TNTBlock(nn.Module):
    """Inner (pixel) transformer, pixel -> patch projection, outer attention, outer FFN.

    Pixel tokens (B*L, P, c), patch tokens (B, 1 + L, C). Inner and outer residual
    branches share one DropPath rate (official); the outer FFN follows
    :func:`ffn_residual` (the LFF: class token bypass, no norm, no drop path).
    """

    def __init__(self, dim: int, inner_dim: int, num_pixel: int, num_heads: int,
                 inner_num_heads: int, mlp_ratio: float, ffn_cfg: dict,
                 se_channels: int | None = None, qkv_bias: bool = False, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(inner_dim, eps=norm_eps)
        self.attn_in = TNTAttention(inner_dim, inner_num_heads, qkv_bias, attn_drop, drop)
        self.norm_mlp_in = nn.LayerNorm(inner_dim, eps=norm_eps)
        self.mlp_in = Mlp(inner_dim, inner_dim * 4, act='gelu', drop=drop)
        self.norm1_proj = nn.LayerNorm(inner_dim, eps=norm_eps)
        self.proj = nn.Linear(inner_dim * num_pixel, dim)
        self.norm_out = nn.LayerNorm(dim, eps=norm_eps)
        self.attn_out = TNTAttention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.ffn = build_ffn(ffn_cfg, dim, int(dim * mlp_ratio), se_channels, drop)
        self.norm2 = ffn_norm(self.ffn, dim, norm_eps)

    def forward(self, pixel: Tensor, patch: Tensor,
                hw_shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
        pixel = pixel + self.drop_path(self.attn_in(self.norm_in(pixel)))
        pixel = pixel + self.drop_path(self.mlp_in(self.norm_mlp_in(pixel)))
        B, N, _ = patch.shape
        inner = self.proj(self.norm1_proj(pixel).reshape(B, N - 1, -1))
        patch = torch.cat([patch[:, :1], patch[:, 1:] + inner], dim=1)
        patch = patch + self.drop_path(self.attn_out(self.norm_out(patch)))
        patch = ffn_residual(self.ffn, patch, hw_shape, 1, self.norm2, self.drop_path)
        return pixel, patch


class PixelEmbed(nn.Module):
    """Image -> pixel tokens (B*L, p*p, c): Conv2d(k7, stride s, pad 3), then each
    (patch/s)x(patch/s) cell of a patch becomes one patch's pixel sequence, plus
    ``pixel_pos`` (1, c, p, p). Inputs are zero-padded to a multiple of ``patch_size``."""

    def __init__(self, in_channels: int, inner_dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.patch_size, self.inner_dim = patch_size, inner_dim
        self.new_patch_size = math.ceil(patch_size / stride)
        self.proj = nn.Conv2d(in_channels, inner_dim, 7, stride=stride, padding=3)

    def forward(self, x: Tensor, pixel_pos: Tensor) -> tuple[Tensor, tuple[int, int]]:
        p = self.patch_size
        pad_h, pad_w = -x.shape[2] % p, -x.shape[3] % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        hw = (x.shape[2] // p, x.shape[3] // p)
        x = self.proj(x)
        B, c, k = x.shape[0], self.inner_dim, self.new_patch_size
        x = x[:, :, :hw[0] * k, :hw[1] * k].reshape(B, c, hw[0], k, hw[1], k)
        x = x.permute(0, 2, 4, 1, 3, 5).reshape(B * hw[0] * hw[1], c, k, k) + pixel_pos
        return x.flatten(2).transpose(1, 2), hw


@MODELS.register_module()
class LocalViTTNT(TokenParamsFreezeMixin, BaseLSABackbone):
    """LocalViT-TNT: TNT blocks whose outer MLP is the locality feed-forward.

    Every block is a "stage" (stride 16). ``out_type='cls_token'`` returns the
    final-normed class token (B, C) (the published classifier's feature); ``'featmap'``
    returns (B, C, H/16, W/16) patch maps. ``patch_pos`` is bicubically resized to the
    input; ``pixel_pos`` is per-patch and size-independent.

    Args:
        arch: ``'tiny'`` (TNT-T host), ``'small'`` (TNT-S) or a dict with ``embed_dims,
            inner_dims, depth, num_heads, inner_num_heads, mlp_ratio, se_channels``.
        ffn_cfg: default the LFF; ``dict(type='lsa.Mlp')`` gives the plain TNT baseline.
    """

    arch_zoo = {
        'tiny': dict(embed_dims=192, inner_dims=12, depth=12, num_heads=3, inner_num_heads=3,
                     mlp_ratio=4, se_channels=4),
        'small': dict(embed_dims=384, inner_dims=24, depth=12, num_heads=6, inner_num_heads=4,
                      mlp_ratio=4, se_channels=4),
    }
    essential_keys = {'embed_dims', 'inner_dims', 'depth', 'num_heads', 'inner_num_heads',
                      'mlp_ratio', 'se_channels'}

    def __init__(self, arch: str | dict = 'tiny', ffn_cfg: dict | None = None,
                 img_size: int | tuple[int, int] = 224, patch_size: int = 16,
                 first_stride: int = 4, in_channels: int = 3, qkv_bias: bool = False,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, norm_eps: float = 1e-5,
                 out_indices: OutIndices = -1, out_type: str = 'cls_token',
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 compile: bool | dict = False,
                 init_cfg: dict | list | None = None) -> None:
        super().__init__(frozen_stages, norm_eval, with_cp, init_cfg, compile)
        a = resolve_arch(type(self).__name__, arch, self.arch_zoo, self.essential_keys)
        self.out_type = check_out_type(type(self).__name__, out_type)
        C, c, depth = a['embed_dims'], a['inner_dims'], a['depth']
        img_size = to_2tuple(img_size)
        self.patch_resolution = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.pixel_embed = PixelEmbed(in_channels, c, patch_size, first_stride)
        k = self.pixel_embed.new_patch_size
        self.norm1_proj = nn.LayerNorm(k * k * c, eps=norm_eps)
        self.proj = nn.Linear(k * k * c, C)
        self.norm2_proj = nn.LayerNorm(C, eps=norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.patch_pos = nn.Parameter(torch.zeros(1, 1 + math.prod(self.patch_resolution), C))
        self.pixel_pos = nn.Parameter(torch.zeros(1, c, k, k))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
        ffn_cfg = dict(LFF_CFG if ffn_cfg is None else ffn_cfg)
        self.blocks = nn.ModuleList(
            TNTBlock(C, c, k * k, a['num_heads'], a['inner_num_heads'], a['mlp_ratio'], ffn_cfg,
                     a['se_channels'], qkv_bias, drop_rate, attn_drop_rate, dpr[i], norm_eps)
            for i in range(depth))
        self.norm = nn.LayerNorm(C, eps=norm_eps)
        self.num_stages = depth
        self._init_outputs(out_indices, [C] * depth, [patch_size] * depth)
        for p in (self.cls_token, self.patch_pos, self.pixel_pos):
            nn.init.trunc_normal_(p, std=0.02)
        self.apply(init_vit_weights)
        self._freeze_stages()

    def stem_modules(self) -> list[nn.Module]:
        return [self.pixel_embed, self.norm1_proj, self.proj, self.norm2_proj]

    def stage_modules(self, i: int) -> list[nn.Module]:
        return [self.blocks[i]] + ([self.norm] if i == self.num_stages - 1 else [])

    def stage_params(self, i: int) -> list[nn.Parameter]:
        return [self.cls_token, self.patch_pos, self.pixel_pos] if i == -1 else []

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        B = x.shape[0]
        pixel, hw = self.pixel_embed(x, self.pixel_pos)
        patch = self.norm2_proj(self.proj(self.norm1_proj(pixel.reshape(B, hw[0] * hw[1], -1))))
        patch = torch.cat([self.cls_token.expand(B, -1, -1), patch], dim=1)
        patch = self.pos_drop(patch + resize_pos_embed(self.patch_pos, self.patch_resolution,
                                                       hw, 1))
        outs = []
        for i, blk in enumerate(self.blocks):
            pixel, patch = maybe_checkpoint(blk, pixel, patch, hw, enabled=self.with_cp)
            if i == len(self.blocks) - 1:
                patch = self.norm(patch)
            if i in self.out_indices:
                outs.append(patch[:, 0] if self.out_type == 'cls_token'
                            else nlc_to_nchw(patch[:, 1:], hw))
        return tuple(outs)
