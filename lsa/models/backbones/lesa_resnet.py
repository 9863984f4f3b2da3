"""LESA-ResNet: ResNet-50 / WRN-50-2 with LESA blocks in place of the 3x3 convs of c4-c5.

Yang et al., "Locally Enhanced Self-Attention: Combining Self-Attention and
Convolution as Local and Context Terms", 2021 (arXiv:2107.05637). Official code:
Chenglin-Yang/LESA_classification and Chenglin-Yang/LESA_detection.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn
from torch import Tensor

from lsa.models.backbones.base import BaseLSABackbone, resolve_arch
from lsa.models.layers.common import maybe_checkpoint
from lsa.models.layers.lesa_attention import LESAAttention, build_dcn_conv
from lsa.registry import MODELS, build_block
from lsa.types import OutIndices


class LESABottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3) whose 3x3 conv may be an attention block.

    conv1 1x1 -> bn1 -> ReLU -> conv2 (3x3 conv + bn2, a DCN + bn2, or ``attn``, which
    has its own norms) -> ReLU -> conv3 1x1 -> bn3 -> + shortcut -> ReLU.
    NCHW: (B, in_channels, H, W) -> (B, 4 * planes, H / stride, W / stride).
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, width: int, stride: int = 1,
                 attn_cfg: dict | None = None, dcn: dict | None = None,
                 with_cp: bool = False) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.with_cp = with_cp
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        if attn_cfg is not None:
            self.conv2 = build_block(dict(attn_cfg, in_channels=width, out_channels=width,
                                           stride=stride, dcn=dcn))
            self.bn2 = None
        else:
            self.conv2 = (build_dcn_conv(dcn, width, width, stride=stride) if dcn is not None
                          else nn.Conv2d(width, width, 3, stride, 1, bias=False))
            self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def _residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        if self.bn2 is not None:
            out = self.bn2(out)
        out = self.bn3(self.conv3(self.relu(out)))
        return out + (x if self.downsample is None else self.downsample(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(maybe_checkpoint(self._residual, x, enabled=self.with_cp))


@MODELS.register_module()
class LESAResNet(BaseLSABackbone):
    """LESA-ResNet50 / LESA-WRN50 backbone (classification and detection forms).

    The released models: ResNet-50 (v1.5) or WRN-50-2 whose stages c4 and c5 use
    :class:`~lsa.models.layers.LESAAttention` in place of the 3x3 conv of every
    bottleneck except the first of c4 (8 LESA blocks; groups 8).

    ``form`` picks the released setting, the other arguments override it:

    ================  ==========================  ==============================
    form              ``'cls'`` (ImageNet)        ``'det'`` (COCO)
    ================  ==========================  ==============================
    strides           (1, 2, 2, 1): out stride 16 (1, 2, 2, 2): out stride 32
    position enc.     1-D, 224x224 input only     2-D query-only, any H x W
    stage_spatial_res (56, 28, 14, 14)            (256, 128, 64, 32) (1024 input)
    attn with_cp      False                       True (local/context terms)
    ================  ==========================  ==============================

    ``stage_spatial_res[i]`` is the design map size of stage ``i``'s output. A
    LESA block with stride ``s`` attends at full resolution before pooling, so its
    table size is ``s * stage_spatial_res[i]``. In the detection form it only sets
    the size of the position tables (offsets beyond them are clipped, see
    :class:`LESAAttention`), so the released value works for any input; in the
    classification form the input must be ``16 * stage_spatial_res[2]`` square.

    Args:
        arch: ``'r50'``, ``'wrn50'`` or a dict with the keys ``base_channels`` (stem
            and c2 planes), ``stage_blocks`` (4 ints) and ``widen_factor`` (bottleneck
            width = planes * widen_factor), e.g. ``dict(base_channels=16,
            stage_blocks=(1, 1, 2, 2), widen_factor=1)`` for a tiny test model.
        form: ``'cls'`` or ``'det'`` (table above).
        in_channels: Image channels.
        strides: Stride of the first block of each stage (default from ``form``).
        stage_spatial_res: See above (default from ``form``).
        attn_cfg: The attention block replacing the 3x3 conv, a registry dict merged
            over the form's defaults ``dict(type='lsa.LESAAttention', groups=8,
            pe_type=..., with_cp=...)``. The backbone adds ``in_channels``,
            ``out_channels``, ``stride``, ``fmap_size`` and ``dcn``; another
            registered block accepting these can be swapped in.
        stage_with_attn: Per stage, whether its blocks use ``attn_cfg`` (else plain
            bottlenecks: all False gives the ResNet-50 / WRN-50-2 baseline).
        stage_with_first_conv: Per stage, whether its first block keeps the 3x3 conv
            even when the stage uses attention (released: c2-c4 True, c5 False).
        dcn: mmdet-style deformable conv dict, e.g. ``dict(type='DCN',
            deform_groups=1, fallback_on_stride=False)``; mmcv is imported only then.
        stage_with_dcn: Per stage, whether its 3x3 convs (and LESA local convs) are
            deformable (released detection: ``(False, True, True, True)``).
        out_indices: Stages to return (strides 4, 8, 16, 16/32).
        frozen_stages: -1 none; 0 the stem; ``k`` the stem and the first ``k``
            stages (as mmdet's ResNet: 1 = stem + c2).
        norm_eval: Keep all BNs (the LESA ones included) in eval mode when training.
        with_cp: Gradient-checkpoint every bottleneck (same outputs).
        compile: :func:`torch.compile` the backbone (see :mod:`lsa.models.backbones.base`).
        zero_init_residual: Zero the last BN of each bottleneck at construction.
        init_cfg: mmengine init config (e.g. ``Pretrained``).

    Example:
        >>> net = LESAResNet('r50', form='det', out_indices=(0, 1, 2, 3)).eval()
        >>> [o.shape[1:] for o in net(torch.rand(1, 3, 96, 160))]
        [torch.Size([256, 24, 40]), ..., torch.Size([2048, 3, 5])]
    """

    arch_zoo = {
        'r50': dict(base_channels=64, stage_blocks=(3, 4, 6, 3), widen_factor=1),
        'wrn50': dict(base_channels=64, stage_blocks=(3, 4, 6, 3), widen_factor=2),
    }
    form_zoo = {
        'cls': dict(strides=(1, 2, 2, 1), stage_spatial_res=(56, 28, 14, 14),
                    attn=dict(pe_type='classification', with_cp=False)),
        'det': dict(strides=(1, 2, 2, 2), stage_spatial_res=(256, 128, 64, 32),
                    attn=dict(pe_type='detection_qr', with_cp=True)),
    }
    num_stages = 4

    def __init__(self, arch: str | dict = 'r50', form: str = 'cls', in_channels: int = 3,
                 strides: Sequence[int] | None = None,
                 stage_spatial_res: Sequence[int] | None = None, attn_cfg: dict | None = None,
                 stage_with_attn: Sequence[bool] = (False, False, True, True),
                 stage_with_first_conv: Sequence[bool] = (True, True, True, False),
                 dcn: dict | None = None,
                 stage_with_dcn: Sequence[bool] = (False, False, False, False),
                 out_indices: OutIndices = (3,), frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False, compile: bool | dict = False,
                 zero_init_residual: bool = False, init_cfg: dict | list | None = None) -> None:
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=init_cfg, compile=compile)
        name = type(self).__name__
        arch = resolve_arch(name, arch, self.arch_zoo,
                            {'base_channels', 'stage_blocks', 'widen_factor'}, exact=True)
        if form not in self.form_zoo:
            raise ValueError(f'{name}: form must be one of {sorted(self.form_zoo)}, got {form!r}')
        defaults = self.form_zoo[form]
        strides = tuple(strides or defaults['strides'])
        res = tuple(stage_spatial_res or defaults['stage_spatial_res'])
        for key, val in (('strides', strides), ('stage_spatial_res', res),
                         ('stage_blocks', tuple(arch['stage_blocks'])),
                         ('stage_with_attn', tuple(stage_with_attn)),
                         ('stage_with_first_conv', tuple(stage_with_first_conv)),
                         ('stage_with_dcn', tuple(stage_with_dcn))):
            if len(val) != self.num_stages:
                raise ValueError(f'{name}: {key} needs {self.num_stages} entries, got {val}')
        self.arch, self.form = dict(arch), form
        attn = dict(type='lsa.LESAAttention', groups=8, **defaults['attn'])
        attn.update(attn_cfg or {})
        self.attn_cfg = attn

        base, widen = arch['base_channels'], arch['widen_factor']
        self.conv1 = nn.Conv2d(in_channels, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels, stage_strides, total = [], [], 4
        c_in = base
        for i, n_blocks in enumerate(arch['stage_blocks']):
            planes = base * 2 ** i
            width = planes * widen
            blocks = []
            for b in range(n_blocks):
                stride = strides[i] if b == 0 else 1
                use_attn = stage_with_attn[i] and not (b == 0 and stage_with_first_conv[i])
                cfg = (dict(attn, fmap_size=res[i] * stride) if use_attn else None)
                blocks.append(LESABottleneck(
                    c_in, planes, width, stride=stride, attn_cfg=cfg,
                    dcn=dcn if stage_with_dcn[i] else None, with_cp=with_cp))
                c_in = planes * LESABottleneck.expansion
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
            total *= strides[i]
            channels.append(c_in)
            stage_strides.append(total)
        self._init_outputs(out_indices, channels, stage_strides)
        self._init_released(zero_init_residual)
        self._freeze_stages()

    def _init_released(self, zero_init_residual: bool) -> None:
        """kaiming fan_out for convs, BN 1/0, then the LESA projections/tables (as released)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if hasattr(m, 'conv_offset'):  # deformable conv: start as a plain conv
                nn.init.zeros_(m.conv_offset.weight)
                nn.init.zeros_(m.conv_offset.bias)
            if isinstance(m, LESAAttention):
                m.reset_parameters()
            if zero_init_residual and isinstance(m, LESABottleneck):
                nn.init.zeros_(m.bn3.weight)

    def stem_modules(self) -> list[nn.Module]:
        return [self.conv1, self.bn1]

    def stage_modules(self, i: int) -> list[nn.Module]:
        return [getattr(self, f'layer{i + 1}')]

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, in_channels, H, W) -> one (B, C_i, H / s_i, W / s_i) map per ``out_indices``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(self.num_stages):
            x = getattr(self, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


__all__ = ['LESABottleneck', 'LESAResNet']
