"""Argument normalisation shared by the public op functions (errors name the values).

The ops' checks of shapes, dtypes, devices and geometry live in C++ (``csrc/include/lsa/
checks.h`` and each op's ``check_inputs``), raising ValueError/TypeError/RuntimeError in
Python; the wrappers only make sure the C++ op can be called and apply autocast.
"""
from __future__ import annotations

import torch
from torch import Tensor


def tensor_arg(op: str, name: str, t: object) -> Tensor:
    """``t`` must be a tensor (its dtype, rank and shape are checked by the C++ op)."""
    if not isinstance(t, Tensor):
        raise TypeError(f'{op}: {name} must be a torch.Tensor, got {type(t).__name__}')
    return t


def int_arg(op: str, name: str, v: object) -> int:
    """``v`` must be an int (its value is checked by the C++ op)."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f'{op}: {name} must be an int, got {v!r}')
    return v


def autocast_inputs(*tensors: Tensor) -> tuple:
    """PyTorch's autocast rule for lower-precision ops (as conv): under ``torch.autocast``,
    cast the float32/float16/bfloat16 tensors to the autocast dtype; float64 tensors and
    non-floating values are left alone. Outside autocast everything is returned unchanged."""
    t0 = tensors[0]
    if not isinstance(t0, Tensor) or t0.device.type not in ('cpu', 'cuda'):
        return tensors
    if not torch.is_autocast_enabled(t0.device.type):
        return tensors
    dtype = torch.get_autocast_dtype(t0.device.type)
    return tuple(t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point()
                 and t.dtype != torch.float64 else t for t in tensors)
