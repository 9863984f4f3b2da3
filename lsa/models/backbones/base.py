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

from typing import Sequence

import torch.nn as nn
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from lsa.types import OutIndices


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
