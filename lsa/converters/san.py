"""Official SAN checkpoints (hszhao/SAN, ``model_best.pth``) -> lsa keys.

The released files are ``{'epoch', 'state_dict', 'optimizer', ...}`` saved from a
DDP model, so every key starts with ``module.``. The result is the state dict of the
whole mmpretrain ``ImageClassifier`` built from ``configs/cls/san/*.py``:
``backbone.*`` (:class:`lsa.models.backbones.SAN`) and ``head.fc.*``
(``LinearClsHead``; the neck, global average pooling, has no parameters).

Renames (official -> lsa backbone)::

    conv_in / bn_in                  -> stem.conv / stem.norm
    conv{i} / bn{i}                  -> stages.{i}.transition / stages.{i}.norm
    layer{i}.{b}.bn1 / bn2 / conv    -> stages.{i}.blocks.{b}.norm1 / norm2 / proj
    layer{i}.{b}.sam.conv1/2/3       -> stages.{i}.blocks.{b}.attn.phi / psi / beta
    layer{i}.{b}.sam.conv_p          -> stages.{i}.blocks.{b}.attn.pos_enc
    layer{i}.{b}.sam.conv_w.0/2/3/5  -> stages.{i}.blocks.{b}.attn.gamma.norm1/conv1/norm2/conv2
    fc                               -> head.fc (classifier, outside the backbone)

Tensor layouts are unchanged (the lsa modules use the official channel orders).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping

import torch
from torch import Tensor

from .common import CheckpointMismatchError, check_against, strip_prefix, unwrap

_BLOCK_RENAMES = {
    'bn1': 'norm1', 'bn2': 'norm2', 'conv': 'proj',
    'sam.conv1': 'attn.phi', 'sam.conv2': 'attn.psi', 'sam.conv3': 'attn.beta',
    'sam.conv_p': 'attn.pos_enc',
    'sam.conv_w.0': 'attn.gamma.norm1', 'sam.conv_w.2': 'attn.gamma.conv1',
    'sam.conv_w.3': 'attn.gamma.norm2', 'sam.conv_w.5': 'attn.gamma.conv2',
}
_PARAM = r'(weight|bias|running_mean|running_var|num_batches_tracked)'
_BLOCK_RE = re.compile(r'^layer(\d+)\.(\d+)\.(' + '|'.join(
    re.escape(k) for k in sorted(_BLOCK_RENAMES, key=len, reverse=True)) + r')\.' + _PARAM + '$')
_STAGE_RE = re.compile(r'^(conv|bn)(\d+)\.' + _PARAM + '$')
_STEM_RE = re.compile(r'^(conv_in|bn_in)\.' + _PARAM + '$')
_FC_RE = re.compile(r'^fc\.(weight|bias)$')


def rename_san_key(key: str) -> str | None:
    """Map one official key (without ``module.``) to its lsa classifier key, or None."""
    if m := _BLOCK_RE.match(key):
        i, b, name, param = m.groups()
        return f'backbone.stages.{i}.blocks.{b}.{_BLOCK_RENAMES[name]}.{param}'
    if m := _STAGE_RE.match(key):
        kind, i, param = m.groups()
        return f'backbone.stages.{i}.{"transition" if kind == "conv" else "norm"}.{param}'
    if m := _STEM_RE.match(key):
        kind, param = m.groups()
        return f'backbone.stem.{"conv" if kind == "conv_in" else "norm"}.{param}'
    if m := _FC_RE.match(key):
        return f'head.fc.{m.group(1)}'
    return None


def infer_san_arch(state_dict: Mapping[str, Tensor]) -> tuple[str, str]:
    """``(arch, sa_type)`` of an official SAN state dict (keys without ``module.``).

    The depth comes from the number of blocks per stage, the type from the
    presence of ``conv_p`` (pairwise only).
    """
    from lsa.models.backbones.san import SAN

    blocks: dict[int, set] = {}
    for k in state_dict:
        if m := re.match(r'^layer(\d+)\.(\d+)\.', k):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    layers = tuple(len(blocks.get(i, ())) for i in range(max(blocks, default=-1) + 1))
    for name, spec in SAN.arch_zoo.items():
        if tuple(spec['layers']) == layers:
            pairwise = any('.sam.conv_p.' in k for k in state_dict)
            return name, 'pairwise' if pairwise else 'patchwise'
    known = {n: tuple(s['layers']) for n, s in SAN.arch_zoo.items()}
    foreign = sorted(k for k in state_dict if rename_san_key(k) is None)
    raise CheckpointMismatchError(
        f'SAN converter: cannot identify the variant: blocks per stage {layers} match none of '
        f'{known}' + (f'; keys that are not SAN keys ({len(foreign)}): {foreign[:20]}'
                      if foreign else ''))


def _expected_state_dict(arch: str, sa_type: str, num_classes: int, width: int) -> dict:
    """Key -> empty tensor of the right shape for the lsa classifier (built on 'meta')."""
    from lsa.models.backbones.san import SAN

    with torch.device('meta'):
        backbone = SAN(arch=arch, sa_type=sa_type)
    ref = {'backbone.' + k: v for k, v in backbone.state_dict().items()}
    ref['head.fc.weight'] = torch.empty(num_classes, width, device='meta')
    ref['head.fc.bias'] = torch.empty(num_classes, device='meta')
    return ref


def convert_san_checkpoint(ckpt: Mapping, arch: str | None = None) -> tuple['OrderedDict[str, Tensor]', dict]:
    """Convert an official SAN checkpoint to the lsa classifier's state dict.

    Args:
        ckpt: The loaded file (``{'state_dict': ...}``) or a bare state dict; the
            ``module.`` prefix is optional.
        arch: Optional ``'san10-pairwise'`` style name; when given it must match the
            checkpoint, when omitted it is inferred.

    Returns:
        ``(state_dict, meta)``: keys ``backbone.*`` and ``head.fc.*``, and
        ``meta = {'arch': ..., 'sa_type': ...}``.

    Raises:
        CheckpointMismatchError: the checkpoint is not (this variant of) SAN; the
            message lists missing, unexpected and mis-shaped keys.
    """
    from lsa.models.backbones.san import SAN, split_arch_name

    sd, _ = unwrap(ckpt, ['state_dict', 'model'])
    sd = strip_prefix(sd, 'module.')
    found = infer_san_arch(sd)
    if arch is not None:
        name, sa_type = split_arch_name(arch)  # raises ValueError on unknown names
        want = (name, sa_type or found[1])
        if want != found:
            raise CheckpointMismatchError(
                f'SAN converter: --arch {arch!r} asks for {want[0]}-{want[1]} but the checkpoint '
                f'is {found[0]}-{found[1]}')
    arch_name, sa_type = found
    out: OrderedDict[str, Tensor] = OrderedDict()
    for k, v in sd.items():
        new = rename_san_key(k)
        out[new if new is not None else k] = v  # unknown keys stay and are reported below
    # checkpoints saved without BN step counters: add them (unused in eval and by SGD)
    for k in [k for k in out if k.endswith('.running_mean')]:
        out.setdefault(k[:-len('running_mean')] + 'num_batches_tracked',
                       torch.tensor(0, dtype=torch.long))
    fc = out.get('head.fc.weight')
    num_classes, width = (fc.shape if fc is not None and fc.dim() == 2
                          else (1000, SAN.arch_zoo[arch_name]['widths'][-1]))
    check_against(out, _expected_state_dict(arch_name, sa_type, num_classes, width),
                  f'SAN converter ({arch_name}-{sa_type})')
    return out, {'arch': arch_name, 'sa_type': sa_type}


# Former names (one scheme now: convert_<family>_checkpoint, infer_<family>_arch).
convert_san = convert_san_checkpoint
