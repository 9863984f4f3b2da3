"""Shared plumbing for the checkpoint converters: unwrap, prefix handling, strict checks, CLI."""
from __future__ import annotations

import argparse
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor

StateDict = 'OrderedDict[str, Tensor]'


class CheckpointMismatchError(ValueError):
    """A converted checkpoint does not fit the lsa model; lists what differs."""


#: A key pattern only each family's official checkpoints have (after ``module.``/``backbone.``).
FAMILY_KEYS = {
    'SAN': re.compile(r'(^|\.)layer\d+\.\d+\.sam\.'),
    'LESA': re.compile(r'(^|\.)layer\d+\.\d+\.conv2\.qkv_transform\.weight$'),
    'ELSA': re.compile(r'(^|\.)layers\.\d+\.blocks\.\d+\.attn\.(relative_id|rb|pre_proj)'),
    'LocalViT': re.compile(r'\.conv\.conv\.\d+\.|(^|\.)(pos_embed1|pixel_pos)$|tokens_to_token\.'),
}


def load_file(path: str, trusted: bool | None = None) -> dict:
    """Load an official checkpoint file without running code from it.

    Uses :func:`lsa.apis.checkpoint_loading.load_checkpoint_file` (``weights_only=True``
    plus the allowlist; ``trusted`` or ``$LSA_TRUST_CHECKPOINT`` lifts it for this file).
    """
    from lsa.apis.checkpoint_loading import load_checkpoint_file
    obj = load_checkpoint_file(path, map_location='cpu', trusted=trusted)
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


def all_keys(ckpt: Mapping) -> list[str]:
    """Every tensor key of ``ckpt`` and of the state dicts nested one level in it."""
    keys = []
    for k, v in ckpt.items():
        if isinstance(v, Mapping):
            keys += [str(kk) for kk, vv in v.items() if isinstance(vv, Tensor)]
        elif isinstance(v, Tensor):
            keys.append(str(k))
    return keys


def detect_families(ckpt: Mapping) -> list[str]:
    """The families (``FAMILY_KEYS``) whose signature keys ``ckpt`` holds."""
    keys = all_keys(ckpt)
    return [fam for fam, pattern in FAMILY_KEYS.items() if any(pattern.search(k) for k in keys)]


def suspect_missing_keys(keys: Iterable[str]) -> list[str]:
    """Keys a checkpoint probably lost: present in every sibling block but one.

    Blocks are siblings when their keys differ only in one numeric component
    (``layer3.2.*`` vs ``layer3.4.*``); block 0 (often a downsampling block) is only
    compared, never required to match. Needs at least two other siblings to agree, one of
    them an even number of blocks away (alternating blocks may differ by design).
    """
    tails: dict[tuple, set] = {}
    blocks: dict[tuple, set] = {}
    for key in set(keys):
        parts = key.split('.')
        for i, part in enumerate(parts):
            if part.isdigit():
                head = '.'.join(parts[:i])
                tails.setdefault((head, '.'.join(parts[i + 1:])), set()).add(part)
                blocks.setdefault(head, set()).add(part)
    suspects = []
    for (head, tail), present in tails.items():
        absent = blocks[head] - present - {'0'}
        others = present - {'0'}
        # same parity too: Swin-style alternating blocks (shifted ones own an attn_mask) differ
        if len(absent) == 1 and len(others) >= 2 and any(
                (int(o) - int(next(iter(absent)))) % 2 == 0 for o in others):
            suspects.append(f'{head}.{absent.pop()}.{tail}')
    return sorted(suspects)


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


def _family_of(name: str) -> str | None:
    prefix = name.split('2')[0].lower()
    return next((f for f in FAMILY_KEYS if f.lower() == prefix), None)


def _convert_explained(name: str, src: str, ckpt: dict, convert: Callable) -> tuple:
    """Run ``convert(ckpt)``; on failure say whose checkpoint it is or which keys it lost."""
    family, found = _family_of(name), detect_families(ckpt)
    if family and found and family not in found:
        raise CheckpointMismatchError(
            f'{name}: {src} is a {"/".join(found)} checkpoint, not a {family} one; use '
            + ' or '.join(f'tools/model_converters/{f.lower()}2lsa.py' for f in found))
    try:
        return convert(ckpt)
    except (KeyError, ValueError) as err:
        lost = suspect_missing_keys(all_keys(ckpt))
        hint = (f'; the source looks incomplete, these keys are missing (present in every '
                f'sibling block): {", ".join(lost[:20])}' if lost else '')
        if isinstance(err, KeyError):
            raise CheckpointMismatchError(f'{name}: {src} has no key {err}{hint}') from err
        if hint:
            raise CheckpointMismatchError(f'{name}: {err}{hint}') from err
        raise


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
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='load SRC even if it needs types outside the safe allowlist '
                        '(unpickling may run code stored in it: only for files you trust)')
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    from lsa.apis.cli import exit_on, load_errors
    with exit_on(*load_errors(), FileNotFoundError, ValueError):
        if osp.realpath(args.src) == osp.realpath(args.dst):
            raise ValueError(f'{name}: refusing to overwrite the source {args.src!r} with the '
                             'converted checkpoint; give another DST')
        ckpt = load_file(args.src, trusted=args.trust_checkpoint or None)
        sd, meta = _convert_explained(name, args.src, ckpt, lambda c: convert(c, args))
    meta = dict(meta, converted_from=osp.basename(args.src), converter=name)
    save_mmengine_checkpoint(sd, args.dst, meta)
    print(f'{name}: wrote {len(sd)} tensors to {args.dst} ({meta})')
