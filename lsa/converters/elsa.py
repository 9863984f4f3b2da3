"""Official ELSA-Swin checkpoints (damo-cv/ELSA) -> lsa keys.

Sources:

- classification, as saved by the timm trainer: ``{'state_dict': ..., 'state_dict_ema':
  ... (B only), ...}``, or ``{'model': ...}``, or a bare state dict; keys without
  prefix (a ``module.`` prefix is stripped). Converted to an mmpretrain
  ``ImageClassifier`` state dict: ``backbone.*`` (ELSASwin, ``out_indices=(3,)``;
  the official final ``norm`` becomes ``backbone.norm3``) and ``head.fc.*``.
- detection / segmentation (mmcv): ``{'state_dict': {'backbone.*': ..., 'neck.*': ...}}``.
  Backbone keys are converted (``norm0..3`` kept), every other key is passed
  through unchanged (or dropped with ``backbone_only``).

Key changes (official -> lsa): ``layers.`` -> ``stages.``; ``mlp.`` -> ``ffn.``;
ELSA: ``attn.pre_proj`` -> ``attn.qkv``, ``attn.attn.{0,2}`` -> ``attn.attn_gen.{0,2}``,
``attn.post_proj`` -> ``attn.proj``. Stage-3 window attention (the two quirks
of the official model live here, not in the module):

- ``attn.pre_proj`` rows are [v; q; k] -> ``attn.qkv`` rows [q; k; v];
- ``attn.rb`` (heads, (2w-1)^2) is indexed by the negated offset
  ``(y_j - y_i + w-1)(2w-1) + (x_j - x_i + w-1)`` ->
  ``relative_position_bias_table = rb.T.flip(0)`` ((2w-1)^2, heads, Swin's index);
- the ``relative_id`` buffer is checked against that convention and dropped.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping

import torch
from torch import Tensor

from .common import add_prefix, check_against, strip_prefix, unwrap

__all__ = ['convert_elsa', 'convert_elsa_swin_backbone', 'convert_elsa_cls', 'convert_elsa_det',
           'infer_arch', 'is_det_checkpoint', 'check_elsa_checkpoint', 'infer_elsa_arch',
           'convert_elsa_checkpoint']

_BLOCK = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.(.+)$')
_RENAMES = (('attn.pre_proj.', 'attn.qkv.'), ('attn.attn.0.', 'attn.attn_gen.0.'),
            ('attn.attn.2.', 'attn.attn_gen.2.'), ('attn.post_proj.', 'attn.proj.'),
            ('mlp.', 'ffn.'))


def _official_relative_id(window: int) -> Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                        indexing='ij')).flatten(1)
    rel = coords[:, None, :] - coords[:, :, None] + window - 1  # (j - i), 2, N, N
    return (rel[0] * (2 * window - 1) + rel[1]).reshape(-1)


def _window_of(rb: Tensor, key: str) -> int:
    side = round(rb.shape[1] ** 0.5)
    if rb.dim() != 2 or side * side != rb.shape[1] or side % 2 == 0:
        raise ValueError(f'{key}: expected an ELSA-Swin bias table of shape (heads, (2w-1)**2), '
                         f'got {tuple(rb.shape)}')
    return (side + 1) // 2


def _convert_block(prefix: str, block: dict[str, Tensor]) -> dict[str, Tensor]:
    """One block's keys (relative to ``prefix``) -> lsa keys."""
    out: dict[str, Tensor] = {}
    window = 'attn.rb' in block
    if window:
        rb = block['attn.rb']
        w = _window_of(rb, prefix + 'attn.rb')
        rid = block.get('attn.relative_id')
        if rid is not None and not torch.equal(rid.reshape(-1).long(), _official_relative_id(w)):
            raise ValueError(f'{prefix}attn.relative_id does not follow the ELSA-Swin convention '
                             f'(window {w}); refusing to guess the bias-table layout')
    for k, v in block.items():
        if k in ('attn.relative_id', 'attn_mask', 'attn.attn_mask'):
            continue
        if window and k == 'attn.rb':
            out['attn.relative_position_bias_table'] = v.t().flip(0).contiguous()
            continue
        if window and k.startswith('attn.pre_proj.'):
            if v.shape[0] % 3:
                raise ValueError(f'{prefix}{k}: expected 3*C rows, got {tuple(v.shape)}')
            vv, q, kk = v.chunk(3, dim=0)
            v = torch.cat([q, kk, vv], dim=0)
        for old, new in _RENAMES:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


def convert_elsa_swin_backbone(sd: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Official ELSA-Swin backbone keys (no prefix) -> :class:`lsa.ELSASwin` keys.

    Keys outside the backbone layout (``norm``, ``head``) are returned unchanged.
    """
    blocks: dict[tuple[int, int], dict[str, Tensor]] = {}
    out: 'OrderedDict[str, Tensor]' = OrderedDict()
    order: list[object] = []
    for k, v in sd.items():
        m = _BLOCK.match(k)
        if m:
            key = (int(m.group(1)), int(m.group(2)))
            if key not in blocks:
                blocks[key] = {}
                order.append(key)
            blocks[key][m.group(3)] = v
        else:
            order.append(k)
    for item in order:
        if isinstance(item, tuple):
            s, b = item
            prefix = f'stages.{s}.blocks.{b}.'
            for k, v in _convert_block(f'layers.{s}.blocks.{b}.', blocks[item]).items():
                out[prefix + k] = v
        elif item.startswith('layers.'):
            out['stages.' + item[len('layers.'):]] = sd[item]
        else:
            out[item] = sd[item]
    return out


def infer_elsa_arch(sd: Mapping[str, Tensor]) -> dict:
    """``embed_dims``, ``depths``, ``num_heads``, ``group_width`` of an official backbone
    state dict (no prefix), and the ``arch_zoo`` name if it is a published one."""
    try:
        embed = sd['patch_embed.proj.weight'].shape[0]
    except KeyError:
        raise ValueError('not an ELSA-Swin checkpoint: no patch_embed.proj.weight '
                         f'(keys: {sorted(sd)[:8]} ...)') from None
    depths, heads, gw = [], [], None
    s = 0
    while any(k.startswith(f'layers.{s}.blocks.') for k in sd):
        depths.append(len({k.split('.')[3] for k in sd if k.startswith(f'layers.{s}.blocks.')}))
        g0 = f'layers.{s}.blocks.0.attn.'
        if g0 + 'rb' in sd:
            heads.append(sd[g0 + 'rb'].shape[0])
        elif g0 + 'attn.2.weight' in sd:
            k2 = sd[g0 + 'attn.0.weight'].shape[-1] ** 2
            heads.append(sd[g0 + 'attn.2.weight'].shape[0] // k2)
            gw = gw or sd[g0 + 'attn.0.weight'].shape[1]
        else:
            raise ValueError(f'not an ELSA-Swin checkpoint: stage {s} block 0 has neither ELSA '
                             'nor window-attention keys')
        s += 1
    if not depths:
        raise ValueError('not an ELSA-Swin checkpoint: no layers.*.blocks.* keys')
    arch = {'embed_dims': embed, 'depths': tuple(depths), 'num_heads': tuple(heads),
            'group_width': gw or 8}
    from lsa.models.backbones.elsa_swin import ELSASwin
    for name in ('tiny', 'small', 'base'):
        if all(ELSASwin.arch_zoo[name][k] == v for k, v in arch.items()):
            return dict(arch, name=name)
    return dict(arch, name=None)


def is_det_checkpoint(sd: Mapping[str, Tensor]) -> bool:
    """True for an mmdet/mmseg checkpoint (backbone keys prefixed ``backbone.``)."""
    return any(k.startswith('backbone.') for k in sd)


def _load_source(ckpt: Mapping, use_ema: bool) -> tuple[dict, str | None]:
    keys = ('state_dict_ema', 'state_dict', 'model') if use_ema else ('state_dict', 'model')
    sd, key = unwrap(ckpt, keys)
    if use_ema and key != 'state_dict_ema':
        raise ValueError(f'use_ema=True but the checkpoint has no state_dict_ema '
                         f'(top-level keys {sorted(ckpt)[:10]})')
    return strip_prefix(sd, 'module.'), key


def convert_elsa_cls(ckpt: Mapping, use_ema: bool = False,
                     backbone_only: bool = False) -> tuple['OrderedDict[str, Tensor]', dict]:
    """A classification checkpoint -> (mmpretrain ImageClassifier state dict, meta).

    ``backbone_only`` keeps only the ``backbone.*`` keys and drops the final norm
    (``norm3``), like the official det/seg fine-tuning, which starts its output norms
    fresh: use it for ``init_cfg=dict(type='Pretrained', prefix='backbone.')``.
    """
    sd, key = _load_source(ckpt, use_ema)
    if is_det_checkpoint(sd):
        raise ValueError('this is a detection/segmentation checkpoint (backbone.* keys); '
                         'use convert_elsa_det')
    arch = infer_elsa_arch(sd)
    conv = convert_elsa_swin_backbone(sd)
    out: 'OrderedDict[str, Tensor]' = OrderedDict()
    for k, v in conv.items():
        if k.startswith('head.'):
            if not backbone_only:
                out['head.fc.' + k[len('head.'):]] = v
        elif k.startswith('norm.'):
            if not backbone_only:
                out['backbone.norm3.' + k[len('norm.'):]] = v
        else:
            out['backbone.' + k] = v
    meta = {'arch': arch, 'source': 'cls', 'state_dict_key': key, 'backbone_only': backbone_only}
    return out, meta


def convert_elsa_det(ckpt: Mapping,
                     backbone_only: bool = False) -> tuple['OrderedDict[str, Tensor]', dict]:
    """A det/seg checkpoint -> (state dict with converted ``backbone.*`` keys, meta)."""
    sd, key = _load_source(ckpt, use_ema=False)
    if not is_det_checkpoint(sd):
        raise ValueError('no backbone.* keys: not a detection/segmentation checkpoint '
                         '(use convert_elsa_cls for classification checkpoints)')
    bb = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    arch = infer_elsa_arch(bb)
    out = add_prefix(convert_elsa_swin_backbone(bb), 'backbone.')
    if not backbone_only:
        for k, v in sd.items():
            if not k.startswith('backbone.'):
                out[k] = v
    return out, {'arch': arch, 'source': 'det', 'state_dict_key': key,
                 'backbone_only': backbone_only}


def check_elsa_checkpoint(sd: Mapping[str, Tensor], meta: dict,
                          arch: str | dict | None = None) -> None:
    """Strictly check the ``backbone.*`` (and ``head.fc.*``) keys of a converted
    checkpoint against the lsa model built for it; raises CheckpointMismatchError."""
    from lsa.models.backbones.elsa_swin import ELSASwin
    info = meta['arch']
    arch = arch or info['name'] or {k: info[k] for k in ELSASwin.essential_keys}
    bb_sd = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    if meta['source'] == 'det':
        outs = tuple(sorted(int(k[4]) for k in bb_sd if re.match(r'^norm\d\.weight$', k)))
        out_indices = outs or (0, 1, 2, 3)
    else:
        out_indices = () if meta['backbone_only'] else (3,)
    with torch.device('meta'):
        model = ELSASwin(arch=arch, out_indices=out_indices)
    ref = add_prefix(model.state_dict(), 'backbone.')
    mine = dict(add_prefix(bb_sd, 'backbone.'))
    if meta['source'] == 'cls' and not meta['backbone_only']:
        head = [k for k in sd if k.startswith('head.fc.')]
        if 'head.fc.weight' not in sd:
            raise ValueError('classification checkpoint without head weights (head.weight)')
        n_cls = sd['head.fc.weight'].shape[0]
        ref['head.fc.weight'] = torch.empty(n_cls, model.stage_channels[3])
        ref['head.fc.bias'] = torch.empty(n_cls)
        mine.update({k: sd[k] for k in head})
    check_against(mine, ref, f'ELSASwin(arch={arch!r}) {meta["source"]} checkpoint')


def convert_elsa_checkpoint(ckpt: Mapping, use_ema: bool = False, backbone_only: bool = False,
                 arch: str | dict | None = None) -> tuple['OrderedDict[str, Tensor]', dict]:
    """Any released ELSA-Swin checkpoint (cls or det/seg) -> checked lsa state dict, meta.

    The kind is detected from the keys (``backbone.*`` means det/seg). ``arch``
    (e.g. ``'tiny'``) is the expected variant; by default it is inferred.
    """
    probe, _ = _load_source(ckpt, use_ema)
    if is_det_checkpoint(probe):
        if use_ema:
            raise ValueError('use_ema applies to classification checkpoints only')
        sd, meta = convert_elsa_det(ckpt, backbone_only)
    else:
        sd, meta = convert_elsa_cls(ckpt, use_ema, backbone_only)
    aliases = {'t': 'tiny', 's': 'small', 'b': 'base'}
    if isinstance(arch, str) and meta['arch']['name'] != aliases.get(arch.lower(), arch.lower()):
        raise ValueError(f'expected an ELSA-Swin {arch!r} checkpoint, found '
                         f'{meta["arch"]["name"] or "a custom arch"} ({meta["arch"]})')
    check_elsa_checkpoint(sd, meta, arch)
    return sd, meta


# Former names (one scheme now: convert_<family>_checkpoint, infer_<family>_arch).
infer_arch = infer_elsa_arch
convert_elsa = convert_elsa_checkpoint
