"""Small building blocks shared by every lsa model (one copy each)."""
from __future__ import annotations

import collections.abc
import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from lsa.registry import MODELS


def to_2tuple(x: Any) -> tuple:
    """``3 -> (3, 3)``; a 2-sequence is returned as a tuple."""
    if isinstance(x, collections.abc.Iterable) and not isinstance(x, str):
        x = tuple(x)
        if len(x) != 2:
            raise ValueError(f'expected an int or a pair, got {x}')
        return x
    return (x, x)


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False) -> Tensor:
    """Stochastic depth per sample (the residual branch is dropped for a whole sample)."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = x.new_empty(shape).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path`."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


def build_act(act: str | dict | Callable[[], nn.Module] | None) -> nn.Module:
    """``'gelu'``/``dict(type='GELU')``/a module class -> an activation module."""
    if act is None:
        return nn.Identity()
    if callable(act) and not isinstance(act, dict):
        return act()
    if isinstance(act, str):
        act = {'type': act}
    act = dict(act)
    name = act.pop('type')
    table = {'gelu': nn.GELU, 'relu': nn.ReLU, 'relu6': nn.ReLU6, 'hswish': nn.Hardswish,
             'silu': nn.SiLU, 'swish': nn.SiLU, 'sigmoid': nn.Sigmoid, 'identity': nn.Identity}
    key = name.lower().replace('_', '')
    if key not in table:
        raise ValueError(f'unknown activation {name!r}; expected one of {sorted(table)}')
    return table[key](**act)


@MODELS.register_module()
class Mlp(nn.Module):
    """The plain transformer feed-forward: Linear -> act -> drop -> Linear -> drop.

    Token I/O: (B, N, C) -> (B, N, out_features). This is the baseline that
    LocalViT's locality feed-forward replaces (``ffn_cfg=dict(type='Mlp')``).
    """

    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None, act: str | dict = 'gelu', drop: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = build_act(act)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, hw_shape: tuple[int, int] | None = None) -> Tensor:
        """``hw_shape`` is accepted (and ignored) so Mlp and LocalityFeedForward swap freely."""
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


def nlc_to_nchw(x: Tensor, hw_shape: tuple[int, int]) -> Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    H, W = hw_shape
    B, L, C = x.shape
    if L != H * W:
        raise ValueError(f'token count {L} does not match hw_shape {hw_shape}')
    return x.transpose(1, 2).reshape(B, C, H, W)


def check_tokens(owner: str, x: Tensor, hw_shape: tuple[int, int],
                 dim: int) -> tuple[int, int, int]:
    """Check that ``x`` is (B, H*W, ``dim``) tokens of an ``hw_shape`` map; return (B, L, C).

    Raises ``ValueError`` naming ``owner``, the expected and the given shape.
    """
    B, L, C = x.shape
    H, W = hw_shape
    if L != H * W or C != dim:
        raise ValueError(f'{owner}: expected (B, {H}*{W}, {dim}) tokens '
                         f'for hw_shape={tuple(hw_shape)}, got {tuple(x.shape)}')
    return B, L, C


def nchw_to_nlc(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """(B, H, W, C) -> (B * nW, ws, ws, C); H and W must be multiples of ``window_size``."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, C)


def window_reverse(windows: Tensor, window_size: int, H: int, W: int) -> Tensor:
    """(B * nW, ws, ws, C) -> (B, H, W, C); the inverse of :func:`window_partition`."""
    B = windows.shape[0] // ((H // window_size) * (W // window_size))
    x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, -1)


def maybe_checkpoint(module: nn.Module | Callable, *args: Any, enabled: bool) -> Any:
    """Run ``module(*args)`` under gradient checkpointing when ``enabled`` and grads flow.

    Exact: the outputs, the gradients and the BatchNorm running statistics are those of
    a plain call. (The backward pass recomputes the forward; the BatchNorms of
    ``module``, or of the module a bound method belongs to, then use the batch
    statistics again, and their running statistics are put back after that second
    update.)
    """
    if enabled and torch.is_grad_enabled() and any(
            isinstance(a, Tensor) and a.requires_grad for a in args):
        owner = module if isinstance(module, nn.Module) else getattr(module, '__self__', None)
        bns = [m for m in owner.modules() if isinstance(m, _BatchNorm)
               and m.training and m.track_running_stats] if isinstance(owner, nn.Module) else []
        if not bns:
            return torch.utils.checkpoint.checkpoint(module, *args, use_reentrant=False)
        return torch.utils.checkpoint.checkpoint(
            module, *args, use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), _no_running_stats(bns)))
    return module(*args)


def _running_stats(bn: _BatchNorm) -> list[Tensor]:
    return [t for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)
            if t is not None]


@contextlib.contextmanager
def _no_running_stats(bns: list[_BatchNorm]) -> Iterator[None]:
    """Undo the running-statistics updates the BatchNorms ``bns`` make inside the block."""
    saved = [[t.clone() for t in _running_stats(m)] for m in bns]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, ts in zip(bns, saved):
                for dst, src in zip(_running_stats(m), ts):
                    dst.copy_(src)


#: Former name of :func:`maybe_checkpoint` (kept as an alias).
checkpoint_seq = maybe_checkpoint
