"""A generic Swin host: the attention and the feed-forward of every stage come by config.

With window attention everywhere and the plain :class:`~lsa.models.layers.common.Mlp`
this is Swin Transformer (Liu et al. 2021); ELSA-Swin swaps the attention of
stages 0-2 (:mod:`lsa.models.backbones.elsa_swin`), LocalViT-Swin swaps the
feed-forward.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lsa.models.layers.common import DropPath, maybe_checkpoint
from lsa.models.layers.locality_ffn import ffn_residual, is_grid_ffn
from lsa.models.layers.patch_embed import PatchEmbed
from lsa.models.layers.weight_init import init_vit_weights
from lsa.registry import MODELS, build_block
from lsa.types import OutIndices

from .base import BaseLSABackbone, resolve_arch

__all__ = ['SwinHost', 'SwinBlock', 'SwinStage', 'PatchMerging', 'PatchEmbed']  # PatchEmbed: moved

CfgOrCfgs = dict | Sequence[dict] | None


class PatchMerging(nn.Module):
    """2x2 patch merging: (B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C).

    Concatenates ``x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]``
    (row offset first), then LayerNorm(4C) and a bias-free Linear(4C, 2C). Odd
    maps are zero-padded right/bottom.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        B, _, C = x.shape
        H, W = hw_shape
        x = x.view(B, H, W, C)
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      dim=-1)  # B, H/2, W/2, 4C
        hw = (x.shape[1], x.shape[2])
        return self.reduction(self.norm(x.flatten(1, 2))), hw


class SwinBlock(nn.Module):
    """Pre-norm transformer block on a token map.

    ``x = x + drop_path(attn(norm1(x), hw))``, then the feed-forward wired by
    :func:`~lsa.models.layers.locality_ffn.ffn_residual` (the protocol every host uses):
    ``x + drop_path(ffn(norm2(x), hw))`` for an MLP, ``x + ffn(x, hw)`` without norm2 or drop
    path for a grid FFN (LFF). ``ffn_norm`` / ``ffn_residual`` override what the FFN declares
    (None: follow it); ``ffn_residual=False`` means the FFN returns the block output itself.
    """

    def __init__(self, dim: int, attn: nn.Module, ffn: nn.Module, drop_path: float = 0.0,
                 ffn_norm: bool | None = None, ffn_residual: bool | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        with_norm = not is_grid_ffn(ffn) if ffn_norm is None else ffn_norm
        self.norm2 = nn.LayerNorm(dim) if with_norm else nn.Identity()
        self.ffn = ffn
        self.own_residual = None if ffn_residual is None else not ffn_residual
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
        return ffn_residual(self.ffn, x, hw_shape, 0, self.norm2, self.drop_path,
                            self.own_residual)


class SwinStage(nn.Module):
    """The blocks of one stage, then (except in the last stage) patch merging."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


def _per_stage(cfg: CfgOrCfgs, n: int, what: str, owner: str) -> list[dict]:
    if isinstance(cfg, dict):
        return [copy.deepcopy(cfg) for _ in range(n)]
    cfgs = list(cfg)
    if len(cfgs) != n or not all(isinstance(c, dict) for c in cfgs):
        raise ValueError(f'{owner}: {what} must be one dict or a list of {n} dicts (one per '
                         f'stage), got {cfg!r}')
    return [copy.deepcopy(c) for c in cfgs]


def _cfg_class(cfg: dict) -> type:
    t = cfg.get('type')
    cls = MODELS.get(t) if isinstance(t, str) else t
    if not isinstance(cls, type):
        raise ValueError(f'unknown block type {t!r} (is it registered in lsa.registry.MODELS?)')
    return cls


@MODELS.register_module()
class SwinHost(BaseLSABackbone):
    """Hierarchical Swin backbone whose per-stage attention and feed-forward are configs.

    Layout (Swin Transformer, Liu et al. ICCV 2021): patch embed (conv p x p,
    stride p, LayerNorm) -> 4 stages of pre-norm blocks, 2x2 patch merging after
    stages 0-2 -> one LayerNorm ``norm{i}`` per returned stage. Block ``j`` of
    stage ``i`` runs ``attn_cfgs[i]`` with ``dim``/``num_heads`` of the stage
    injected; attention types with ``alternate_shift = True`` (window
    attention) get ``shifted = (j % 2 == 1)`` and ``pad_small_map``. The
    feed-forward is ``ffn_cfg`` with ``in_features=dim`` and
    ``hidden_features=int(dim * mlp_ratio)`` injected; its forward is
    ``(tokens (B, N, C), hw_shape) -> (B, N, C)`` (override :meth:`build_ffn` for
    a module with other constructor names).

    ``forward(x)`` takes (B, 3, H, W) at any H, W and returns one
    (B, C_i, ceil(H / 4 / 2**i), ceil(W / 4 / 2**i)) map per entry of
    ``out_indices``. For classification use ``out_indices=(3,)``: ``norm3`` is
    the final norm of the classifier, followed by global average pooling and a
    linear head.

    Args:
        arch: A key of ``arch_zoo`` or a dict with ``embed_dims``, ``depths``,
            ``num_heads``.
        attn_cfgs: One attention config for all stages or a list of four.
            Default: window attention (window 7) everywhere.
        ffn_cfg: Feed-forward config (one or a list of four); default ``lsa.Mlp``.
        mlp_ratio: Hidden width of the feed-forward over ``dim``.
        ffn_norm: Pre-norm before the feed-forward (``norm2``); None: as the FFN declares
            (yes for an MLP, no for a grid FFN such as the LFF).
        ffn_residual: Residual around the feed-forward; False when the feed-forward adds
            its own residual; None: as the FFN declares (its ``residual`` attribute).
        patch_size: Patch embedding stride.
        in_channels: Image channels.
        drop_path_rate: Maximum stochastic depth, linear over all blocks.
        pad_small_map: Passed to window attention (see
            :class:`~lsa.models.layers.window_attention.ShiftWindowAttention`);
            False: classification behaviour, True: the official det/seg backbones.
        out_indices: Stages to return (each gets a LayerNorm ``norm{i}``).
        frozen_stages, norm_eval, with_cp, init_cfg, compile: the backbone contract
            (:mod:`lsa.models.backbones.base`).

    Example:
        >>> model = SwinHost(arch='tiny', out_indices=(0, 1, 2, 3))
        >>> [tuple(o.shape[1:]) for o in model(torch.rand(1, 3, 200, 333))]
        [(96, 50, 84), (192, 25, 42), (384, 13, 21), (768, 7, 11)]
    """

    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], {'embed_dims': 96, 'depths': (2, 2, 6, 2),
                                        'num_heads': (3, 6, 12, 24)}),
        **dict.fromkeys(['s', 'small'], {'embed_dims': 96, 'depths': (2, 2, 18, 2),
                                         'num_heads': (3, 6, 12, 24)}),
        **dict.fromkeys(['b', 'base'], {'embed_dims': 128, 'depths': (2, 2, 18, 2),
                                        'num_heads': (4, 8, 16, 32)}),
    }
    essential_keys = ('embed_dims', 'depths', 'num_heads')
    default_attn_cfg = dict(type='lsa.ShiftWindowAttention', window_size=7)

    def __init__(self, arch: str | dict = 'tiny', attn_cfgs: CfgOrCfgs = None,
                 ffn_cfg: CfgOrCfgs = None, mlp_ratio: float = 4.0,
                 ffn_norm: bool | None = None, ffn_residual: bool | None = None,
                 patch_size: int = 4, in_channels: int = 3,
                 drop_path_rate: float = 0.1, pad_small_map: bool = False,
                 out_indices: OutIndices = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False, compile: bool | dict = False,
                 init_cfg: dict | list | None = None) -> None:
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=init_cfg, compile=compile)
        owner = type(self).__name__
        self.arch = self._resolve_arch(arch)
        dims0 = self.arch['embed_dims']
        depths, heads = tuple(self.arch['depths']), tuple(self.arch['num_heads'])
        if len(depths) != len(heads):
            raise ValueError(f'{owner}: depths and num_heads need one entry per stage, got '
                             f'depths={depths}, num_heads={heads}')
        self.num_stages = len(depths)
        dims = [dims0 * 2 ** i for i in range(self.num_stages)]
        self.mlp_ratio = mlp_ratio
        self.pad_small_map = pad_small_map
        attn_cfgs = _per_stage(self.default_attn_cfg if attn_cfgs is None else attn_cfgs,
                               self.num_stages, 'attn_cfgs', owner)
        ffn_cfgs = _per_stage(dict(type='lsa.Mlp') if ffn_cfg is None else ffn_cfg,
                              self.num_stages, 'ffn_cfg', owner)
        self.attn_cfgs, self.ffn_cfgs = attn_cfgs, ffn_cfgs

        self.patch_embed = PatchEmbed(in_channels, dims0, patch_size, norm_eps=1e-5)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.stages = nn.ModuleList()
        first = 0
        for i, (dim, depth, nh) in enumerate(zip(dims, depths, heads)):
            blocks = [SwinBlock(dim, self.build_attn(attn_cfgs[i], dim, nh, j),
                                self.build_ffn(ffn_cfgs[i], dim, i), dpr[first + j],
                                ffn_norm=ffn_norm, ffn_residual=ffn_residual)
                      for j in range(depth)]
            first += depth
            down = PatchMerging(dim) if i < self.num_stages - 1 else None
            self.stages.append(SwinStage(blocks, down))
        self._init_outputs(out_indices, dims, [patch_size * 2 ** i for i in range(len(dims))])
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(dims[i]))
        self.apply(init_vit_weights)
        self._freeze_stages()

    def _resolve_arch(self, arch: str | dict) -> dict:
        return resolve_arch(type(self).__name__, arch, self.arch_zoo, self.essential_keys)

    #: Former name of :func:`lsa.models.layers.weight_init.init_vit_weights`.
    _init_linear_and_norm = staticmethod(init_vit_weights)

    def build_attn(self, cfg: dict, dim: int, num_heads: int, index: int) -> nn.Module:
        """Attention of block ``index`` of a stage from its config."""
        cfg = dict(cfg, dim=dim, num_heads=num_heads)
        if getattr(_cfg_class(cfg), 'alternate_shift', False):
            cfg['shifted'] = index % 2 == 1
            cfg.setdefault('pad_small_map', self.pad_small_map)
        attn = build_block(cfg)
        if getattr(attn, 'stride', 1) != 1:
            raise ValueError(f'{type(self).__name__}: blocks keep the map size (residual), so '
                             f'the attention needs stride 1; got stride={attn.stride} from {cfg}')
        return attn

    def build_ffn(self, cfg: dict, dim: int, stage: int) -> nn.Module:
        """Feed-forward of a block of ``stage`` from its config."""
        _cfg_class(cfg)
        return build_block(dict(cfg, in_features=dim,
                                 hidden_features=int(dim * self.mlp_ratio)))

    def stem_modules(self) -> list[nn.Module]:
        return [self.patch_embed]

    def stage_modules(self, i: int) -> list[nn.Module]:
        mods = [self.stages[i]]
        if i in self.out_indices:
            mods.append(getattr(self, f'norm{i}'))
        return mods

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, 3, H, W) -> one (B, C_i, H_i, W_i) map per ``out_indices`` entry."""
        x, hw = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                x = maybe_checkpoint(block, x, hw, enabled=self.with_cp)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(x)
                outs.append(out.transpose(1, 2).reshape(x.shape[0], -1, *hw))
            if stage.downsample is not None:
                x, hw = stage.downsample(x, hw)
        return tuple(outs)
