"""Official LocalViT checkpoints (ofsoundof/LocalViT, DeiT-style ``{'model': ...}``) -> lsa.

The output is an mmpretrain ``ImageClassifier`` state dict: ``backbone.*`` for the lsa
backbone (``lsa.LocalViT``/``LocalViTPVT``/``LocalViTTNT``/``LocalViTSwin``/``LocalViTT2T``) and
``head.fc.*`` for the ``LinearClsHead``. Only the locality feed-forward is renamed:
the official ``<blk>.conv.conv.<i>`` Sequential indices become named modules
``<blk>.ffn.<name>``; the index shift when SE/ECA is absent is handled. T2T keeps every
other name, including the random performer matrices ``tokens_to_token.attention{1,2}.w``
and the sinusoidal ``pos_embed`` (both loaded from the file, never regenerated) and the
unused ``norm2`` of the token layers.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping

from torch import Tensor

from .common import add_prefix, check_against, unwrap

#: lsa arch names -> (backbone type, backbone kwargs) of the published classifiers.
ARCHS = {
    'localvit-t': ('LocalViT', dict(arch='tiny')),
    'localvit-t-se4': ('LocalViT', dict(arch='tiny-se4')),
    'localvit-s': ('LocalViT', dict(arch='small')),
    'localvit-pvt': ('LocalViTPVT', dict(arch='tiny', out_type='cls_token', out_indices=3)),
    'localvit-tnt': ('LocalViTTNT', dict(arch='tiny')),
    'localvit-swin': ('LocalViTSwin', dict(arch='tiny', out_indices=3)),
    'localvit-t2t': ('LocalViTT2T', dict(arch='t2t-7')),
}
# Swin host: official buffers that lsa recomputes (dropped), and renamed containers.
_SWIN_DROP = re.compile(r'^layers\.\d+\.blocks\.\d+\.(attn_mask|attn\.relative_position_index)$')

# Sequential index -> name, with and without the channel-attention module at index 6.
_LFF_WITH_ATTN = {0: 'fc1', 1: 'bn1', 3: 'dwconv', 4: 'bn2', 6: 'attn', 7: 'fc2', 8: 'bn3'}
_LFF_NO_ATTN = {0: 'fc1', 1: 'bn1', 3: 'dwconv', 4: 'bn2', 6: 'fc2', 7: 'bn3'}
# SE: official fc.0 / fc.2 (Sequential) <-> lsa fc1 / fc2; ECA keeps `conv`.
_SE = {'fc.0.': 'fc1.', 'fc.2.': 'fc2.'}
_LFF_KEY = re.compile(r'^(?P<blk>.*)\.conv\.conv\.(?P<idx>\d+)\.(?P<rest>.+)$')
_LSA_LFF_KEY = re.compile(r'^(?P<blk>.*)\.ffn\.(?P<name>fc1|bn1|dwconv|bn2|attn|fc2|bn3)\.'
                          r'(?P<rest>.+)$')


def _blocks_with_attn(keys) -> set:
    """Prefixes of the LFFs that carry an SE/ECA module at Sequential index 6."""
    out = set()
    for k in keys:
        m = _LFF_KEY.match(k)
        if m and m['idx'] == '6' and (m['rest'].startswith('fc.') or m['rest'].startswith('conv.')):
            out.add(m['blk'])
    return out


def convert_localvit(state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Official LocalViT ``model`` state dict -> lsa classifier state dict (pure)."""
    with_attn = _blocks_with_attn(state_dict)
    swin = any(k.startswith('layers.') for k in state_dict)
    out = OrderedDict()
    for k, v in state_dict.items():
        if swin:  # official Swin layout -> lsa.SwinHost layout
            if _SWIN_DROP.match(k):
                continue
            if k.startswith('norm.'):
                k = 'norm3.' + k[len('norm.'):]
            elif k.startswith('layers.'):
                k = 'stages.' + k[len('layers.'):]
        if k.startswith('head.'):
            out['head.fc.' + k[len('head.'):]] = v
            continue
        m = _LFF_KEY.match(k.replace('stages.', 'layers.', 1) if swin else k)
        if m:
            table = _LFF_WITH_ATTN if m['blk'] in with_attn else _LFF_NO_ATTN
            idx = int(m['idx'])
            if idx not in table:
                raise ValueError(f'convert_localvit: unexpected locality-FFN index {idx} in {k!r}')
            rest = m['rest']
            if table[idx] == 'attn':
                for a, b in _SE.items():
                    if rest.startswith(a):
                        rest = b + rest[len(a):]
            blk = m['blk'].replace('layers.', 'stages.', 1) if swin else m['blk']
            k = f'{blk}.ffn.{table[idx]}.{rest}'
        out['backbone.' + k] = v
    return out


def localvit_to_official(state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Inverse of :func:`convert_localvit` (lsa classifier -> official ``model`` dict)."""
    with_attn = {m['blk'] for k in state_dict if (m := _LSA_LFF_KEY.match(k))
                 and m['name'] == 'attn'}
    inv_with = {v: k for k, v in _LFF_WITH_ATTN.items()}
    inv_without = {v: k for k, v in _LFF_NO_ATTN.items()}
    out = OrderedDict()
    for k, v in state_dict.items():
        if k.startswith('head.fc.'):
            out['head.' + k[len('head.fc.'):]] = v
            continue
        if not k.startswith('backbone.'):
            raise ValueError(f'localvit_to_official: unexpected key {k!r}')
        k = k[len('backbone.'):]
        m = _LSA_LFF_KEY.match('backbone.' + k)
        if m:
            blk = m['blk'][len('backbone.'):]
            idx = (inv_with if m['blk'] in with_attn else inv_without)[m['name']]
            rest = m['rest']
            if m['name'] == 'attn':
                for a, b in _SE.items():
                    if rest.startswith(b):
                        rest = a + rest[len(b):]
            k = f'{blk}.conv.conv.{idx}.{rest}'
        if k.startswith('stages.'):  # lsa.SwinHost -> official Swin names
            k = 'layers.' + k[len('stages.'):]
        elif k.startswith('norm3.'):
            k = 'norm.' + k[len('norm3.'):]
        out[k] = v
    return out


def infer_localvit_arch(state_dict: Mapping[str, Tensor]) -> str:
    """Guess the published model from an official state dict (see :data:`ARCHS`)."""
    if 'pixel_pos' in state_dict:
        return 'localvit-tnt'
    if 'tokens_to_token.attention1.w' in state_dict:
        return 'localvit-t2t'
    if 'pos_embed1' in state_dict:
        return 'localvit-pvt'
    if any(k.startswith('layers.') for k in state_dict):
        return 'localvit-swin'
    if 'pos_embed' in state_dict and 'blocks.0.attn.qkv.weight' in state_dict:
        dim = state_dict['pos_embed'].shape[-1]
        se = state_dict.get('blocks.0.conv.conv.6.fc.0.weight')
        if dim == 384 and se is not None:
            return 'localvit-s'
        if dim == 192 and se is not None:
            return 'localvit-t' if se.shape[0] == 4 else 'localvit-t-se4'
    raise ValueError('convert_localvit: cannot recognise this checkpoint as a released LocalViT '
                     'model (T, T-SE4, S, PVT, TNT, Swin, T2T); pass --arch explicitly if it is one')


def build_reference(arch: str, num_classes: int = 1000):
    """The lsa backbone for ``arch`` and the expected classifier state dict (keys/shapes)."""
    import torch

    import lsa.models  # noqa: F401  (registers the backbones)
    from lsa.registry import MODELS
    if arch not in ARCHS:
        raise ValueError(f'unknown LocalViT arch {arch!r}; choose from {sorted(ARCHS)}')
    name, kwargs = ARCHS[arch]
    backbone = MODELS.build(dict(type=f'lsa.{name}', **kwargs))
    dim = backbone.out_channels[-1]
    ref = add_prefix(backbone.state_dict(), 'backbone.')
    ref['head.fc.weight'] = torch.empty(num_classes, dim)
    ref['head.fc.bias'] = torch.empty(num_classes)
    return backbone, ref


def convert_localvit_checkpoint(ckpt: Mapping, arch: str | None = None,
                       num_classes: int = 1000) -> tuple['OrderedDict[str, Tensor]', dict]:
    """A loaded official file -> ``(lsa state dict, meta)``, strictly checked against the
    lsa classifier of ``arch`` (auto-detected when None)."""
    sd, key = unwrap(ckpt, ['model', 'state_dict', 'model_ema'])
    arch = arch or infer_localvit_arch(sd)
    out = convert_localvit(sd)
    _, ref = build_reference(arch, num_classes)
    check_against(out, ref, f'LocalViT ({arch})')
    return out, dict(arch=arch, source_key=key)


# Former names (one scheme now: convert_<family>_checkpoint, infer_<family>_arch).
detect_arch = infer_localvit_arch
convert_checkpoint = convert_localvit_checkpoint
