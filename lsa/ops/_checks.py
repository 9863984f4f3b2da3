"""Input validation shared by the public op functions (errors name the values)."""
from __future__ import annotations

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_tensor(op: str, name: str, t: object, ndim: int) -> Tensor:
    """``t`` must be a floating tensor with ``ndim`` dimensions."""
    if not isinstance(t, Tensor):
        raise TypeError(f'{op}: {name} must be a torch.Tensor, got {type(t).__name__}')
    if t.dim() != ndim:
        raise ValueError(f'{op}: {name} must be {ndim}-D, got shape {tuple(t.shape)}')
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f'{op}: {name} must be a floating tensor '
                        f'(float32/float64/float16/bfloat16), got {t.dtype}')
    return t


def check_same(op: str, **tensors: Tensor) -> None:
    """All tensors on one device and of one dtype."""
    items = list(tensors.items())
    n0, t0 = items[0]
    for n, t in items[1:]:
        if t.device != t0.device:
            raise RuntimeError(f'{op}: all inputs must be on one device, got {n0} on {t0.device} '
                               f'and {n} on {t.device}')
        if t.dtype != t0.dtype:
            raise TypeError(f'{op}: all inputs must have one dtype, got {n0} {t0.dtype} and '
                            f'{n} {t.dtype}')


def check_device_dtype(op: str, t: Tensor, cpu_dtypes: tuple = FLOAT_DTYPES) -> None:
    """Supported device types and, on CPU, dtypes."""
    if t.device.type not in ('cpu', 'cuda', 'meta'):
        raise RuntimeError(f'{op}: unsupported device {t.device} (lsa ops run on cpu and cuda)')
    if t.device.type == 'cpu' and t.dtype not in cpu_dtypes:
        raise TypeError(f'{op}: dtype {t.dtype} is not supported on CPU; '
                        f'use one of {[str(d) for d in cpu_dtypes]}')


def positive_int(op: str, name: str, v: object, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f'{op}: {name} must be an int >= {minimum}, got {v!r}')
    return v


def autocast_inputs(*tensors: Tensor) -> tuple:
    """Under ``torch.autocast``, cast floating tensors to the autocast dtype (as conv does):
    AMP hands an op fp16/bf16 activations next to float32 ones (e.g. after a softmax).
    Outside autocast the tensors are returned unchanged."""
    t0 = tensors[0]
    if not isinstance(t0, Tensor) or t0.device.type not in ('cpu', 'cuda'):
        return tensors
    if not torch.is_autocast_enabled(t0.device.type):
        return tensors
    dtype = torch.get_autocast_dtype(t0.device.type)
    return tuple(t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t
                 for t in tensors)
