"""Official LESA checkpoints -> lsa keys (pure functions; CLI: tools/model_converters/lesa2lsa.py).

Two released layouts:

* classification (Chenglin-Yang/LESA_classification): ``{'net': state_dict}`` saved
  from ``nn.DataParallel``, so every key starts with ``module.``; LESA blocks at
  ``layer{3,4}.{b}.conv2.*`` with the interleaved value/position BN ``bn_output``.
  Output: keys of an mmpretrain ``ImageClassifier`` with ``backbone=LESAResNet``
  and ``LinearClsHead`` (``backbone.*`` and ``head.fc.*``).
* detection (Chenglin-Yang/LESA_detection, mmdet 2.11): mmcv's
  ``{'meta', 'state_dict', ...}`` with ``backbone.*`` / ``neck.*`` / ``*_head.*``
  keys and DCN offsets (``conv2.conv_offset`` / ``x_transform.0.conv_offset``).
  Output: the converted ``backbone.*`` keys, followed (unless ``backbone_only``)
  by every other key unchanged. The ``backbone.`` prefix is kept on purpose:
  the file works both as ``load_from`` for a whole detector and as
  ``backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=FILE, prefix='backbone.'))``.

Per LESA block (official -> lsa): ``qkv_transform`` (Conv1d) -> ``qkv`` (1x1
Conv2d), ``bn_qkv`` -> ``qkv_norm``, ``bn_similarity`` -> ``logit_norm``,
``bn_output`` -> ``value_norm`` (classification: even channels) and
``pos_value_norm`` (odd channels), ``x_transform`` -> ``local_conv``, ``bn_x`` ->
``local_norm``, ``reasoning`` -> ``fuse``, ``projection`` -> ``gate``,
``relative`` -> ``rel_pos``, ``rel_height``/``rel_width`` -> ``rel_h``/``rel_w``;
the redundant ``flatten_index`` buffer is checked and dropped.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping

import torch
from torch import Tensor

from lsa.converters.common import check_against, strip_prefix, unwrap
from lsa.models.backbones.lesa_resnet import LESAResNet

_BLOCK_RE = re.compile(r'^(layer\d+\.\d+\.conv2)\.(qkv_transform\.weight)$')
_RENAME = [('qkv_transform.', 'qkv.'), ('bn_qkv.', 'qkv_norm.'),
           ('bn_similarity.', 'logit_norm.'), ('x_transform.', 'local_conv.'),
           ('bn_x.', 'local_norm.'), ('reasoning.', 'fuse.'), ('projection.', 'gate.')]
_TABLES = {'relative': 'rel_pos', 'rel_height': 'rel_h', 'rel_width': 'rel_w'}


def lesa_block_prefixes(state_dict: Mapping[str, Tensor]) -> list[str]:
    """Prefixes (``'layer3.1.conv2'``...) of the LESA blocks in an official backbone state dict."""
    return sorted(m.group(1) for k in state_dict if (m := _BLOCK_RE.match(k)))


def convert_lesa_block(sd: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """One official ``LESA`` module's state dict (keys without prefix) -> LESAAttention keys."""
    cls_pe = 'relative' in sd
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, val in sd.items():
        if key == 'flatten_index':
            n = round(val.numel() ** 0.5)
            idx = torch.arange(n)
            expect = (idx[:, None] - idx[None, :] + n - 1).flatten()
            if n * n != val.numel() or not torch.equal(val.cpu().long(), expect):
                raise ValueError('LESA converter: flatten_index is not the released '
                                 f'relative index of {n}x{n} tokens')
            continue
        if key in _TABLES:
            out[_TABLES[key]] = val
        elif key.startswith('bn_output.'):
            attr = key[len('bn_output.'):]
            if not cls_pe:
                out['value_norm.' + attr] = val
            elif attr == 'num_batches_tracked':
                out['value_norm.' + attr] = val
                out['pos_value_norm.' + attr] = val.clone()
            else:  # interleaved: channel 2 * (g * d_v + c) + s, s = 0 for A.v, 1 for A.E_v
                out['value_norm.' + attr] = val[0::2].clone()
                out['pos_value_norm.' + attr] = val[1::2].clone()
        else:
            for old, new in _RENAME:
                if key.startswith(old):
                    new_key = new + key[len(old):]
                    if new_key == 'qkv.weight' and val.dim() == 3:
                        val = val.unsqueeze(-1)  # Conv1d (2P, Cin, 1) -> Conv2d (2P, Cin, 1, 1)
                    out[new_key] = val
                    break
            else:
                raise ValueError(f'LESA converter: unknown key {key!r} in a LESA block')
    return out


def convert_lesa_backbone(state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """An official LESA ResNet state dict (no prefix, no ``fc``) -> LESAResNet keys."""
    blocks = lesa_block_prefixes(state_dict)
    if not blocks:
        raise ValueError('LESA converter: no LESA block found (no key like '
                         "'layer3.1.conv2.qkv_transform.weight'); is this a LESA checkpoint?")
    out: OrderedDict[str, Tensor] = OrderedDict()
    done = set()
    for key, val in state_dict.items():
        pre = next((b for b in blocks if key.startswith(b + '.')), None)
        if pre is None:
            out[key] = val
        elif pre not in done:
            done.add(pre)
            sub = {k[len(pre) + 1:]: v for k, v in state_dict.items() if k.startswith(pre + '.')}
            out.update((f'{pre}.{k}', v) for k, v in convert_lesa_block(sub).items())
    return out


def infer_lesa_arch(backbone_sd: Mapping[str, Tensor], form: str) -> dict:
    """LESAResNet kwargs matching an official backbone state dict (arch, PE, DCN, table sizes)."""
    base = backbone_sd['conv1.weight'].shape[0]
    arch: str | dict = {
        'base_channels': base,
        'stage_blocks': tuple(1 + max(int(k.split('.')[1]) for k in backbone_sd
                                      if k.startswith(f'layer{i}.')) for i in range(1, 5)),
        'widen_factor': backbone_sd['layer1.0.conv1.weight'].shape[0] // base}
    arch = next((n for n, a in LESAResNet.arch_zoo.items() if a == arch), arch)
    lesa = lesa_block_prefixes(backbone_sd)
    det_pe = any(k.endswith('.rel_height') for k in backbone_sd)
    cfg: dict = dict(
        arch=arch, form=form,
        attn_cfg=dict(pe_type='detection_qr' if det_pe else 'classification'),
        stage_with_attn=tuple(any(p.startswith(f'layer{i}.') for p in lesa)
                              for i in range(1, 5)),
        stage_with_first_conv=tuple(not any(p.startswith(f'layer{i}.0.') for p in lesa)
                                    for i in range(1, 5)))
    # design map sizes, read from the position tables of the stride-1 blocks
    res = list(LESAResNet.form_zoo[form]['stage_spatial_res'])
    for i in range(4):
        p = next((p for p in lesa if p.startswith(f'layer{i + 1}.')
                  and not p.startswith(f'layer{i + 1}.0.')), None)
        if p is None:
            continue
        if det_pe:
            res[i] = (backbone_sd[p + '.rel_height'].shape[0] + 1) // 2
        else:
            res[i] = round(((backbone_sd[p + '.relative'].shape[1] + 1) // 2) ** 0.5)
    cfg['stage_spatial_res'] = tuple(res)
    dcn_stages = tuple(any(k.startswith(f'layer{i}.') and '.conv_offset.' in k
                           for k in backbone_sd) for i in range(1, 5))
    if any(dcn_stages):
        cfg.update(dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False),
                   stage_with_dcn=dcn_stages)
    return cfg


def convert_lesa_cls(ckpt: Mapping, check: bool = True) -> tuple[dict, dict]:
    """Released classification checkpoint -> (mmpretrain ImageClassifier state dict, meta).

    Accepts ``{'net': ...}`` (with or without ``module.``) or a bare state dict.
    With ``check`` the result is compared key by key and shape by shape with an
    ``LESAResNet(form='cls')`` built from the inferred config (plus the
    ``LinearClsHead`` ``head.fc``); any difference raises
    :class:`~lsa.converters.common.CheckpointMismatchError` listing it.
    """
    sd, _ = unwrap(ckpt, ['net', 'state_dict', 'model'])
    sd = strip_prefix(sd, 'module.')
    head = {k: v for k, v in sd.items() if k.startswith('fc.')}
    backbone = convert_lesa_backbone({k: v for k, v in sd.items() if not k.startswith('fc.')})
    cfg = infer_lesa_arch({k: v for k, v in sd.items() if not k.startswith('fc.')}, 'cls')
    out = OrderedDict(('backbone.' + k, v) for k, v in backbone.items())
    out.update(('head.' + k, v) for k, v in head.items())
    if check:
        model = LESAResNet(**cfg)
        ref = OrderedDict(('backbone.' + k, v) for k, v in model.state_dict().items())
        if 'fc.weight' in head:
            ref['head.fc.weight'] = torch.empty(head['fc.weight'].shape[0],
                                                model.stage_channels[-1])
            ref['head.fc.bias'] = torch.empty(head['fc.weight'].shape[0])
        check_against(out, ref, f'LESA classification checkpoint (inferred {cfg})')
    return out, dict(lesa_config=cfg, layout='LESA_classification')


def convert_lesa_det(ckpt: Mapping, backbone_only: bool = False,
                     check: bool = True) -> tuple[dict, dict]:
    """Released detection checkpoint (mmcv format) -> (state dict with ``backbone.`` keys, meta).

    Non-backbone keys (neck, heads) are passed through unchanged unless
    ``backbone_only``. With ``check`` the backbone part is compared with an
    ``LESAResNet(form='det')`` built from the inferred config (needs mmcv when the
    checkpoint has DCN offsets).
    """
    sd, _ = unwrap(ckpt, ['state_dict', 'model', 'net'])
    sd = strip_prefix(sd, 'module.')
    bb = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    if not bb:
        raise ValueError('LESA detection converter: no "backbone." keys found (top-level '
                         f'keys look like {sorted(sd)[:5]}); for classification checkpoints '
                         'use --form cls')
    cfg = infer_lesa_arch(bb, 'det')
    conv = convert_lesa_backbone(bb)
    if check:
        check_against(conv, LESAResNet(**cfg).state_dict(),
                      f'LESA detection checkpoint (inferred {cfg})')
    out = OrderedDict(('backbone.' + k, v) for k, v in conv.items())
    if not backbone_only:
        out.update((k, v) for k, v in sd.items() if not k.startswith('backbone.'))
    return out, dict(lesa_config=cfg, layout='LESA_detection')


def convert_lesa_checkpoint(ckpt: Mapping, form: str = 'auto', backbone_only: bool = False,
                 check: bool = True) -> tuple[dict, dict]:
    """Dispatch on the layout: ``'cls'``, ``'det'`` or ``'auto'`` (``backbone.`` keys => det).

    ``backbone_only`` only applies to detection files (classification files hold
    just the backbone and ``fc``).
    """
    if form == 'auto':
        sd, _ = unwrap(ckpt, ['state_dict', 'net', 'model'])
        form = 'det' if any(k.startswith(('backbone.', 'module.backbone.')) for k in sd) \
            else 'cls'
    if form == 'cls':
        return convert_lesa_cls(ckpt, check=check)
    if form == 'det':
        return convert_lesa_det(ckpt, backbone_only=backbone_only, check=check)
    raise ValueError(f"LESA converter: form must be 'auto', 'cls' or 'det', got {form!r}")


__all__ = ['convert_lesa', 'convert_lesa_backbone', 'convert_lesa_block', 'convert_lesa_cls',
           'convert_lesa_det', 'infer_lesa_config', 'lesa_block_prefixes', 'infer_lesa_arch',
           'convert_lesa_checkpoint']


# Former names (one scheme now: convert_<family>_checkpoint, infer_<family>_arch).
infer_lesa_config = infer_lesa_arch
convert_lesa = convert_lesa_checkpoint
