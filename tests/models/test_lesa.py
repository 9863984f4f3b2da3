"""LESA block and LESA-ResNet backbone.

The block is checked against a functional re-statement of the spec
(spec_lesa_localvit.md A1.3/A1.4) written below from the *released* state-dict
layout (A6), so the same check covers the converter's key mapping.
"""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lsa.converters.lesa import convert_lesa_block
from lsa.models.backbones.lesa_resnet import LESAResNet
from lsa.models.layers.lesa_attention import LESAAttention
from lsa.registry import MODELS

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(base_channels=16, stage_blocks=(1, 1, 2, 2), widen_factor=1)
DCN = dict(type='DCN', deform_groups=1, fallback_on_stride=False)


# ----------------------------------------------------------------------------- re-statement
def _bn(x, sd, name, training):
    """BatchNorm over dim 1 from released keys ``name.{weight,bias,running_*}``."""
    return F.batch_norm(x, sd[name + '.running_mean'].clone(), sd[name + '.running_var'].clone(),
                        sd[name + '.weight'], sd[name + '.bias'], training, 0.1, 1e-5)


def lesa_reference(sd, x, groups=8, fmap=None, training=False):
    """LESA forward from the released keys (A1.3), stride 1, no DCN; x: (N, C, H, W).

    Classification PE: E[c, i, j] = relative[c, i - j + L - 1] over raster tokens.
    Detection PE: qr[(x,y),(i,j)] = q . (rel_width[clip(j-y)] + rel_height[clip(i-x)]),
    offsets clipped to the table (no clipping happens at the design size).
    """
    N, C, H, W = x.shape
    L, P, G = H * W, sd['bn_x.weight'].shape[0], groups
    dqk, dv = P // G // 2, P // G
    u = F.conv2d(x, sd['x_transform.0.weight'], padding=1, groups=G)
    u = _bn(F.conv2d(u, sd['x_transform.1.weight']), sd, 'bn_x', training)
    xf = x.reshape(N, C, L)
    qkv = _bn(F.conv1d(xf, sd['qkv_transform.weight']), sd, 'bn_qkv', training)
    qkv = qkv.reshape(N, G, 2 * dqk + dv, L)
    q, k, v = qkv[:, :, :dqk], qkv[:, :, dqk:2 * dqk], qkv[:, :, 2 * dqk:]
    qk = torch.einsum('ngci,ngcj->ngij', q, k)
    ii, jj = torch.meshgrid(torch.arange(L), torch.arange(L), indexing='ij')
    if 'relative' in sd:
        E = sd['relative'][:, (ii - jj + L - 1).reshape(-1)].reshape(-1, L, L)
        Eq, Ek, Ev = E[:dqk], E[dqk:2 * dqk], E[2 * dqk:]
        qr = torch.einsum('ngci,cij->ngij', q, Eq)
        kr = torch.einsum('ngcj,cji->ngij', k, Ek)
        S = _bn(torch.cat([qk, qr, kr], 1), sd, 'bn_similarity', training)
        logits = S[:, :G] + S[:, G:2 * G] + S[:, 2 * G:]
    else:
        fh = fw = fmap
        xq, yq = ii // W, ii % W  # query row / col
        xk, yk = jj // W, jj % W  # key row / col
        rh = sd['rel_height'][(xk - xq).clamp(-(fh - 1), fh - 1) + fh - 1]  # L, L, d
        rw = sd['rel_width'][(yk - yq).clamp(-(fw - 1), fw - 1) + fw - 1]
        qr = torch.einsum('ngci,ijc->ngij', q, rh + rw)
        S = _bn(torch.cat([qk, qr], 1), sd, 'bn_similarity', training)
        logits = S[:, :G] + S[:, G:]
    A = logits.softmax(-1)
    sv = torch.einsum('ngij,ngcj->ngci', A, v)
    if 'relative' in sd:
        sve = torch.einsum('ngij,cij->ngci', A, Ev)
        stacked = torch.stack([sv, sve], 3).reshape(N, 2 * P, L)  # channel 2 * (g*dv + c) + s
        b = _bn(stacked, sd, 'bn_output', training).reshape(N, P, 2, L).sum(2)
    else:
        b = _bn(sv.reshape(N, P, L), sd, 'bn_output', training)
    b = b.reshape(N, P, H, W)
    r = F.relu(torch.cat([u, b], 1))
    r = F.relu(_bn(F.conv2d(r, sd['reasoning.1.weight']), sd, 'reasoning.2', training))
    gate = torch.sigmoid(_bn(F.conv2d(r, sd['projection.0.weight']), sd, 'projection.1', training))
    return gate * b + u


def released_block_sd(P, fmap, pe, groups=8, seed=0):
    """Random released-layout state dict of one LESA module (shapes from A6.1 / A6.2)."""
    g = torch.Generator().manual_seed(seed)
    dqk, dv, L = P // groups // 2, P // groups, fmap * fmap

    def r(*s, scale=0.3):
        return torch.randn(*s, generator=g) * scale

    def bn(c):
        return {'weight': 1 + r(c, scale=0.2), 'bias': r(c, scale=0.2),
                'running_mean': r(c, scale=0.1), 'running_var': 0.5 + torch.rand(c, generator=g),
                'num_batches_tracked': torch.tensor(7)}

    sd = {}
    if pe == 'cls':
        sd['relative'] = r(2 * dqk + dv, 2 * L - 1, scale=0.5)
        i = torch.arange(L)
        sd['flatten_index'] = (i[:, None] - i[None, :] + L - 1).reshape(-1)
    else:
        sd['rel_height'] = r(2 * fmap - 1, dqk, scale=0.5)
        sd['rel_width'] = r(2 * fmap - 1, dqk, scale=0.5)
    sd['qkv_transform.weight'] = r(2 * P, P, 1, scale=P ** -0.5)
    sd.update({f'bn_qkv.{k}': v for k, v in bn(2 * P).items()})
    sd.update({f'bn_similarity.{k}': v for k, v in bn((3 if pe == 'cls' else 2) * groups).items()})
    sd.update({f'bn_output.{k}': v for k, v in bn(2 * P if pe == 'cls' else P).items()})
    sd['x_transform.0.weight'] = r(P, P // groups, 3, 3, scale=(9 * P / groups) ** -0.5)
    sd['x_transform.1.weight'] = r(P, P, 1, 1, scale=P ** -0.5)
    sd.update({f'bn_x.{k}': v for k, v in bn(P).items()})
    sd['reasoning.1.weight'] = r(P, 2 * P, 1, 1, scale=(2 * P) ** -0.5)
    sd.update({f'reasoning.2.{k}': v for k, v in bn(P).items()})
    sd['projection.0.weight'] = r(P, P, 1, 1, scale=P ** -0.5)
    sd.update({f'projection.1.{k}': v for k, v in bn(P).items()})
    return sd


def _block_from_released(sd, P, fmap, pe):
    blk = LESAAttention(P, fmap_size=fmap, pe_type=pe)
    blk.load_state_dict(convert_lesa_block(sd), strict=True)
    return blk


# ----------------------------------------------------------------------------- block
@pytest.mark.parametrize('pe', ['cls', 'det'])
def test_block_matches_restatement_eval(pe):
    P, fmap = 32, 6
    sd = released_block_sd(P, fmap, pe)
    blk = _block_from_released(sd, P, fmap, pe).eval()
    x = torch.randn(2, P, fmap, fmap)
    with torch.no_grad():
        out = blk(x)
    ref = lesa_reference(sd, x, fmap=fmap)
    assert out.shape == (2, P, fmap, fmap)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('pe', ['cls', 'det'])
def test_block_matches_restatement_train_fp64(pe):
    """Train mode (batch statistics) and gradients, in fp64 to compare tightly."""
    P, fmap = 16, 5
    sd = {k: (v.double() if v.is_floating_point() else v)
          for k, v in released_block_sd(P, fmap, pe).items()}
    blk = _block_from_released(sd, P, fmap, pe).double().train()
    x = torch.randn(3, P, fmap, fmap, dtype=torch.float64, requires_grad=True)
    out = blk(x)
    x2 = x.detach().clone().requires_grad_(True)
    ref = lesa_reference(sd, x2, fmap=fmap, training=True)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(out)
    (gx,) = torch.autograd.grad((out * w).sum(), x)
    (gx2,) = torch.autograd.grad((ref * w).sum(), x2)
    torch.testing.assert_close(gx, gx2, rtol=1e-9, atol=1e-10)
    # the running statistics moved as the spec says (momentum 0.1, unbiased variance)
    assert not torch.equal(blk.logit_norm.running_mean, sd['bn_similarity.running_mean'])


@pytest.mark.parametrize('pe, training', [('cls', True), ('cls', False), ('det', True),
                                          ('det', False)])
def test_block_param_grads_match_restatement_fp64(pe, training):
    """Gradients of every parameter (position tables included) equal the spec's, in fp64.

    Eval mode with gradients is the detection fine-tuning case (``norm_eval``).
    """
    P, fmap = 16, 5
    sd = {k: (v.double().requires_grad_(not k.split('.')[-1].startswith(('running', 'num')))
              if v.is_floating_point() else v)
          for k, v in released_block_sd(P, fmap, pe, seed=1).items()}
    blk = _block_from_released({k: v.detach() for k, v in sd.items()}, P, fmap, pe).double()
    blk.train(training)
    x = torch.randn(3, P, fmap, fmap, dtype=torch.float64)
    w = torch.randn(3, P, fmap, fmap, dtype=torch.float64)
    (blk(x) * w).sum().backward()
    ref_sd = {k: v.detach().clone() for k, v in sd.items()}  # lesa_reference updates no stats
    (lesa_reference(ref_sd | {k: v for k, v in sd.items() if v.requires_grad}, x, fmap=fmap,
                    training=training) * w).sum().backward()
    grads = convert_lesa_block({k: (v.grad if v.requires_grad else v) for k, v in sd.items()})
    for name, p in blk.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize('L', [1, 2, 7])
def test_skew_is_relative_to_absolute(L):
    from lsa.models.layers.lesa_attention import skew
    r = torch.randn(2, 3, L, 2 * L - 1)
    i, j = torch.meshgrid(torch.arange(L), torch.arange(L), indexing='ij')
    assert torch.equal(skew(r), r[:, :, i, j - i + L - 1])
    assert skew(r).untyped_storage().data_ptr() == r.untyped_storage().data_ptr()  # a view
    with pytest.raises(ValueError, match='skew: expected'):
        skew(torch.randn(L, 2 * L))


@pytest.mark.parametrize('hw', [(4, 4), (3, 7), (9, 5), (12, 12)])
def test_det_block_any_size_clips_offsets(hw):
    """Design size 6: smaller maps use the central table part, larger ones clip offsets."""
    P, fmap = 16, 6
    sd = released_block_sd(P, fmap, 'det')
    blk = _block_from_released(sd, P, fmap, 'det').eval()
    x = torch.randn(1, P, *hw)
    with torch.no_grad():
        out = blk(x)
    assert out.shape == (1, P, *hw)
    torch.testing.assert_close(out, lesa_reference(sd, x, fmap=fmap), rtol=1e-5, atol=1e-5)


def test_det_block_stride_pools_after_attention():
    P, fmap = 16, 8
    sd = released_block_sd(P, fmap, 'det')
    blk = LESAAttention(P, fmap_size=fmap, pe_type='detection_qr', stride=2).eval()
    blk.load_state_dict(convert_lesa_block(sd))
    x = torch.randn(2, P, 8, 12)
    with torch.no_grad():
        out = blk(x)
    torch.testing.assert_close(out, F.avg_pool2d(lesa_reference(sd, x, fmap=fmap), 2),
                               rtol=1e-5, atol=1e-5)


def test_cls_block_rejects_other_sizes():
    blk = LESAAttention(32, fmap_size=6, pe_type='classification').eval()
    for hw in [(5, 5), (4, 9), (6, 7)]:  # (4, 9) has the same token count: still refused
        with pytest.raises(ValueError, match=r'built for a 6x6 map.*cannot serve a'):
            blk(torch.randn(1, 32, *hw))


def test_block_registry_equals_direct():
    kw = dict(in_channels=32, out_channels=32, fmap_size=(4, 6), pe_type='det', stride=2)
    torch.manual_seed(3)
    direct = LESAAttention(**kw).eval()
    torch.manual_seed(3)
    built = MODELS.build(dict(type='lsa.LESAAttention', **kw)).eval()
    assert type(built) is LESAAttention
    for (k1, v1), (k2, v2) in zip(direct.state_dict().items(), built.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.randn(2, 32, 8, 10)
    with torch.no_grad():
        assert torch.equal(direct(x), built(x))


def test_block_param_counts_match_released():
    """A1.5: per-block counts measured on the official module."""
    def n(m):
        return sum(p.numel() for p in m.parameters())
    assert n(LESAAttention(256, fmap_size=14)) == 495_600
    assert n(LESAAttention(512, fmap_size=14)) == 1_925_040
    # the released detection counts include the DCN offset conv (Cin -> 18, 3x3, bias)
    assert n(LESAAttention(256, fmap_size=64, pe_type='det')) == 515_602 - (18 * 256 * 9 + 18)
    assert n(LESAAttention(512, fmap_size=32, pe_type='det')) == 1_960_946 - (18 * 512 * 9 + 18)


def test_block_forward_backward_and_with_cp():
    torch.manual_seed(0)
    a = LESAAttention(32, fmap_size=8, pe_type='det', with_cp=False).train()
    b = LESAAttention(32, fmap_size=8, pe_type='det', with_cp=True).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 32, 5, 7)
    oa, ob = a(x), b(x)
    torch.testing.assert_close(oa, ob)
    oa.square().mean().backward()
    ob.square().mean().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert pa.grad is not None and pa.grad.abs().sum() > 0, name
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('kwargs, match', [
    (dict(in_channels=30, groups=8), 'divisible'),
    (dict(in_channels=32, out_channels=40, groups=8), 'divisible'),
    (dict(in_channels=32, pe_type='axial'), 'pe_type'),
    (dict(in_channels=32, df_kernel_size=(1, 2)), 'odd'),
    (dict(in_channels=32, df_kernel_size=(1,)), 'one entry per fusion conv'),
])
def test_block_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f'LESAAttention.*{match}'):
        LESAAttention(**kwargs)


# ----------------------------------------------------------------------------- backbone
def _n(m, trainable=False):
    return sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable)


@pytest.mark.parametrize('arch', ['r50', 'wrn50'])
def test_full_archs_both_forms(arch):
    """Released widths; small inputs (cls: tables for a 32x32 input; det: non-square)."""
    cls = LESAResNet(arch, form='cls', stage_spatial_res=(8, 4, 2, 2), out_indices=(0, 1, 2, 3))
    assert cls.out_channels == (256, 512, 1024, 2048) and cls.out_strides == (4, 8, 16, 16)
    det = LESAResNet(arch, form='det', out_indices=(0, 1, 2, 3))
    assert det.out_strides == (4, 8, 16, 32)
    with torch.no_grad():
        outs = cls.eval()(torch.randn(1, 3, 32, 32))
        assert [tuple(o.shape[1:]) for o in outs] == [
            (256, 8, 8), (512, 4, 4), (1024, 2, 2), (2048, 2, 2)]
        outs = det.eval()(torch.randn(1, 3, 32, 64))
        assert [tuple(o.shape[1:]) for o in outs] == [
            (256, 8, 16), (512, 4, 8), (1024, 2, 4), (2048, 1, 2)]
    # released layout: 8 LESA blocks (layer3.1-5, layer4.0-2), layer4 LESA at full res
    lesa = [n for n, m in det.named_modules() if isinstance(m, LESAAttention)]
    assert lesa == [f'layer3.{i}.conv2' for i in range(1, 6)] + [
        f'layer4.{i}.conv2' for i in range(3)]
    assert det.layer4[0].conv2.fmap_size == (64, 64) and det.layer4[0].conv2.stride == 2
    assert det.layer4[1].conv2.rel_h.shape == ((63, 32) if arch == 'r50' else (63, 64))
    assert cls.layer4[0].conv2.rel_pos.shape[1] == 2 * 4 - 1


@pytest.mark.parametrize('form, sizes', [('det', [(64, 64), (96, 64), (80, 112), (37, 53)]),
                                         ('cls', [(64, 64)])])
def test_tiny_forms_sizes(form, sizes):
    net = LESAResNet(TINY, form=form, stage_spatial_res=(16, 8, 4, 4),
                     out_indices=(0, 1, 2, 3)).eval()
    assert net.out_channels == (64, 128, 256, 512)
    for h, w in sizes:
        with torch.no_grad():
            outs = net(torch.randn(1, 3, h, w))
        for o, c, s in zip(outs, net.out_channels, net.out_strides):
            exp = (h, w)
            for _ in range({4: 2, 8: 3, 16: 4, 32: 5}[s]):
                exp = ((exp[0] + 1) // 2, (exp[1] + 1) // 2)
            assert tuple(o.shape) == (1, c, *exp)


def test_cls_form_wrong_input_size_clear_error():
    net = LESAResNet(TINY, form='cls', stage_spatial_res=(16, 8, 4, 4)).eval()
    with pytest.raises(ValueError, match='built for a 4x4 map'):
        net(torch.randn(1, 3, 96, 96))


def test_stage_block_choice_and_plain_baseline():
    net = LESAResNet(TINY, form='det', stage_with_attn=(False, True, True, True),
                     stage_with_first_conv=(True, False, False, False))
    lesa = [n for n, m in net.named_modules() if isinstance(m, LESAAttention)]
    assert lesa == ['layer2.0.conv2', 'layer3.0.conv2', 'layer3.1.conv2', 'layer4.0.conv2',
                    'layer4.1.conv2']
    # no attention anywhere: the ResNet-50 / WRN-50-2 classifiers' own parameter counts
    head = 2048 * 1000 + 1000
    plain = LESAResNet('r50', stage_with_attn=(False,) * 4)
    assert _n(plain) + head == 25_557_032
    assert not any(isinstance(m, LESAAttention) for m in plain.modules())
    assert _n(LESAResNet('wrn50', stage_with_attn=(False,) * 4)) + head == 68_883_240


def test_frozen_stages_and_norm_eval():
    net = LESAResNet(TINY, form='det', frozen_stages=2, norm_eval=True)
    net.train()
    for m in [net.conv1, net.bn1, net.layer1, net.layer2]:
        assert all(not p.requires_grad for p in m.parameters())
        assert not m.training
    assert all(p.requires_grad for p in net.layer3.parameters())
    assert net.layer3.training
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(not m.training for m in bns)  # LESA's own BNs included
    lesa_bn = net.layer4[1].conv2.logit_norm
    before = lesa_bn.running_mean.clone()
    net(torch.randn(2, 3, 64, 64))
    assert torch.equal(before, lesa_bn.running_mean)
    net2 = LESAResNet(TINY, form='det', frozen_stages=-1, norm_eval=False).train()
    assert all(m.training for m in net2.modules())


def test_with_cp_same_result():
    torch.manual_seed(0)
    a = LESAResNet(TINY, form='det', out_indices=(0, 1, 2, 3)).train()
    b = LESAResNet(TINY, form='det', out_indices=(0, 1, 2, 3), with_cp=True).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 80, requires_grad=True)
    oa, ob = a(x), b(x)
    for u, v in zip(oa, ob):
        torch.testing.assert_close(u, v)
    sum(o.square().mean() for o in oa).backward()
    sum(o.square().mean() for o in ob).backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_released_init():
    net = LESAResNet(TINY, form='cls', stage_spatial_res=(16, 8, 4, 4))
    blk = net.layer4[0].conv2
    # qkv ~ N(0, 1/Cin) (not kaiming), rel_pos ~ N(0, 1/d_v), BN = (1, 0)
    assert abs(blk.qkv.weight.std().item() - blk.in_channels ** -0.5) < 0.02
    assert abs(blk.rel_pos.std().item() - blk.v_dim ** -0.5) < 0.05
    assert torch.equal(blk.logit_norm.weight, torch.ones(3 * 8))
    zero = LESAResNet(TINY, zero_init_residual=True)
    assert all(float(b.bn3.weight.abs().sum()) == 0 for layer in
               (zero.layer1, zero.layer4) for b in layer)


def test_bad_backbone_arguments():
    with pytest.raises(ValueError, match='LESAResNet: arch must be one of'):
        LESAResNet('r101')
    with pytest.raises(ValueError, match='exactly the keys'):
        LESAResNet(dict(base_channels=16, stage_blocks=(1, 1, 1, 1)))
    with pytest.raises(ValueError, match='form must be one of'):
        LESAResNet(TINY, form='seg')
    with pytest.raises(ValueError, match='strides needs 4 entries'):
        LESAResNet(TINY, strides=(1, 2, 2))


def test_dcn_path_builds_with_mmcv():
    pytest.importorskip('mmcv.ops')
    from mmcv.ops import DeformConv2dPack
    net = LESAResNet(TINY, form='det', dcn=DCN, stage_with_dcn=(False, True, True, True),
                     out_indices=(0, 1, 2, 3)).eval()
    assert isinstance(net.layer2[0].conv2, DeformConv2dPack)
    assert isinstance(net.layer4[1].conv2.local_conv[0], DeformConv2dPack)
    assert net.layer4[1].conv2.local_conv[0].groups == 8
    assert isinstance(net.layer1[0].conv2, nn.Conv2d)
    assert DCN == dict(type='DCN', deform_groups=1, fallback_on_stride=False)  # not mutated
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 96, 128))
    assert tuple(outs[3].shape) == (1, 512, 3, 4)
    # released Mask R-CNN backbone count (spec A4.2), frozen stem + c2 (frozen_stages=1)
    full = LESAResNet('r50', form='det', dcn=DCN, stage_with_dcn=(False, True, True, True),
                      frozen_stages=1)
    assert (_n(full), _n(full, trainable=True)) == (22_064_842, 21_839_498)


@pytest.mark.parametrize('cfg, count', [('lesa-r50_4xb32-95e_in1k', 23_777_512),
                                        ('lesa-wrn50_4xb32-95e_in1k', 61_145_896)])
def test_classifier_param_counts_from_config(cfg, count):
    pytest.importorskip('mmpretrain')
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    config = Config.fromfile(str(ROOT / 'configs' / 'cls' / 'lesa' / f'{cfg}.py'))
    init_default_scope('mmpretrain')
    model = PRETRAIN_MODELS.build(config.model)
    assert _n(model) == count
