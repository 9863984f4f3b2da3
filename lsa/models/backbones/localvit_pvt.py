"""LocalViT-PVT: PVT(v1)-Tiny with the locality feed-forward; multi-scale for det/seg."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from lsa.models.layers.common import maybe_checkpoint, nlc_to_nchw, to_2tuple
from lsa.models.layers.patch_embed import PatchEmbed
from lsa.models.layers.pos_embed import resize_pos_embed
from lsa.models.layers.vit_attention import SpatialReductionAttention
from lsa.models.layers.vit_block import LocalViTBlock
from lsa.models.layers.weight_init import init_vit_weights
from lsa.registry import MODELS
from lsa.types import OutIndices

from .base import BaseLSABackbone, TokenParamsFreezeMixin, check_out_type, resolve_arch
from .localvit import LFF_CFG

__all__ = ['LocalViTPVT', 'SpatialReductionAttention']  # the attention's former home


@MODELS.register_module()
class LocalViTPVT(TokenParamsFreezeMixin, BaseLSABackbone):
    """LocalViT-PVT (PVT-Tiny host): four stages, strides 4/8/16/32.

    ``out_type='featmap'`` returns the NCHW stage outputs of ``out_indices`` (before the
    final norm; stage 3 without its class token), for det/seg at any size (inputs are
    padded to the patch grid). ``out_type='cls_token'`` (with ``out_indices=3``) returns the
    final-normed class token (B, 512), the published classifier's feature. Per-stage
    position embeddings are bilinearly resized to the input.

    Args:
        arch: ``'tiny'`` or a dict with ``embed_dims, depths, num_heads, mlp_ratios,
            sr_ratios, se_channels`` (per-stage lists).
        ffn_cfg: default the LFF (SE width = mlp ratio per stage as published);
            ``dict(type='lsa.Mlp')`` gives the PVT-Tiny baseline.
    """

    arch_zoo = {
        'tiny': dict(embed_dims=[64, 128, 320, 512], depths=[2, 2, 2, 2], num_heads=[1, 2, 5, 8],
                     mlp_ratios=[8, 8, 4, 4], sr_ratios=[8, 4, 2, 1], se_channels=[8, 8, 4, 4]),
    }
    essential_keys = {'embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'sr_ratios',
                      'se_channels'}

    def __init__(self, arch: str | dict = 'tiny', ffn_cfg: dict | None = None,
                 img_size: int | tuple[int, int] = 224, patch_size: int = 4,
                 in_channels: int = 3, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-6, out_indices: OutIndices = (0, 1, 2, 3),
                 out_type: str = 'featmap', frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, init_cfg: dict | list | None = None,
                 compile: bool | dict = False) -> None:
        super().__init__(frozen_stages, norm_eval, with_cp, init_cfg, compile)
        a = resolve_arch(type(self).__name__, arch, self.arch_zoo, self.essential_keys)
        dims, depths = a['embed_dims'], a['depths']
        n = len(dims)
        if any(len(a[k]) != n for k in self.essential_keys):
            raise ValueError(f'LocalViTPVT: every per-stage list in arch needs {n} entries, '
                             f'got {a}')
        img_size = to_2tuple(img_size)
        self.out_type = out_type
        ffn_cfg = dict(LFF_CFG if ffn_cfg is None else ffn_cfg)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        strides, cur, in_ch = [], 0, in_channels
        self.pos_hw = []
        for s in range(n):
            patch = patch_size if s == 0 else 2
            stride = patch_size * 2 ** s
            strides.append(stride)
            hw = (img_size[0] // stride, img_size[1] // stride)
            self.pos_hw.append(hw)
            extra = 1 if s == n - 1 else 0
            self.register_parameter(f'pos_embed{s + 1}', nn.Parameter(
                torch.zeros(1, hw[0] * hw[1] + extra, dims[s])))
            setattr(self, f'patch_embed{s + 1}', PatchEmbed(in_ch, dims[s], patch, norm_eps=1e-5))
            setattr(self, f'block{s + 1}', nn.ModuleList(
                LocalViTBlock(dims[s], SpatialReductionAttention(
                    dims[s], a['num_heads'][s], a['sr_ratios'][s], qkv_bias, attn_drop_rate,
                    drop_rate), a['mlp_ratios'][s], ffn_cfg, a['se_channels'][s], drop_rate,
                    dpr[cur + i], norm_eps)
                for i in range(depths[s])))
            cur += depths[s]
            in_ch = dims[s]
        self.pos_drop = nn.Dropout(drop_rate)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims[-1]))
        self.norm = nn.LayerNorm(dims[-1], eps=norm_eps)
        self.num_stages = n
        self._init_outputs(out_indices, dims, strides)
        if out_type == 'cls_token' and self.out_indices != (n - 1,):
            raise ValueError(f"LocalViTPVT: out_type='cls_token' needs out_indices={n - 1}, "
                             f'got {self.out_indices}')
        check_out_type('LocalViTPVT', out_type)
        for s in range(n):
            nn.init.trunc_normal_(getattr(self, f'pos_embed{s + 1}'), std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_vit_weights)
        self._freeze_stages()

    def stage_modules(self, i: int) -> list[nn.Module]:
        mods = [getattr(self, f'patch_embed{i + 1}'), getattr(self, f'block{i + 1}')]
        return mods + ([self.norm] if i == self.num_stages - 1 else [])

    def stage_params(self, i: int) -> list[nn.Parameter]:
        if i < 0:
            return []
        extra = [self.cls_token] if i == self.num_stages - 1 else []
        return [getattr(self, f'pos_embed{i + 1}')] + extra

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        B, outs, last = x.shape[0], [], self.num_stages - 1
        for s in range(self.num_stages):
            x, hw = getattr(self, f'patch_embed{s + 1}')(x)
            extra = int(s == last)
            if extra:
                x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
            pos = resize_pos_embed(getattr(self, f'pos_embed{s + 1}'), self.pos_hw[s], hw,
                                   extra, mode='bilinear')
            x = self.pos_drop(x + pos)
            for blk in getattr(self, f'block{s + 1}'):
                x = maybe_checkpoint(blk, x, hw, extra, enabled=self.with_cp)
            if s == last and self.out_type == 'cls_token':
                outs.append(self.norm(x)[:, 0])
                break
            x = nlc_to_nchw(x[:, extra:], hw)
            if s in self.out_indices:
                outs.append(x)
        return tuple(outs)
