"""Argument handling shared by the SAN ops (aggregation, subtraction, subtraction2).

One place for: int-or-pair normalisation, the pad-mode names, the output-size
formula and the reflect-padding fit rule, so the public functions, the references and the
fake (meta) implementations agree. The checks of the values are the C++ ops' own.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

from lsa.types import IntOr2Tuple

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


def _pair(op: str, name: str, v: object) -> Tuple[int, int]:
    vals = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(vals) != 2 or any(isinstance(e, bool) or not isinstance(e, int) for e in vals):
        raise TypeError(f'{op}: {name} must be an int or a pair of ints, got {v!r}')
    return vals  # type: ignore[return-value]


def san_geometry(op: str, kernel_size: IntOr2Tuple, stride: IntOr2Tuple, padding: IntOr2Tuple,
                 dilation: IntOr2Tuple, pad_mode: str) -> SanGeometry:
    """Normalise the window arguments of a SAN op (ints to pairs, pad-mode names to codes).

    Their values are checked where the kernels are, by the C++ op (``csrc/include/lsa/san.h``).
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f'{op}: pad_mode must be one of {sorted(PAD_MODES)}, got {pad_mode!r}')
    return SanGeometry(_pair(op, 'kernel_size', kernel_size), _pair(op, 'stride', stride),
                       _pair(op, 'padding', padding), _pair(op, 'dilation', dilation),
                       PAD_MODES[pad_mode])


def out_size(length, k: int, s: int, p: int, d: int):
    """Output length ``(L + 2p - (d(k-1)+1)) // s + 1`` (works on SymInts too)."""
    return (length + 2 * p - (d * (k - 1) + 1)) // s + 1


def reflect_min_size(padding: int) -> int:
    """Smallest input length that reflect padding by ``padding`` can serve (it mirrors once,
    as ``ReflectionPad2d``: ``padding < length``). The ops check it in C++ (``san.h``); the
    SAN modules use this to fail early with their own message."""
    return padding + 1
