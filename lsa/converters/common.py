"""Shared plumbing for the checkpoint converters: unwrap, prefix handling, strict checks, CLI."""
from __future__ import annotations

import argparse
import os
import os.path as osp
from collections import OrderedDict
from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor

StateDict = 'OrderedDict[str, Tensor]'


class CheckpointMismatchError(ValueError):
    """A converted checkpoint does not fit the lsa model; lists what differs."""


def load_file(path: str) -> dict:
    """Load an official checkpoint file (a trusted pickle: ``weights_only=False``)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist')
    obj = torch.load(path, map_location='cpu', weights_only=False)
    if not isinstance(obj, Mapping):
        raise ValueError(f'{path!r} holds a {type(obj).__name__}, not a checkpoint dict')
    return dict(obj)


def unwrap(ckpt: Mapping, keys: Iterable[str]) -> tuple[dict, str | None]:
    """Return ``(state_dict, key)`` for the first of ``keys`` present in ``ckpt``.

    A mapping whose values are all tensors is taken as a bare state dict
    (``key`` is then None).
    """
    for k in keys:
        if k in ckpt and isinstance(ckpt[k], Mapping):
            return dict(ckpt[k]), k
    if ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        return dict(ckpt), None
    raise ValueError(f'no state dict found: expected one of the keys {list(keys)} '
                     f'(got top-level keys {sorted(ckpt)[:10]})')


def strip_prefix(sd: Mapping[str, Tensor], prefix: str) -> dict:
    """Drop ``prefix`` from every key that has it (others are kept unchanged)."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def add_prefix(sd: Mapping[str, Tensor], prefix: str) -> 'OrderedDict[str, Tensor]':
    return OrderedDict((prefix + k, v) for k, v in sd.items())


def check_against(converted: Mapping[str, Tensor], reference: Mapping[str, Tensor],
                  what: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless keys and shapes match exactly.

    ``reference`` is usually ``model.state_dict()`` of the lsa model the
    checkpoint is meant for.
    """
    missing = sorted(set(reference) - set(converted))
    unexpected = sorted(set(converted) - set(reference))
    shapes = sorted(f'{k}: checkpoint {tuple(converted[k].shape)} vs model '
                    f'{tuple(reference[k].shape)}' for k in set(converted) & set(reference)
                    if tuple(converted[k].shape) != tuple(reference[k].shape))
    if missing or unexpected or shapes:
        def fmt(name, items):
            if not items:
                return ''
            more = f' ... (+{len(items) - 20} more)' if len(items) > 20 else ''
            return f'\n  {name} ({len(items)}): ' + ', '.join(items[:20]) + more
        raise CheckpointMismatchError(
            f'{what}: the converted checkpoint does not match the lsa model'
            + fmt('missing keys', missing) + fmt('unexpected keys', unexpected)
            + fmt('shape mismatches', shapes))


def save_mmengine_checkpoint(state_dict: Mapping[str, Tensor], path: str, meta: dict) -> None:
    """Write ``{'meta': ..., 'state_dict': ...}`` as mmengine's ``load_checkpoint`` expects."""
    d = osp.dirname(osp.abspath(path))
    os.makedirs(d, exist_ok=True)
    torch.save({'meta': dict(meta), 'state_dict': OrderedDict(state_dict)}, path)


def run_cli(name: str, description: str,
            convert: Callable[[dict, argparse.Namespace], tuple[dict, dict]],
            add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
            argv: list[str] | None = None) -> None:
    """The shared ``SRC DST`` command line of ``tools/model_converters/*2lsa.py``.

    ``convert(ckpt, args)`` gets the loaded source file and returns
    ``(state_dict, meta)``; it must already have checked the result against the
    lsa model (:func:`check_against`).
    """
    parser = argparse.ArgumentParser(prog=name, description=description)
    parser.add_argument('src', help='official checkpoint, exactly as released')
    parser.add_argument('dst', help='output: an mmengine checkpoint for lsa')
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    ckpt = load_file(args.src)
    sd, meta = convert(ckpt, args)
    meta = dict(meta, converted_from=osp.basename(args.src), converter=name)
    save_mmengine_checkpoint(sd, args.dst, meta)
    print(f'{name}: wrote {len(sd)} tensors to {args.dst} ({meta})')
