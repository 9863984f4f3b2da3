"""LocalViT on the DeiT host (LocalViT-T, -T-SE4, -S) and the pieces its other hosts share.

Shared here (one copy, imported by ``localvit_pvt``/``localvit_tnt``): :class:`PatchEmbed`
(pads to a multiple of the patch), :func:`resize_pos_embed`, :func:`init_vit_weights` and
:class:`TokenParamsFreezeMixin`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lsa.models.layers.common import DropPath, checkpoint_seq, nlc_to_nchw, to_2tuple
from lsa.models.layers.locality_ffn import build_ffn, ffn_norm, ffn_residual
from lsa.registry import MODELS
from lsa.types import OutIndices

from .base import BaseLSABackbone

LFF_CFG = dict(type='lsa.LocalityFeedForward', act='hs+se')


def resize_pos_embed(pos_embed: Tensor, src_hw: Sequence[int], dst_hw: Sequence[int],
                     num_prefix: int = 0, mode: str = 'bicubic') -> Tensor:
    """Interpolate a (1, P + h*w, C) position embedding to a (1, P + H*W, C) one.

    The ``num_prefix`` leading entries (class token) are kept; the grid part is resized
    with ``F.interpolate`` (``align_corners=False``). Identity when the sizes agree.
    """
    src_hw, dst_hw = tuple(src_hw), tuple(dst_hw)
    if src_hw == dst_hw:
        return pos_embed
    h, w = src_hw
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    if grid.shape[1] != h * w:
        raise ValueError(f'resize_pos_embed: {grid.shape[1]} grid entries do not match {src_hw}')
    grid = nlc_to_nchw(grid, (h, w))
    grid = F.interpolate(grid, size=dst_hw, mode=mode, align_corners=False)
    return torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)


def init_vit_weights(m: nn.Module) -> None:
    """Official init: Linear trunc_normal(std .02) with zero bias, LayerNorm 1/0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class PatchEmbed(nn.Module):
    """Conv patchify (kernel = stride = patch) -> tokens, optional LayerNorm.

    Inputs whose sides are not multiples of the patch are zero-padded at the bottom/right
    first (exactly the official model at 224). Returns ``(tokens (B, h*w, C), (h, w))``.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int,
                 norm_eps: float | None = None) -> None:
        super().__init__()
        self.patch_size = to_2tuple(patch_size)
        self.proj = nn.Conv2d(in_channels, embed_dims, self.patch_size, stride=self.patch_size)
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps) if norm_eps is not None else None

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        ph, pw = self.patch_size
        pad_h, pad_w = -x.shape[2] % ph, -x.shape[3] % pw
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x, hw


class TokenParamsFreezeMixin:
    """``frozen_stages`` for backbones that own bare parameters (cls token, pos embeds).

    Subclasses list them per stage in :meth:`stage_params` (stage -1 = stem).
    """

    def stage_params(self, i: int) -> list[nn.Parameter]:
        return []

    def _freeze_stages(self) -> None:
        super()._freeze_stages()
        for i in range(-1, self.frozen_stages) if self.frozen_stages >= 0 else ():
            for p in self.stage_params(i):
                p.requires_grad = False


class ClassTokenEncoderMixin:
    """The DeiT-style encoder shared by LocalViT and LocalViT-T2T.

    Needs ``cls_token``, ``pos_embed``, ``patch_resolution``, ``pos_drop``,
    ``blocks`` (one per stage), ``norm`` (or None) and ``out_type``.
    """

    def stage_modules(self, i: int) -> list[nn.Module]:
        last = [self.norm] if i == self.num_stages - 1 and self.norm is not None else []
        return [self.blocks[i]] + last

    def encode_tokens(self, x: Tensor, hw: tuple[int, int]) -> tuple[Tensor, ...]:
        """(B, H*W, C) patch tokens on an ``hw`` grid -> one output per ``out_indices`` entry:
        (B, C) class-token features or (B, C, H, W) maps, per ``out_type``."""
        B = x.shape[0]
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        x = x + resize_pos_embed(self.pos_embed, self.patch_resolution, hw, 1)
        x = self.pos_drop(x)
        outs = []
        for i, blk in enumerate(self.blocks):
            x = checkpoint_seq(blk, x, hw, enabled=self.with_cp)
            if i == len(self.blocks) - 1 and self.norm is not None:
                x = self.norm(x)
            if i in self.out_indices:
                outs.append(x[:, 0] if self.out_type == 'cls_token'
                            else nlc_to_nchw(x[:, 1:], hw))
        return tuple(outs)


class MultiheadSelfAttention(nn.Module):
    """ViT/DeiT multi-head self-attention on (B, N, C) tokens.

    ``qkv`` Linear(C, 3C) rows are [q; k; v], head-major inside each; scale
    ``(C / heads) ** -0.5``; ``proj`` Linear(C, C).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'MultiheadSelfAttention: dim {dim} is not divisible by '
                             f'num_heads {num_heads}')
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, hw_shape: tuple[int, int] | None = None) -> Tensor:
        """(B, N, C) -> (B, N, C); ``hw_shape`` is unused (same call as spatial attentions)."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class LocalViTBlock(nn.Module):
    """Pre-norm transformer block: the host's attention and a feed-forward from ``ffn_cfg``.

    ``x = x + drop_path(attn(norm1(x), hw_shape))`` then :func:`ffn_residual` (the LFF skips
    the ``num_prefix`` class token and has no norm2 / drop path; the plain MLP is the usual
    pre-norm branch). Token I/O (B, num_prefix + H*W, C) -> same. Used by the DeiT and PVT
    hosts.
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float, ffn_cfg: dict,
                 se_channels: int | None = None, drop: float = 0.0, drop_path: float = 0.0,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.ffn = build_ffn(ffn_cfg, dim, int(dim * mlp_ratio), se_channels, drop)
        self.norm2 = ffn_norm(self.ffn, dim, norm_eps)

    def forward(self, x: Tensor, hw_shape: tuple[int, int], num_prefix: int = 1) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
        return ffn_residual(self.ffn, x, hw_shape, num_prefix, self.norm2, self.drop_path)


def check_arch(name: str, arch: str | dict, zoo: dict, keys: set) -> dict:
    """Look ``arch`` up in ``zoo`` or validate a custom dict (exactly the essential keys)."""
    if isinstance(arch, str):
        if arch.lower() not in zoo:
            raise ValueError(f'{name}: unknown arch {arch!r}; choose from {sorted(zoo)} '
                             f'or pass a dict with keys {sorted(keys)}')
        return dict(zoo[arch.lower()])
    if not isinstance(arch, dict) or not keys <= set(arch):
        raise ValueError(f'{name}: a custom arch needs a dict with keys {sorted(keys)}, '
                         f'got {arch!r}')
    return dict(arch)


@MODELS.register_module()
class LocalViT(ClassTokenEncoderMixin, TokenParamsFreezeMixin, BaseLSABackbone):
    """LocalViT on the DeiT host: ViT blocks with the locality feed-forward.

    Every block is a "stage" (``out_indices``/``frozen_stages`` count blocks, stride 16).
    ``out_type='cls_token'`` returns the final-normed class token (B, C) for an mmpretrain
    ``LinearClsHead`` (the published classifier); ``'featmap'`` returns (B, C, H/16, W/16)
    maps. The final norm is applied to the last block's output only. The position
    embedding is bicubically resized to any input size (non-square included).

    Args:
        arch: ``'tiny'`` (LocalViT-T), ``'tiny-se4'``, ``'small'``, ``'deit-tiny'``,
            ``'deit-small'`` (3/6 heads, the DeiT baselines) or a dict with
            ``embed_dims, depth, num_heads, mlp_ratio, se_channels``.
        ffn_cfg: the feed-forward; default the LFF (``act='hs+se'``, SE width from arch);
            ``dict(type='lsa.Mlp')`` gives the plain DeiT baseline.
        img_size: pretraining size, sets the stored position-embedding grid.
        drop_path_rate: stochastic depth, linear over blocks (attention branch for the LFF).
    """

    arch_zoo = {
        'tiny': dict(embed_dims=192, depth=12, num_heads=4, mlp_ratio=4, se_channels=4),
        'tiny-se4': dict(embed_dims=192, depth=12, num_heads=4, mlp_ratio=4, se_channels=192),
        'small': dict(embed_dims=384, depth=12, num_heads=8, mlp_ratio=4, se_channels=4),
        'deit-tiny': dict(embed_dims=192, depth=12, num_heads=3, mlp_ratio=4, se_channels=4),
        'deit-small': dict(embed_dims=384, depth=12, num_heads=6, mlp_ratio=4, se_channels=4),
    }
    essential_keys = {'embed_dims', 'depth', 'num_heads', 'mlp_ratio', 'se_channels'}
    num_extra_tokens = 1

    def __init__(self, arch: str | dict = 'tiny', ffn_cfg: dict | None = None,
                 img_size: int | tuple[int, int] = 224, patch_size: int = 16,
                 in_channels: int = 3, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-6, out_indices: OutIndices = -1,
                 out_type: str = 'cls_token', final_norm: bool = True, frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False, compile: bool | dict = False,
                 init_cfg: dict | list | None = None) -> None:
        super().__init__(frozen_stages, norm_eval, with_cp, init_cfg, compile)
        a = check_arch(type(self).__name__, arch, self.arch_zoo, self.essential_keys)
        if out_type not in ('cls_token', 'featmap'):
            raise ValueError(f"LocalViT: out_type must be 'cls_token' or 'featmap', "
                             f'got {out_type!r}')
        C, depth = a['embed_dims'], a['depth']
        self.embed_dims, self.out_type, self.final_norm = C, out_type, final_norm
        img_size = to_2tuple(img_size)
        self.patch_resolution = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.patch_embed = PatchEmbed(in_channels, C, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + math.prod(self.patch_resolution), C))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        ffn_cfg = dict(LFF_CFG if ffn_cfg is None else ffn_cfg)
        self.blocks = nn.ModuleList(
            LocalViTBlock(C, MultiheadSelfAttention(C, a['num_heads'], qkv_bias, attn_drop_rate,
                                                    drop_rate),
                          a['mlp_ratio'], ffn_cfg, a['se_channels'], drop_rate, dpr[i], norm_eps)
            for i in range(depth))
        self.norm = nn.LayerNorm(C, eps=norm_eps) if final_norm else None
        self.num_stages = depth
        self._init_outputs(out_indices, [C] * depth, [patch_size] * depth)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_vit_weights)
        self._freeze_stages()

    def stem_modules(self) -> list[nn.Module]:
        return [self.patch_embed]

    def stage_params(self, i: int) -> list[nn.Parameter]:
        return [self.cls_token, self.pos_embed] if i == -1 else []

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.encode_tokens(*self.patch_embed(x))
