"""LocalViT on the DeiT host (LocalViT-T, -T-SE4, -S)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from lsa.models.layers.common import to_2tuple
from lsa.models.layers.patch_embed import PatchEmbed
from lsa.models.layers.pos_embed import resize_pos_embed
from lsa.models.layers.vit_attention import MultiheadSelfAttention
from lsa.models.layers.vit_block import LocalViTBlock
from lsa.models.layers.weight_init import init_vit_weights
from lsa.registry import MODELS
from lsa.types import OutIndices

from .base import BaseLSABackbone, ClassTokenEncoderMixin, TokenParamsFreezeMixin, resolve_arch

# Former homes of the shared pieces (now in lsa.models.layers and .base), kept importable.
__all__ = ['LocalViT', 'LFF_CFG', 'PatchEmbed', 'resize_pos_embed', 'init_vit_weights',
           'MultiheadSelfAttention', 'LocalViTBlock', 'ClassTokenEncoderMixin',
           'TokenParamsFreezeMixin', 'check_arch']

LFF_CFG = dict(type='lsa.LocalityFeedForward', act='hs+se')


def check_arch(name: str, arch: str | dict, zoo: dict, keys: set) -> dict:
    """Former name of :func:`lsa.models.backbones.base.resolve_arch`."""
    return resolve_arch(name, arch, zoo, keys)


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

    def __init__(self, arch: str | dict = 'tiny', ffn_cfg: dict | None = None,
                 img_size: int | tuple[int, int] = 224, patch_size: int = 16,
                 in_channels: int = 3, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-6, out_indices: OutIndices = -1,
                 out_type: str = 'cls_token', final_norm: bool = True, frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False, compile: bool | dict = False,
                 init_cfg: dict | list | None = None) -> None:
        super().__init__(frozen_stages, norm_eval, with_cp, init_cfg, compile)
        C = self._resolve_host(arch, out_type, final_norm)
        img_size = to_2tuple(img_size)
        self.patch_resolution = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.patch_embed = PatchEmbed(in_channels, C, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + math.prod(self.patch_resolution), C))
        self._build_encoder(dict(LFF_CFG if ffn_cfg is None else ffn_cfg), patch_size,
                            out_indices, qkv_bias, drop_rate, attn_drop_rate, drop_path_rate,
                            norm_eps)
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
