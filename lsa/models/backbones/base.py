"""The backbone contract every lsa backbone follows (cls, det and seg alike).

``forward(x)`` takes (B, 3, H, W) at any H, W the model supports and returns a
tuple with one NCHW map per entry of ``out_indices``; ``out_channels`` and
``out_strides`` give their channels and strides. Task differences are
constructor arguments only:

- ``out_indices``: which stages to return (negative indices count from the end).
- ``frozen_stages``: as in mmdet/mmpretrain: -1 freezes nothing, 0 the stem
  (patch embedding) alone, ``k`` the stem and the first ``k`` stages; frozen
  parts are kept in eval mode with ``requires_grad=False``.
- ``norm_eval``: keep every BatchNorm in eval mode during training.
- ``with_cp``: gradient checkpointing of the blocks: the same outputs, gradients and
  BatchNorm running statistics, less training memory, one more forward of each
  block in the backward pass (costs in docs/performance.md).
- ``compile``: ``True`` or a dict of :func:`torch.compile` options compiles the
  backbone's forward (and so its backward) in place (:meth:`torch.nn.Module.compile`,
  state-dict keys unchanged); outputs equal eager within fp32 rounding. The first
  call per input shape compiles (slow); speed-ups in docs/performance.md.
"""
from __future__ import annotations

from typing import Collection, Mapping, Sequence

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from lsa.models.layers.common import maybe_checkpoint, nlc_to_nchw
from lsa.models.layers.pos_embed import resize_pos_embed
from lsa.models.layers.vit_attention import MultiheadSelfAttention
from lsa.models.layers.vit_block import LocalViTBlock
from lsa.types import OutIndices


def resolve_arch(owner: str, arch: str | dict, zoo: Mapping[str, dict],
                 essential_keys: Collection[str], exact: bool = False) -> dict:
    """The ``arch`` argument of every lsa backbone -> a fresh dict of architecture numbers.

    A string is a (case-insensitive) key of ``zoo``; a dict is a custom arch that must hold
    every key of ``essential_keys`` (``exact=True``: those keys and no others, the mmpretrain
    rule). Raises ``ValueError`` naming the owner, the zoo and the missing keys.
    """
    keys = sorted(essential_keys)
    if isinstance(arch, str):
        if arch.lower() not in zoo:
            raise ValueError(f'{owner}: unknown arch {arch!r} ({owner}: arch must be one of '
                             f'{sorted(set(zoo))} or a dict with the keys {keys})')
        return dict(zoo[arch.lower()])
    if not isinstance(arch, Mapping):
        raise TypeError(f'{owner}: arch must be a str or a dict, got {type(arch).__name__}')
    if exact and set(arch) != set(keys):
        raise ValueError(f'{owner}: a custom arch must be a dict with exactly the keys {keys}, '
                         f'got {dict(arch)!r}')
    missing = [k for k in keys if k not in arch]
    if missing:
        raise ValueError(f'{owner}: a custom arch needs the keys {keys}; missing {missing} in '
                         f'{dict(arch)}')
    return dict(arch)


class BaseLSABackbone(BaseModule):
    """Shared plumbing: ``out_indices`` checks, freezing and ``norm_eval``.

    Subclasses set ``self.num_stages`` and channel/stride lists before calling
    :meth:`_init_outputs`, implement :meth:`stem_modules` and
    :meth:`stage_modules`, and call ``self._freeze_stages()`` at the end of
    ``__init__``.
    """

    num_stages: int

    def __init__(self, frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 init_cfg: dict | list | None = None, compile: bool | dict = False) -> None:
        super().__init__(init_cfg=init_cfg)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        if not isinstance(compile, bool | dict):
            raise TypeError(f'{type(self).__name__}: compile must be a bool or a dict of '
                            f'torch.compile options, got {compile!r}')
        if compile:  # lazy: the first forward compiles, after the subclass has built itself
            self.compile(**(compile if isinstance(compile, dict) else {}))

    def _init_outputs(self, out_indices: OutIndices, stage_channels: Sequence[int],
                      stage_strides: Sequence[int]) -> None:
        """Normalise ``out_indices`` and record ``out_channels`` / ``out_strides``."""
        n = len(stage_channels)
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, list | tuple):
            raise TypeError(f'{type(self).__name__}: out_indices must be an int or a sequence '
                            f'of ints, got {type(out_indices).__name__}')
        norm = []
        for i in out_indices:
            if not isinstance(i, int) or not -n <= i < n:
                raise ValueError(f'{type(self).__name__}: out_indices entries must be ints in '
                                 f'[{-n}, {n - 1}] ({n} stages), got {tuple(out_indices)}')
            norm.append(i % n)
        if not -1 <= self.frozen_stages <= n:
            raise ValueError(f'{type(self).__name__}: frozen_stages must be in [-1, {n}], '
                             f'got {self.frozen_stages}')
        self.out_indices = tuple(norm)
        self.stage_channels = tuple(stage_channels)
        self.stage_strides = tuple(stage_strides)

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of each returned map, in ``out_indices`` order."""
        return tuple(self.stage_channels[i] for i in self.out_indices)

    @property
    def out_strides(self) -> tuple[int, ...]:
        """Stride (input pixels per output pixel) of each returned map."""
        return tuple(self.stage_strides[i] for i in self.out_indices)

    def stem_modules(self) -> list[nn.Module]:
        """Modules frozen by any ``frozen_stages >= 0`` (patch embed, stem conv...)."""
        return []

    def stage_modules(self, i: int) -> list[nn.Module]:
        """Modules that make up stage ``i`` (frozen by ``frozen_stages > i``)."""
        raise NotImplementedError

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        mods = list(self.stem_modules())
        for i in range(self.frozen_stages):
            mods += list(self.stage_modules(i))
        return mods

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> 'BaseLSABackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


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


def check_out_type(owner: str, out_type: str) -> str:
    """The ``out_type`` of the LocalViT hosts: ``'cls_token'`` or ``'featmap'``."""
    if out_type not in ('cls_token', 'featmap'):
        raise ValueError(f"{owner}: out_type must be 'cls_token' or 'featmap', "
                         f'got {out_type!r}')
    return out_type


class ClassTokenEncoderMixin:
    """The DeiT-style encoder shared by LocalViT and LocalViT-T2T.

    Hosts call :meth:`_resolve_host` first, set ``cls_token``, ``pos_embed`` and
    ``patch_resolution``, then :meth:`_build_encoder` adds ``pos_drop``, ``blocks`` (one per
    stage) and ``norm``.
    """

    def _resolve_host(self, arch: str | dict, out_type: str, final_norm: bool) -> int:
        """Resolve ``arch`` on the class's ``arch_zoo`` into ``arch_settings`` (embed_dims,
        depth, num_heads, mlp_ratio, se_channels), check ``out_type``; set ``embed_dims``,
        ``out_type`` and ``final_norm``; return ``embed_dims``."""
        owner = type(self).__name__
        self.arch_settings = resolve_arch(owner, arch, self.arch_zoo, self.essential_keys)
        self.out_type = check_out_type(owner, out_type)
        self.embed_dims, self.final_norm = self.arch_settings['embed_dims'], final_norm
        return self.embed_dims

    def _build_encoder(self, ffn_cfg: dict, stride: int, out_indices: OutIndices,
                       qkv_bias: bool, drop_rate: float, attn_drop_rate: float,
                       drop_path_rate: float, norm_eps: float) -> None:
        """``depth`` DeiT blocks of ``arch_settings``, stochastic depth linear over blocks,
        the final norm (if ``final_norm``) and the outputs (every block a stage of
        ``stride``)."""
        arch = self.arch_settings
        C, depth = arch['embed_dims'], arch['depth']
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
        self.blocks = nn.ModuleList(
            LocalViTBlock(C, MultiheadSelfAttention(C, arch['num_heads'], qkv_bias,
                                                    attn_drop_rate, drop_rate),
                          arch['mlp_ratio'], ffn_cfg, arch['se_channels'], drop_rate, dpr[i],
                          norm_eps)
            for i in range(depth))
        self.norm = nn.LayerNorm(C, eps=norm_eps) if self.final_norm else None
        self.num_stages = depth
        self._init_outputs(out_indices, [C] * depth, [stride] * depth)

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
            x = maybe_checkpoint(blk, x, hw, enabled=self.with_cp)
            if i == len(self.blocks) - 1 and self.norm is not None:
                x = self.norm(x)
            if i in self.out_indices:
                outs.append(x[:, 0] if self.out_type == 'cls_token'
                            else nlc_to_nchw(x[:, 1:], hw))
        return tuple(outs)
