"""Published recipes against the official ones: per-parameter weight decay and the seg TTA sizes.

Weight decay: each published config's optimiser is built (mmengine's constructor, the one
``tools/train.py`` uses) on the config's own model or backbone, and every trainable parameter's
decay is compared with the rule of the official trainer, written here from the official code
(docs: spec_san_elsa.md, spec_lesa_localvit.md) and applied to the official parameter name:

- ELSA det/seg (mmcv ``paramwise_cfg``): no decay iff the official name contains
  ``absolute_pos_embed``, ``relative_position_bias_table`` or ``norm``; the official stage-3
  tables are named ``rb``, so they ARE decayed.
- ELSA cls (timm 0.4.9) and LocalViT (timm 0.3.2): no decay iff the parameter is 1-D, its name
  ends in ``.bias``, or (LocalViT) it is in the model's ``no_weight_decay()`` set.
- SAN, LESA (cls, det): one SGD group, every parameter decayed.
Configs beyond the papers follow the recipe their header names.

Det/seg configs are checked on the backbone (the toolbox heads keep the official names);
classification configs on the whole classifier.
"""
from __future__ import annotations

import copy
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

import lsa.compat_apply  # noqa: F401  (compat fixes before any toolbox import)

ROOT = Path(__file__).resolve().parents[2]

_ELSA_DETSEG_KEYS = ('absolute_pos_embed', 'relative_position_bias_table', 'norm')
# lsa ELSASwin name -> official name (spec_san_elsa.md, "checkpoint keys")
_ELSA_RENAMES = (('stages.', 'layers.'), ('.ffn.', '.mlp.'), ('attn.qkv.', 'attn.pre_proj.'),
                 ('attn.attn_gen.', 'attn.attn.'), ('attn.proj.', 'attn.post_proj.'),
                 ('relative_position_bias_table', 'rb'))


def elsa_official_name(name: str) -> str:
    for old, new in _ELSA_RENAMES:
        name = name.replace(old, new)
    return name


def elsa_detseg(name, param) -> bool:
    """Official mmcv custom_keys on the official name (prefix 'backbone.')."""
    return not any(k in 'backbone.' + elsa_official_name(name) for k in _ELSA_DETSEG_KEYS)


def timm_rule(skip: frozenset = frozenset()):
    """timm ``add_weight_decay``: no decay for 1-D params, ``.bias`` and ``skip`` names."""
    def decayed(name, param) -> bool:
        top = name.split('.', 1)[1] if name.startswith('backbone.') else name
        return not (param.ndim <= 1 or name.endswith('.bias') or top in skip)
    return decayed


def all_decayed(name, param) -> bool:
    return True


def lsa_norm_keys(name, param) -> bool:
    """The ELSA/Swin seg recipe applied to lsa names (configs beyond the papers)."""
    return 'norm' not in 'backbone.' + name


DEIT_SKIP = frozenset({'pos_embed', 'cls_token'})
# config -> (base weight decay, official rule, what is built)
RECIPES = {
    **{f'configs/cls/elsa/elsa-swin-{v}_{b}_in1k.py': (0.05, timm_rule(), 'model')
       for v, b in (('t', '8xb128'), ('s', '8xb128'), ('b', '16xb64'))},
    **{f'configs/cls/localvit/localvit-{v}_8xb128_in1k.py': (0.05, timm_rule(DEIT_SKIP), 'model')
       for v in ('tiny', 'tiny-se4', 'small')},
    'configs/cls/localvit/localvit-pvt-tiny_8xb128_in1k.py':
        (0.05, timm_rule(frozenset({'cls_token'})), 'model'),
    'configs/cls/localvit/localvit-t2t-7_8xb128_in1k.py':
        (0.05, timm_rule(frozenset({'cls_token'})), 'model'),
    'configs/cls/localvit/localvit-tnt-tiny_8xb128_in1k.py':
        (0.05, timm_rule(frozenset({'cls_token', 'patch_pos', 'pixel_pos'})), 'model'),
    # timm 0.3.2 ignores Swin's no_weight_decay_keywords: the bias tables are decayed
    'configs/cls/localvit/localvit-swin-tiny_8xb128_in1k.py':
        (0.05, timm_rule(frozenset({'absolute_pos_embed'})), 'model'),
    **{f'configs/cls/san/san{d}-{t}_8xb32_in1k.py': (1e-4, all_decayed, 'model')
       for d in (10, 15, 19) for t in ('pairwise', 'patchwise')},
    **{f'configs/cls/lesa/lesa-{a}_4xb32-95e_in1k.py': (8e-5, all_decayed, 'model')
       for a in ('r50', 'wrn50')},
    **{f'configs/det/{m}_elsa_swin_{v}_{s}.py': (0.05, elsa_detseg, 'backbone')
       for m in ('mask_rcnn', 'cascade_mask_rcnn') for v in 'ts' for s in ('1x', '3x')},
    # attention swaps inheriting the ELSA recipe
    'configs/det/mask_rcnn_elsa_swin_t_all_elsa_1x.py': (0.05, elsa_detseg, 'backbone'),
    'configs/det/mask_rcnn_swin_t_window_baseline_1x.py': (0.05, elsa_detseg, 'backbone'),
    'configs/det/mask_rcnn_lesa_r50.py': (1e-4, all_decayed, 'backbone'),
    'configs/det/htc_lesa_wrn50.py': (1e-4, all_decayed, 'backbone'),
    'configs/det/mask_rcnn_san19_patchwise_1x.py': (1e-4, all_decayed, 'backbone'),  # mmdet R-50
    'configs/det/mask_rcnn_localvit_pvt_1x.py': (1e-4, all_decayed, 'backbone'),  # PVT's recipe
    **{f'configs/seg/upernet_elsa_swin_{v}_160k.py': (0.01, elsa_detseg, 'backbone')
       for v in 'ts'},
    'configs/seg/upernet_lesa_r50_160k.py': (5e-4, all_decayed, 'backbone'),  # mmseg R-50
    'configs/seg/upernet_localvit_pvt_160k.py': (0.01, lsa_norm_keys, 'backbone'),
}


def published() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'configs').rglob('*.py')
                  if '_base_' not in p.parts and 'demo' not in p.parts)


def test_every_published_config_has_an_official_rule():
    assert sorted(RECIPES) == published()


def build_for_optimizer(cfg: Config, what: str):
    import torch.nn as nn
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.default_scope)
    registry = importlib.import_module(f'{cfg.default_scope}.registry').MODELS
    model_cfg = copy.deepcopy(cfg.model)
    with torch.device('meta'):  # names and shapes are all the constructor reads: no weights
        if what == 'model':
            return registry.build(model_cfg)
        holder = nn.Module()
        holder.backbone = registry.build(model_cfg.backbone)
        return holder


@pytest.mark.parametrize('path', sorted(RECIPES))
def test_weight_decay_matches_official_rule(path, load_config):
    from mmengine.optim import build_optim_wrapper

    base_wd, decayed, what = RECIPES[path]
    cfg = load_config(path)
    model = build_for_optimizer(cfg, what)
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    optim_cfg['type'] = 'OptimWrapper'  # AmpOptimWrapper needs a GPU; decay is the constructor's
    optimizer = build_optim_wrapper(model, optim_cfg).optimizer
    assert optimizer.defaults['weight_decay'] == pytest.approx(base_wd)
    wd_of = {id(p): g['weight_decay'] for g in optimizer.param_groups for p in g['params']}
    wrong = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue  # frozen stages, T2T's fixed tables: never updated
        want = base_wd if decayed(name, param) else 0.0
        if wd_of[id(param)] != pytest.approx(want):
            wrong.append(f'{name}: {wd_of[id(param)]} (official {want})')
    assert not wrong, f'{len(wrong)} parameters off the official rule, e.g. {wrong[:5]}'


def test_rule_tells_the_stage3_tables_apart():
    """The ELSA det/seg rule decays the window tables (official 'rb'), not the norms."""
    import torch
    p2, p1 = torch.zeros(169, 3), torch.zeros(3)
    assert elsa_detseg('stages.3.blocks.0.attn.relative_position_bias_table', p2)
    assert not elsa_detseg('stages.3.blocks.0.norm1.weight', p1)
    assert elsa_detseg('stages.0.blocks.0.attn.ghost_head', p2)


# --------------------------------------------------------------------------- seg TTA
ELSA_SEG = ['configs/seg/upernet_elsa_swin_t_160k.py', 'configs/seg/upernet_elsa_swin_s_160k.py']
AUG_TEST_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def aug_test_sizes(h: int, w: int) -> set:
    """mmseg 0.x ``--aug-test``: keep-ratio resize into (2048 r, 512 r), with and without flip.

    mmcv's rescale: factor min(long / max(h, w), short / min(h, w)), sizes rounded half up.
    """
    out = set()
    for r in AUG_TEST_RATIOS:
        long_side, short_side = int(2048 * r), int(512 * r)
        f = min(long_side / max(h, w), short_side / min(h, w))
        size = (int(h * f + 0.5), int(w * f + 0.5))
        out |= {(size, False), (size, True)}
    return out


@pytest.mark.parametrize('path', ELSA_SEG)
@pytest.mark.parametrize('hw', [(375, 500), (300, 2000), (683, 512)])
def test_elsa_seg_tta_is_the_official_aug_test(path, hw, load_config):
    from mmengine.registry import init_default_scope
    from mmseg.registry import TRANSFORMS

    cfg = load_config(path)
    init_default_scope('mmseg')
    assert cfg.tta_model.type == 'SegTTAModel'
    load_img, tta = cfg.tta_pipeline
    assert load_img.type == 'LoadImageFromFile' and tta.type == 'TestTimeAug'
    resizes, flips, *rest = tta.transforms
    assert [[t.type for t in group] for group in rest] == [['LoadAnnotations'], ['PackSegInputs']]
    h, w = hw
    got = set()
    for resize in resizes:
        for flip in flips:
            res = dict(img=np.zeros((h, w, 3), np.uint8), img_shape=(h, w), ori_shape=(h, w))
            for t in (resize, flip):
                res = TRANSFORMS.build(t)(res)
            got.add((res['img'].shape[:2], res['flip']))
    assert got == aug_test_sizes(h, w)
