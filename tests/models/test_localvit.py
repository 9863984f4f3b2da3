"""LocalViT: the locality feed-forward block and its DeiT / PVT / TNT hosts."""
import math

import pytest
import torch
import torch.nn.functional as F

import lsa.models  # noqa: F401
from lsa.models.backbones.localvit import resize_pos_embed
from lsa.models.layers.locality_ffn import LocalityFeedForward, ffn_residual
from lsa.registry import MODELS


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
    return model


# ---------------------------------------------------------------------------------------------
# Independent re-statement of the LFF (spec B1/B2), from the parameters alone.

def _bn(x, bn):
    return (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + 1e-5) \
        * bn.weight[:, None, None] + bn.bias[:, None, None]


def lff_reference(x, m, act):
    """x (B, C, H, W) -> branch output, written from the spec (eval-mode BN)."""
    if 'hs' in act:
        nl = lambda t: t * torch.clamp(t + 3, 0, 6) / 6  # noqa: E731
    else:  # the quirk: any other string is ReLU6
        nl = lambda t: torch.clamp(t, 0, 6)  # noqa: E731
    y = nl(_bn(torch.einsum('oc,bchw->bohw', m.fc1.weight[:, :, 0, 0], x), m.bn1))
    y = nl(_bn(F.conv2d(y, m.dwconv.weight, padding=1, groups=y.shape[1]), m.bn2))
    attn = act.split('+')[1] if '+' in act else None
    pooled = y.mean(dim=(2, 3))
    if attn == 'se':
        h = torch.clamp(pooled @ m.attn.fc1.weight.T + m.attn.fc1.bias, min=0)
        g = torch.clamp(h @ m.attn.fc2.weight.T + m.attn.fc2.bias + 3, 0, 6) / 6
        y = y * g[:, :, None, None]
    elif attn is not None:
        k = m.attn.conv.weight.shape[-1]
        w = m.attn.conv.weight[0, 0]
        padded = F.pad(pooled, (k // 2, k // 2))
        z = torch.stack([(padded[:, c:c + k] * w).sum(1) for c in range(pooled.shape[1])], 1)
        g = torch.sigmoid(z) if attn == 'eca' else torch.clamp(z + 3, 0, 6) / 6
        y = y * g[:, :, None, None]
    return _bn(torch.einsum('oc,bchw->bohw', m.fc2.weight[:, :, 0, 0], y), m.bn3)


@pytest.mark.parametrize('act', ['hs+se', 'hs', 'relu6', 'relu', 'hs+eca', 'hs+ecah'])
def test_lff_matches_functional_restatement(act):
    m = randomize_bn(LocalityFeedForward(16, 64, act=act, reduction=4)).eval()
    x = torch.randn(2, 16, 5, 7) * 4  # large values: ReLU vs ReLU6 would differ
    with torch.no_grad():
        ref = lff_reference(x, m, act)
        out = m(x)
        tok = m(x.flatten(2).transpose(1, 2), (5, 7))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tok, ref.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_lff_relu_string_means_relu6_and_int_codes():
    a = LocalityFeedForward(8, 16, act='relu')
    assert isinstance(a.act1, torch.nn.ReLU6) and isinstance(a.act2, torch.nn.ReLU6)
    b = LocalityFeedForward(8, 16, act='relu6')
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 8, 4, 4) * 10
    torch.testing.assert_close(a.eval()(x), b.eval()(x))
    # official integer codes: 1 relu6, 2 hs, 3 hs+se, 4 hs+eca, other hs+ecah
    expect = {1: ('relu6', None), 2: ('hswish', None), 3: ('hswish', 'se'),
              4: ('hswish', 'eca'), 5: ('hswish', 'ecah')}
    for code, (nl, attn) in expect.items():
        m = LocalityFeedForward(8, 16, act=code)
        assert (m.act_name, m.attn_name) == (nl, attn)


def test_lff_param_counts_and_widths():
    # spec B2: one LFF with in=out=192, ratio 4, reduction 4
    assert nparams(LocalityFeedForward(192, act='hs')) == 305_280
    assert nparams(LocalityFeedForward(192, act='relu6')) == 305_280
    assert nparams(LocalityFeedForward(192, act='hs+se', reduction=4)) == 601_152
    assert nparams(LocalityFeedForward(192, act='hs+eca')) == 305_285
    assert nparams(LocalityFeedForward(192, act='hs+ecah')) == 305_285
    # SE hidden = hidden // reduction, or given directly
    assert LocalityFeedForward(192, act='hs+se', reduction=192).attn.fc1.out_features == 4
    assert LocalityFeedForward(96, 384, se_channels=16).attn.fc1.out_features == 16
    # ECA kernel sizes (spec B1): 64 -> 3, 128..1536 -> 5, 2048/3072 -> 7
    for c, k in [(64, 3), (128, 5), (1536, 5), (2048, 7), (3072, 7)]:
        assert LocalityFeedForward(8, c, act='hs+eca').attn.conv.kernel_size == (k,)


def test_lff_registry_equals_direct_and_backward():
    cfg = dict(type='lsa.LocalityFeedForward', in_features=12, hidden_features=24, act='hs+se',
               reduction=4)
    torch.manual_seed(1)
    a = MODELS.build(cfg)
    torch.manual_seed(1)
    b = LocalityFeedForward(12, 24, act='hs+se', reduction=4)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k])
    for hw in [(3, 3), (4, 6), (7, 5)]:
        x = torch.randn(2, hw[0] * hw[1], 12, requires_grad=True)
        ya, yb = a(x, hw), b(x, hw)
        torch.testing.assert_close(ya, yb)
        assert ya.shape == x.shape
        ya.square().sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert all(p.grad is not None for p in a.parameters())


def test_lff_errors_name_the_block():
    with pytest.raises(ValueError, match='LocalityFeedForward.*foo'):
        LocalityFeedForward(8, act='hs+foo')
    with pytest.raises(ValueError, match='LocalityFeedForward.*dw_first'):
        LocalityFeedForward(8, 32, dw_first=True)
    with pytest.raises(ValueError, match='hw_shape'):
        LocalityFeedForward(8)(torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match='hw_shape'):
        LocalityFeedForward(8)(torch.randn(1, 5, 8), (2, 2))


def test_ffn_residual_class_token_bypass_and_mlp_wiring():
    lff = randomize_bn(LocalityFeedForward(8, 16)).eval()
    x = torch.randn(2, 1 + 12, 8)
    y = ffn_residual(lff, x, (3, 4), num_prefix=1)
    torch.testing.assert_close(y[:, :1], x[:, :1])  # class token untouched
    torch.testing.assert_close(y[:, 1:], x[:, 1:] + lff(x[:, 1:], (3, 4)))
    mlp = MODELS.build(dict(type='lsa.Mlp', in_features=8, hidden_features=16))
    norm = torch.nn.LayerNorm(8)
    torch.testing.assert_close(ffn_residual(mlp, x, (3, 4), 1, norm), x + mlp(norm(x)))


# ---------------------------------------------------------------------------------------------
# Hosts: whole-classifier parameter counts (backbone + Linear(C, 1000) head), 1000 classes.

CLASSIFIERS = [
    ('LocalViT', dict(arch='tiny'), 5_908_696),
    # T-SE4, S and Swin: see the config test below (same counts through mmpretrain)
    ('LocalViTPVT', dict(arch='tiny', out_type='cls_token', out_indices=3), 13_456_152),
    ('LocalViTTNT', dict(arch='tiny'), 6_261_064),
    ('LocalViT', dict(arch='deit-tiny', ffn_cfg=dict(type='lsa.Mlp')), 5_717_416),
    ('LocalViTPVT', dict(arch='tiny', ffn_cfg=dict(type='lsa.Mlp'), out_type='cls_token',
                         out_indices=3), 13_229_288),
    ('LocalViTTNT', dict(arch='tiny', ffn_cfg=dict(type='lsa.Mlp')), 6_069_784),
    ('LocalViTTNT', dict(arch='small'), 24_137_848),
    ('LocalViTT2T', dict(), 4_385_386),
    ('LocalViTT2T', dict(ffn_cfg=dict(type='lsa.Mlp')), 4_310_222),  # T2T-ViT-7
]


@pytest.mark.parametrize('name,kwargs,expected', CLASSIFIERS)
def test_whole_classifier_param_counts(name, kwargs, expected):
    m = MODELS.build(dict(type=f'lsa.{name}', **kwargs))
    c = m.out_channels[-1]
    assert nparams(m) + c * 1000 + 1000 == expected


def test_deit_host_outputs_and_non_square_sizes():
    m = MODELS.build(dict(type='lsa.LocalViT', arch=dict(embed_dims=192, depth=2, num_heads=4,
                                                         mlp_ratio=2, se_channels=4),
                          img_size=64, out_type='featmap', out_indices=(0, -1))).eval()
    assert m.out_channels == (192, 192) and m.out_strides == (16, 16)
    for hw in [(64, 64), (48, 80), (50, 33)]:
        outs = m(torch.randn(1, 3, *hw))
        exp = (math.ceil(hw[0] / 16), math.ceil(hw[1] / 16))
        assert [o.shape for o in outs] == [torch.Size([1, 192, *exp])] * 2
    cls = MODELS.build(dict(type='lsa.LocalViT', arch='tiny-se4', img_size=32)).eval()
    (feat,) = cls(torch.randn(2, 3, 32, 48))
    assert feat.shape == (2, 192)


def test_pvt_multiscale_any_size():
    m = MODELS.build(dict(type='lsa.LocalViTPVT', img_size=64)).eval()
    assert m.out_channels == (64, 128, 320, 512) and m.out_strides == (4, 8, 16, 32)
    for hw in [(64, 64), (70, 45)]:
        outs = m(torch.randn(1, 3, *hw))
        h, w = hw
        for o, c, s in zip(outs, m.out_channels, m.out_strides):
            h, w = math.ceil(h / (2 if s > 4 else 4)), math.ceil(w / (2 if s > 4 else 4))
            assert o.shape == (1, c, h, w)


def test_tnt_host_sizes():
    arch = dict(embed_dims=24, inner_dims=6, depth=2, num_heads=2, inner_num_heads=2,
                mlp_ratio=2, se_channels=4)
    m = MODELS.build(dict(type='lsa.LocalViTTNT', arch=arch, img_size=32, out_type='featmap',
                          out_indices=(0, 1))).eval()
    outs = m(torch.randn(1, 3, 48, 32))
    assert [o.shape for o in outs] == [torch.Size([1, 24, 3, 2])] * 2
    (cls,) = MODELS.build(dict(type='lsa.LocalViTTNT', arch=arch, img_size=32)).eval()(
        torch.randn(2, 3, 40, 40))
    assert cls.shape == (2, 24)


def test_resize_pos_embed():
    pos = torch.randn(1, 1 + 12, 8)
    assert resize_pos_embed(pos, (3, 4), (3, 4), 1) is pos
    out = resize_pos_embed(pos, (3, 4), (6, 5), 1)
    assert out.shape == (1, 1 + 30, 8)
    torch.testing.assert_close(out[:, 0], pos[:, 0])
    grid = pos[0, 1:].reshape(3, 4, 8).permute(2, 0, 1)[None]
    ref = F.interpolate(grid, size=(6, 5), mode='bicubic', align_corners=False)
    torch.testing.assert_close(out[0, 1:], ref[0].permute(1, 2, 0).reshape(30, 8))
    const = torch.ones(1, 12, 4)
    torch.testing.assert_close(resize_pos_embed(const, (3, 4), (5, 7), 0, 'bilinear'),
                               torch.ones(1, 35, 4))


def test_pos_embed_used_at_native_size_and_interpolated_elsewhere():
    m = MODELS.build(dict(type='lsa.LocalViT', arch=dict(embed_dims=32, depth=1, num_heads=2,
                                                         mlp_ratio=2, se_channels=4),
                          img_size=32)).eval()
    x = torch.randn(1, 3, 32, 32)
    base = m(x)[0]
    with torch.no_grad():
        m.pos_embed[:, 1:] += torch.randn_like(m.pos_embed[:, 1:])  # matters at native size
    assert not torch.allclose(m(x)[0], base)
    assert m(torch.randn(1, 3, 64, 48))[0].shape == (1, 32)  # ... and is resized elsewhere


@pytest.mark.parametrize('name,kw,n_stages', [
    ('LocalViT', dict(arch=dict(embed_dims=32, depth=3, num_heads=2, mlp_ratio=2,
                                se_channels=4)), 3),
    ('LocalViTPVT', dict(), 4),
    ('LocalViTT2T', dict(arch=dict(embed_dims=32, depth=3, num_heads=2, mlp_ratio=2,
                                   se_channels=4), token_dims=16), 3),
])
def test_frozen_stages_and_norm_eval(name, kw, n_stages):
    m = MODELS.build(dict(type=f'lsa.{name}', frozen_stages=2, norm_eval=True, **kw))
    m.train()
    frozen = [m.stage_modules(0), m.stage_modules(1)] + ([m.stem_modules()])
    for mods in frozen:
        for mod in mods:
            assert not mod.training
            assert all(not p.requires_grad for p in mod.parameters())
    for mod in m.stage_modules(2):
        assert all(p.requires_grad for p in mod.parameters())
    for p in m.stage_params(-1) + m.stage_params(0) + m.stage_params(1):
        assert not p.requires_grad
    bns = [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    assert bns and all(not b.training for b in bns)  # norm_eval


@pytest.mark.parametrize('name,kw', [
    ('LocalViT', dict(arch=dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2,
                                se_channels=4), img_size=32, out_type='featmap')),
    ('LocalViTPVT', dict(arch=dict(embed_dims=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                                   num_heads=[1, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                                   sr_ratios=[4, 2, 1, 1], se_channels=[2, 2, 2, 2]),
                         img_size=32)),
    ('LocalViTTNT', dict(arch=dict(embed_dims=24, inner_dims=6, depth=2, num_heads=2,
                                   inner_num_heads=2, mlp_ratio=2, se_channels=4),
                         img_size=32)),
    ('LocalViTT2T', dict(arch=dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2,
                                   se_channels=4), token_dims=16, img_size=32)),
])
def test_with_cp_same_result(name, kw):
    torch.manual_seed(3)
    a = MODELS.build(dict(type=f'lsa.{name}', **kw))
    b = MODELS.build(dict(type=f'lsa.{name}', with_cp=True, **kw))
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = torch.randn(2, 3, 32, 32)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = a(xa), b(xb)
    for u, v in zip(ya, yb):
        torch.testing.assert_close(u, v)
    sum(y.sum() for y in ya).backward()
    sum(y.sum() for y in yb).backward()
    torch.testing.assert_close(xa.grad, xb.grad)


def test_bad_arguments():
    with pytest.raises(ValueError, match='LocalViT: unknown arch'):
        MODELS.build(dict(type='lsa.LocalViT', arch='huge'))
    with pytest.raises(ValueError, match='custom arch'):
        MODELS.build(dict(type='lsa.LocalViT', arch=dict(embed_dims=32)))
    with pytest.raises(ValueError, match='num_heads'):
        MODELS.build(dict(type='lsa.LocalViT', arch=dict(embed_dims=30, depth=1, num_heads=4,
                                                         mlp_ratio=2, se_channels=4)))
    with pytest.raises(ValueError, match="out_type='cls_token' needs out_indices=3"):
        MODELS.build(dict(type='lsa.LocalViTPVT', out_type='cls_token', out_indices=(0, 3)))


CONFIG_COUNTS = {
    'localvit-tiny_8xb128_in1k.py': 5_908_696, 'localvit-tiny-se4_8xb128_in1k.py': 9_376_168,
    'localvit-small_8xb128_in1k.py': 22_433_176, 'localvit-pvt-tiny_8xb128_in1k.py': 13_456_152,
    'localvit-tnt-tiny_8xb128_in1k.py': 6_261_064,
    'localvit-swin-tiny_8xb128_in1k.py': 29_079_010,
    'localvit-t2t-7_8xb128_in1k.py': 4_385_386,
}


@pytest.mark.parametrize('name,expected', sorted(CONFIG_COUNTS.items()))
def test_config_classifier_counts_and_converted_weights_load(name, expected):
    pytest.importorskip('mmpretrain.models')
    from pathlib import Path

    from mmengine.config import Config
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS

    from lsa.converters.localvit import convert_localvit, localvit_to_official
    root = Path(__file__).resolve().parents[2]
    cfg = Config.fromfile(str(root / 'configs/cls/localvit' / name))
    model = PRETRAIN_MODELS.build(cfg.model)
    assert nparams(model) == expected
    # an official-layout checkpoint converted by localvit2lsa loads strictly
    sd = convert_localvit(localvit_to_official(model.state_dict()))
    model.load_state_dict(sd, strict=True)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 48), mode='tensor').shape == (1, 1000)


def test_swin_host_lff_wiring_multiscale_and_baseline_count():
    arch = dict(embed_dims=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4))
    m = MODELS.build(dict(type='lsa.LocalViTSwin', arch=arch)).eval()
    blk = m.stages[1].blocks[1]
    assert isinstance(blk.ffn, LocalityFeedForward) and blk.ffn.residual
    assert isinstance(blk.norm2, torch.nn.Identity) and blk.ffn.attn.fc1.out_features == 16
    x = torch.randn(1, 12 * 9, 32)
    # block = attention residual, then x + LFF(x) with no norm and no drop path
    a = x + blk.attn(blk.norm1(x), (12, 9))
    blk.ffn.residual = False
    branch = blk.ffn.forward_nchw(a.transpose(1, 2).reshape(1, 32, 12, 9))
    blk.ffn.residual = True
    torch.testing.assert_close(blk(x, (12, 9)), a + branch.flatten(2).transpose(1, 2))
    outs = m(torch.randn(1, 3, 70, 45))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 18, 12), (1, 32, 9, 6), (1, 64, 5, 3),
                                              (1, 128, 3, 2)]
    assert m.out_strides == (4, 8, 16, 32)
    base = MODELS.build(dict(type='lsa.LocalViTSwin', ffn_cfg=dict(type='lsa.Mlp'),
                             out_indices=3))
    assert nparams(base) + 768 * 1000 + 1000 == 28_288_354


# ---------------------------------------------------------------------------------------------
# LocalViT-T2T (spec B3.5, B3.6, B6): performer token layers, sinusoid, any input size.

T2T_SMALL = dict(type='lsa.LocalViTT2T', arch=dict(embed_dims=32, depth=2, num_heads=2,
                                                   mlp_ratio=2, se_channels=4), token_dims=16)


def test_t2t_trainable_counts_and_lff_wiring():
    m = MODELS.build(dict(type='lsa.LocalViTT2T'))
    head = 256 * 1000 + 1000
    # official main.py prints 4,330,858: lsa also freezes the two unused norm2 (2 x 128)
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) + head == 4_330_858 - 256
    for layer, dim in [(m.tokens_to_token.attention1, 147), (m.tokens_to_token.attention2, 576)]:
        assert layer.kqv.weight.shape == (192, dim) and layer.w.shape == (32, 64)
        assert isinstance(layer.ffn, LocalityFeedForward)
        assert layer.ffn.hidden_features == 64 and (layer.ffn.act_name, layer.ffn.attn_name) == (
            'hswish', None)
        assert not layer.w.requires_grad and not any(
            p.requires_grad for p in layer.norm2.parameters())
        # w = orthogonal rows scaled by sqrt(m)
        torch.testing.assert_close(layer.w @ layer.w.T, 32 * torch.eye(32), atol=1e-4, rtol=0)
    assert not m.pos_embed.requires_grad and m.pos_embed.shape == (1, 197, 256)
    assert m.tokens_to_token.project.weight.shape == (256, 576)
    for blk in m.blocks:
        assert isinstance(blk.ffn, LocalityFeedForward) and blk.norm2 is None
        assert blk.ffn.hidden_features == 512 and blk.ffn.attn.fc1.out_features == 4
        assert blk.attn.qkv.bias is None and blk.norm1.eps == 1e-5
    base = MODELS.build(dict(type='lsa.LocalViTT2T', ffn_cfg=dict(type='lsa.Mlp')))
    assert sum(p.numel() for p in base.parameters() if p.requires_grad) + head == 4_255_694
    assert all(p.requires_grad for p in base.tokens_to_token.attention1.norm2.parameters())


def test_t2t_sinusoid_table_matches_formula():
    m = MODELS.build(dict(type='lsa.LocalViTT2T'))
    pos = torch.arange(197, dtype=torch.float64)[:, None]
    j = torch.arange(256, dtype=torch.float64)
    angle = pos / 10000 ** (2 * torch.div(j, 2, rounding_mode='floor') / 256)
    ref = torch.empty(197, 256, dtype=torch.float64)
    ref[:, 0::2], ref[:, 1::2] = torch.sin(angle[:, 0::2]), torch.cos(angle[:, 1::2])
    torch.testing.assert_close(m.pos_embed[0], ref.float())


def performer_reference(layer, x, hw):
    """One official token layer from the spec, in einsum form (eval mode, LFF wiring)."""
    z = F.layer_norm(x, x.shape[-1:], layer.norm1.weight, layer.norm1.bias)
    k, q, v = (z @ layer.kqv.weight.T + layer.kqv.bias).split(layer.out_dim, -1)
    m = layer.w.shape[0]

    def phi(t):
        return torch.exp(torch.einsum('btd,md->btm', t, layer.w)
                         - (t * t).sum(-1, keepdim=True) / 2) / math.sqrt(m)

    kp, qp = phi(k), phi(q)
    d = torch.einsum('btm,bm->bt', qp, kp.sum(1))[..., None]
    y = torch.einsum('btm,bdm->btd', qp, torch.einsum('btd,btm->bdm', v, kp)) / (d + 1e-8)
    y = v + y @ layer.proj.weight.T + layer.proj.bias
    grid = y.transpose(1, 2).reshape(y.shape[0], -1, *hw)
    return y + lff_reference(grid, layer.ffn, 'hs').flatten(2).transpose(1, 2)


def test_t2t_performer_layer_matches_restatement_and_soft_splits():
    m = randomize_bn(MODELS.build(T2T_SMALL)).eval()
    t2t = m.tokens_to_token
    with torch.no_grad():
        for layer in (t2t.attention1, t2t.attention2):
            layer.norm1.weight.normal_(1, 0.3)
            layer.kqv.bias.normal_(0, 0.3)
            layer.norm2.weight.fill_(5.0)  # unused: must not change anything
    x = torch.randn(2, 3, 45, 38)
    with torch.no_grad():
        # soft split 0: unfold(7, stride 4, pad 2) -> (11, 9) grid for 45 x 38
        tok = F.unfold(x, 7, padding=2, stride=4).transpose(1, 2)
        assert tok.shape == (2, 11 * 9, 147)
        a1 = performer_reference(t2t.attention1, tok, (11, 9))
        torch.testing.assert_close(t2t.attention1(tok, (11, 9)), a1, atol=1e-5, rtol=1e-5)
        tok = F.unfold(a1.transpose(1, 2).reshape(2, 16, 11, 9), 3, padding=1, stride=2)
        a2 = performer_reference(t2t.attention2, tok.transpose(1, 2), (6, 5))
        tok = F.unfold(a2.transpose(1, 2).reshape(2, 16, 6, 5), 3, padding=1, stride=2)
        ref = tok.transpose(1, 2) @ t2t.project.weight.T + t2t.project.bias
        out, hw = t2t(x)
    assert hw == (3, 3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_t2t_forward_224_other_sizes_and_pos_embed_interpolation():
    m = MODELS.build(dict(type='lsa.LocalViTT2T')).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 224, 224))[0].shape == (2, 256)
    small = MODELS.build(dict(T2T_SMALL, img_size=64, out_type='featmap',
                              out_indices=(0, 1))).eval()
    assert small.patch_resolution == (4, 4) and small.out_strides == (16, 16)
    x = torch.randn(1, 3, 100, 75)  # -> 25 x 19 -> 13 x 10 -> 7 x 5 tokens
    with torch.no_grad():
        outs = small(x)
        assert [o.shape for o in outs] == [torch.Size([1, 32, 7, 5])] * 2
        # the stored 4x4 sinusoid grid is interpolated bicubically (class slot kept)
        tok, hw = small.tokens_to_token(x)
        grid = small.pos_embed[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(7, 5), mode='bicubic', align_corners=False)
        pos = torch.cat([small.pos_embed[:, :1], grid.flatten(2).transpose(1, 2)], 1)
        t = torch.cat([small.cls_token, tok], 1) + pos
        for blk in small.blocks:
            t = blk(t, hw)
        t = small.norm(t)
        torch.testing.assert_close(outs[1], t[:, 1:].transpose(1, 2).reshape(1, 32, 7, 5))
        # at the native size the fixed table is used as is (and it matters)
        x64 = torch.randn(1, 3, 64, 64)
        y = small(x64)[1]
        assert y.shape == (1, 32, 4, 4)
        small.pos_embed[:, 1:] += 1.0
        assert not torch.allclose(small(x64)[1], y)
    cls = MODELS.build(dict(T2T_SMALL, img_size=64)).eval()
    assert cls(torch.randn(2, 3, 80, 48))[0].shape == (2, 32)
    with pytest.raises(ValueError, match="LocalViTT2T: out_type"):
        MODELS.build(dict(T2T_SMALL, out_type='avg'))
    with pytest.raises(ValueError, match='LocalViTT2T: unknown arch'):
        MODELS.build(dict(type='lsa.LocalViTT2T', arch='t2t-14'))


def test_hswish_gradient_is_autograds_bitwise_and_keeps_only_the_input():
    from lsa.models.layers.locality_ffn import HSwish
    x = torch.randn(4096) * 4
    x[:5] = torch.tensor([-3.0, 3.0, 0.0, -6.0, 6.0])  # the kinks of relu6(x + 3)
    g = torch.randn(4096)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = HSwish()(a), b * (torch.nn.functional.relu6(b + 3.0) / 6.0)
    assert torch.equal(ya, yb)
    assert torch.equal(torch.autograd.grad(ya, a, g)[0], torch.autograd.grad(yb, b, g)[0])
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        HSwish()(a)
    assert len(saved) == 1 and saved[0] is a


def test_inplace_hswish_is_bitwise_and_used_only_where_it_is_safe(monkeypatch):
    import lsa.models.layers.locality_ffn as lff_mod
    from lsa.models.layers.locality_ffn import _HSWISH_SLICE, HSwish, _hswish_
    x = torch.randn(2 * _HSWISH_SLICE + 7) * 4  # two whole slices and a short one
    x[:5] = torch.tensor([-3.0, 3.0, 0.0, -6.0, 6.0])
    expect = x * (torch.nn.functional.relu6(x + 3.0) / 6.0)
    y = x.clone()
    assert _hswish_(y) is y and torch.equal(y, expect)
    calls = []
    monkeypatch.setattr(lff_mod, '_hswish_', lambda t: calls.append(t) or _hswish_(t))
    # eval without gradients: in place on the branch's own tensors, bitwise the out-of-place
    # (autograd) path; every layout of the branch
    for kw in (dict(act='hs+se'), dict(act='hs'), dict(act='hs', with_dwconv=False),
               dict(act='hs', hidden_features=16, dw_first=True), dict(act='relu6')):
        lff = LocalityFeedForward(16, **{'hidden_features': 64, **kw}).eval()
        for bn in (m for m in lff.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
        x = torch.randn(2, 35, 16)
        calls.clear()
        with torch.no_grad():
            y = lff(x, (5, 7))
        expect_calls = 0 if kw['act'] == 'relu6' else 1 + (lff.dwconv is not None)
        assert len(calls) == expect_calls, kw
        assert all(c.data_ptr() != x.data_ptr() for c in calls)
        ref = lff(x.clone().requires_grad_(), (5, 7))
        assert torch.equal(y, ref.detach()), kw
    # hooked or replaced activations run as modules (act1 after fc1, act2 after the dwconv)
    lff = LocalityFeedForward(16, 64, act='hs').eval()
    seen = []
    lff.act1.register_forward_hook(lambda m, i, o: seen.append('act1'))
    lff.act2 = torch.nn.GELU()
    calls.clear()
    with torch.no_grad():
        y = lff(torch.randn(2, 35, 16), (5, 7))
    assert seen == ['act1'] and calls == []
    # traced: the module path (the sliced loop would be unrolled for the traced size)
    lff = LocalityFeedForward(16, 64, act='hs', residual=True).eval()

    class Grid(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lff = lff

        def forward(self, t):
            return self.lff(t, (5, 7))

    with torch.no_grad():
        traced = torch.jit.trace(Grid(), torch.randn(1, 35, 16))
        x4 = torch.randn(4, 35, 16)
        torch.testing.assert_close(traced(x4), lff(x4, (5, 7)))
    assert isinstance(LocalityFeedForward(16, 64).act1, HSwish)
