"""SAN backbones (Zhao et al., "Exploring Self-attention for Image Recognition", CVPR 2020)."""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn
from torch import Tensor

from lsa.models.layers.common import maybe_checkpoint
from lsa.models.layers.fast_paths import batch_norm_, conv1x1, max_pool_2x2
from lsa.models.layers.san_attention import SA_TYPES
from lsa.models.layers.stem_pool import conv_bn_relu_max_pool_2x2
from lsa.ops import reflect_min_size
from lsa.registry import MODELS, build_block
from lsa.types import OutIndices

from .base import BaseLSABackbone, resolve_arch


def split_arch_name(arch: str) -> tuple[str, str | None]:
    """``'san10-patchwise'`` -> ``('san10', 'patchwise')``; ``'san19'`` -> ``('san19', None)``."""
    name, sa_type = arch.lower().replace('_', '-'), None
    for t in SA_TYPES:
        if name.endswith('-' + t):
            name, sa_type = name[:-len(t) - 1], t
    if name not in SAN.arch_zoo:
        raise ValueError(f'SAN: unknown arch {arch!r}; expected one of {sorted(SAN.arch_zoo)} '
                         f'(optionally with -pairwise/-patchwise) or a dict with keys '
                         f'{SAN.essential_keys}')
    return name, sa_type


class SANStem(nn.Sequential):
    """``act(norm(conv(x)))`` at full resolution (children ``conv``, ``norm``, ``act``);
    in inference without a second full-resolution buffer (see
    :mod:`lsa.models.layers.fast_paths`)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.act(batch_norm_(conv1x1(x, self.conv), self.norm))


class SANStage(nn.Module):
    """One SAN stage: 2x2 max-pool, 1x1 transition, blocks, BN + ReLU.

    Shapes: (N, in_channels, H, W) -> (N, channels, H // 2, W // 2).
    """

    def __init__(self, in_channels: int, channels: int, num_blocks: int, kernel_size: int,
                 attn_cfg: dict) -> None:
        super().__init__()
        self.transition = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.blocks = nn.Sequential(*[
            build_block(dict(type='lsa.SANBottleneck', channels=channels,
                              kernel_size=kernel_size, attn_cfg=attn_cfg))
            for _ in range(num_blocks)])
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, with_cp: bool = False, pooled: bool = False) -> Tensor:
        """``pooled=True``: ``x`` is already max-pooled (the caller pooled it, so that it
        could release the larger map before the stage runs)."""
        if not pooled:
            x = max_pool_2x2(x)
        x = conv1x1(x, self.transition)
        for block in self.blocks:
            x = maybe_checkpoint(block, x, enabled=with_cp)
        return self.act(batch_norm_(x, self.norm))


@MODELS.register_module()
class SAN(BaseLSABackbone):
    """SAN: a ResNet-style network whose spatial convolutions are SAN self-attention.

    Paper: Zhao, Jia, Koltun, "Exploring Self-attention for Image Recognition", CVPR 2020
    (official code: https://github.com/hszhao/SAN).

    Structure (every conv is 1x1): stem conv 3 -> widths[0] + BN + ReLU at full
    resolution, then five stages, each ``maxpool 2x2 -> 1x1 transition -> blocks ->
    BN -> ReLU``; stage i has stride ``2 ** (i + 1)`` (2, 4, 8, 16, 32) and
    ``widths[i]`` channels. Blocks are :class:`~lsa.models.layers.SANBottleneck` with
    :class:`~lsa.models.layers.SANAttention` (footprint ``kernels[i]``, reflect
    padding). For detection/segmentation use ``out_indices=(1, 2, 3, 4)`` (strides
    4, 8, 16, 32); for classification ``out_indices=(4,)`` + global pooling + linear.

    Args:
        arch: ``'san10'``, ``'san15'``, ``'san19'`` (optionally suffixed ``-pairwise`` /
            ``-patchwise``), or a dict with the essential keys ``widths``, ``layers``,
            ``kernels`` (one entry per stage).
        sa_type: ``'pairwise'`` or ``'patchwise'``; shorthand for
            ``attn_cfg=dict(type='lsa.SANAttention', sa_type=...)``. Default: the
            suffix of ``arch`` if any, else ``'pairwise'``.
        attn_cfg: The attention config used by every block (the block fills in
            ``in_channels``, ``out_channels`` and ``kernel_size``). Swap the attention
            by giving another registered type here.
        out_indices: Stages to return. Default ``(4,)``, the last stage.
        frozen_stages: -1 none; 0 the stem; ``k`` the stem and stages ``0..k-1``.
        norm_eval: Keep BatchNorm layers in eval mode while training.
        with_cp: Gradient checkpointing per block (same outputs, less memory).
        compile: :func:`torch.compile` the backbone (see :mod:`lsa.models.backbones.base`).
        fast_stem: In CPU training, run the stem and the first pool without
            full-resolution maps (:func:`~lsa.models.layers.stem_pool.
            conv_bn_relu_max_pool_2x2`; same values). It has no double backward: set False
            for gradients of gradients (with ``attn_cfg=dict(fused=False)`` as well).
        init_cfg: mmengine init config (e.g. ``dict(type='Pretrained', ...)``).

    Example:
        >>> model = SAN(arch='san10', sa_type='patchwise', out_indices=(1, 2, 3, 4))
        >>> [o.shape[1:] for o in model(torch.rand(1, 3, 224, 224))]
        [(256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
    """

    arch_zoo = {
        'san10': {'widths': (64, 256, 512, 1024, 2048), 'layers': (2, 1, 2, 4, 1),
                  'kernels': (3, 7, 7, 7, 7)},
        'san15': {'widths': (64, 256, 512, 1024, 2048), 'layers': (3, 2, 3, 5, 2),
                  'kernels': (3, 7, 7, 7, 7)},
        'san19': {'widths': (64, 256, 512, 1024, 2048), 'layers': (3, 3, 4, 6, 3),
                  'kernels': (3, 7, 7, 7, 7)},
    }
    essential_keys = ('widths', 'layers', 'kernels')

    def __init__(self, arch: str | dict = 'san10', sa_type: str | None = None,
                 attn_cfg: dict | None = None, out_indices: OutIndices = (4,),
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 compile: bool | dict = False, fast_stem: bool = True,
                 init_cfg: dict | list | None = None) -> None:
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=init_cfg, compile=compile)
        self.fast_stem = fast_stem
        arch, arch_sa_type = self._parse_arch(arch)
        sa_type = sa_type or arch_sa_type or 'pairwise'
        if sa_type not in SA_TYPES:
            raise ValueError(f'SAN: sa_type must be one of {SA_TYPES}, got {sa_type!r}')
        attn_cfg = dict(attn_cfg or {})
        attn_cfg.setdefault('type', 'lsa.SANAttention')
        if attn_cfg.get('type') in ('SANAttention', 'lsa.SANAttention'):
            attn_cfg.setdefault('sa_type', sa_type)
        self.sa_type, self.attn_cfg = sa_type, attn_cfg
        self.widths = tuple(arch['widths'])
        self.layers = tuple(arch['layers'])
        self.kernels = tuple(arch['kernels'])
        self.num_stages = len(self.widths)

        self.stem = SANStem(OrderedDict(
            conv=nn.Conv2d(3, self.widths[0], 1, bias=False), norm=nn.BatchNorm2d(self.widths[0]),
            act=nn.ReLU(inplace=True)))
        in_channels = self.widths[0]
        self.stages = nn.ModuleList()
        for width, depth, kernel in zip(self.widths, self.layers, self.kernels):
            self.stages.append(SANStage(in_channels, width, depth, kernel, self.attn_cfg))
            in_channels = width
        self._init_outputs(out_indices, self.widths,
                           [2 ** (i + 1) for i in range(self.num_stages)])
        self._freeze_stages()

    def _parse_arch(self, arch: str | dict) -> tuple[dict, str | None]:
        if isinstance(arch, str):
            name, sa_type = split_arch_name(arch)
            return self.arch_zoo[name], sa_type
        arch = resolve_arch('SAN', arch, self.arch_zoo, self.essential_keys)
        lens = {k: len(arch[k]) for k in self.essential_keys}
        if len(set(lens.values())) != 1:
            raise ValueError(f'SAN: arch entries must have one value per stage, got lengths {lens}')
        return arch, None

    @property
    def min_input_size(self) -> int:
        """Smallest input height/width the reflect padding of the stages that run can serve.

        Stage i sees ``H // 2**(i+1)`` rows and pads ``kernels[i] // 2`` by reflection,
        which needs at least ``kernels[i] // 2 + 1`` rows (128 px for the published
        models).
        """
        last = max(self.out_indices)
        return max(2 ** (i + 1) * reflect_min_size(k // 2)
                   for i, k in enumerate(self.kernels[:last + 1]))

    def stem_modules(self) -> list[nn.Module]:
        return [self.stem]

    def stage_modules(self, i: int) -> list[nn.Module]:
        return [self.stages[i]]

    def _pooled_stem(self, x: Tensor) -> Tensor:
        """``max_pool_2x2(self.stem(x))``, stage 0's pool folded in: in CPU training
        without full-resolution maps (:func:`~lsa.models.layers.stem_pool.
        conv_bn_relu_max_pool_2x2`), in inference as the stem's fast paths."""
        if self.fast_stem and type(self.stem) is SANStem:
            return conv_bn_relu_max_pool_2x2(x, self.stem)
        return max_pool_2x2(self.stem(x))

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(N, 3, H, W) -> one (N, widths[i], H // 2**(i+1), W // 2**(i+1)) map per out index."""
        H, W = x.shape[-2:]
        if min(H, W) < self.min_input_size:
            raise ValueError(
                f'SAN: input {H}x{W} is too small: the reflect padding of the stages '
                f'(kernels {self.kernels}) needs height and width >= {self.min_input_size}')
        x = self._pooled_stem(x)
        feats = {}
        for i in range(max(self.out_indices) + 1):  # later stages are not needed
            # pool first, so that the previous map is freed before the stage runs unless
            # it is an output
            if i > 0:
                x = max_pool_2x2(x)
            x = self.stages[i](x, with_cp=self.with_cp, pooled=True)
            if i in self.out_indices:
                feats[i] = x
        return tuple(feats[i] for i in self.out_indices)
