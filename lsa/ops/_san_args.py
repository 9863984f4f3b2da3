"""Argument handling shared by the SAN ops (aggregation, subtraction, subtraction2).

One place for: int-or-pair normalisation, the pad-mode names, the output-size
formula and the geometry checks, so the public functions, the references and the
fake (meta) implementations agree.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple, Tuple

import torch
from torch import Tensor

from lsa.types import IntOr2Tuple

from ._ext import has_cuda_kernels, require_ext

PAD_MODES = {'zeros': 0, 'reflect': 1}


class SanGeometry(NamedTuple):
    """Normalised SAN window geometry; every field is an ``(h, w)`` pair."""

    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]
    pad_mode: int  # 0 = zeros, 1 = reflect (ReflectionPad2d semantics)

    def as_op_args(self) -> tuple:
        """Positional arguments of the ``torch.ops.lsa`` SAN ops after the tensors."""
        return (list(self.kernel_size), list(self.stride), list(self.padding),
                list(self.dilation), self.pad_mode)


def _pair(op: str, name: str, v: object, minimum: int) -> Tuple[int, int]:
    vals = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(vals) != 2 or any(isinstance(e, bool) or not isinstance(e, int) or e < minimum
                             for e in vals):
        raise ValueError(f'{op}: {name} must be an int >= {minimum} or a pair of them, got {v!r}')
    return vals  # type: ignore[return-value]


def san_geometry(op: str, kernel_size: IntOr2Tuple, stride: IntOr2Tuple, padding: IntOr2Tuple,
                 dilation: IntOr2Tuple, pad_mode: str) -> SanGeometry:
    """Validate and normalise the window arguments of a SAN op."""
    if pad_mode not in PAD_MODES:
        raise ValueError(f'{op}: pad_mode must be one of {sorted(PAD_MODES)}, got {pad_mode!r}')
    return SanGeometry(_pair(op, 'kernel_size', kernel_size, 1), _pair(op, 'stride', stride, 1),
                       _pair(op, 'padding', padding, 0), _pair(op, 'dilation', dilation, 1),
                       PAD_MODES[pad_mode])


def out_size(length, k: int, s: int, p: int, d: int):
    """Output length ``(L + 2p - (d(k-1)+1)) // s + 1`` (works on SymInts too)."""
    return (length + 2 * p - (d * (k - 1) + 1)) // s + 1


def check_geometry(op: str, hw: Tuple[int, int], geom: SanGeometry) -> Tuple[int, int]:
    """Check the window fits the ``(H, W)`` input; return ``(Ho, Wo)``."""
    (H, W), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = hw, *geom[:4]
    Ho, Wo = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    if Ho < 1 or Wo < 1:
        raise ValueError(f'{op}: the window (kernel_size={geom.kernel_size}, '
                         f'dilation={geom.dilation}, padding={geom.padding}) does not fit the '
                         f'input of size {(H, W)} (output would be {(Ho, Wo)})')
    if geom.pad_mode == 1 and (ph >= H or pw >= W):
        raise ValueError(f"{op}: pad_mode='reflect' needs padding < input size, got "
                         f'padding={geom.padding} for an input of size {(H, W)}')
    return Ho, Wo


_warned: set = set()


def use_kernels(op: str, t: Tensor) -> bool:
    """True if ``torch.ops.lsa`` should run ``op`` on ``t``; False means the reference.

    Without ``lsa._C`` this raises the one build error (:func:`require_ext`). A stale
    build without the op, or a CUDA tensor with a CPU-only build, falls back to the
    reference with a one-time warning.
    """
    require_ext(op)
    if not hasattr(torch.ops.lsa, f'{op}_forward'):
        _warn_once(op, f'lsa.ops.{op}: lsa._C was built without this op (a stale build? rebuild '
                       'with `pip install -e . --no-build-isolation`); using the slow '
                       'pure-PyTorch reference')
        return False
    if t.is_cuda and not has_cuda_kernels():
        _warn_once(op, f'lsa.ops.{op}: lsa._C has no CUDA kernels (built without CUDA); '
                       'using the slow pure-PyTorch reference')
        return False
    return True


def _warn_once(op: str, msg: str) -> None:
    if op not in _warned:
        _warned.add(op)
        warnings.warn(msg, stacklevel=4)
