"""ELSA attention and ELSA-Swin: math vs a re-statement, variants, counts, contract."""
import pytest
import torch
import torch.nn.functional as F

from lsa.models.backbones.elsa_swin import ELSASwin
from lsa.models.layers.elsa_attention import ELSAAttention
from lsa.models.layers.window_attention import ShiftWindowAttention
from lsa.registry import MODELS

MINI = {'embed_dims': 16, 'depths': (1, 1, 2, 1), 'num_heads': (1, 2, 2, 4), 'group_width': 4}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def elsa_restated(x, hw, m):
    """ELSA (spec B1/B3) written out tap by tap, without lsa.ops."""
    B, _, C = x.shape
    H, W = hw
    G, K, s, d = m.num_heads, m.kernel_size, m.stride, m.dilation
    Q, Cv = m.dim_qk, m.dim_v
    Cg, r = Cv // G, K // 2
    xm = x.transpose(1, 2).reshape(B, C, H, W)
    qkv = F.conv2d(xm, m.qkv.weight, m.qkv.bias)
    q, k, v = qkv[:, :Q], qkv[:, Q:2 * Q], qkv[:, 2 * Q:]
    had = q * k * m.scale
    if s > 1:
        had = F.avg_pool2d(had, s)
    conv0, conv2 = m.attn_gen[0], m.attn_gen[2]
    a = F.conv2d(had, conv0.weight, conv0.bias, padding=r * d, dilation=d, groups=Q // m.group_width)
    a = F.conv2d(F.gelu(a), conv2.weight, conv2.bias, groups=m.groups)
    Ho, Wo = H // s, W // s
    A = a.view(B, G, K * K, Ho, Wo).softmax(2)
    gh = m.ghost_head
    one, zero = torch.ones(G, Cg, K, K, dtype=x.dtype), torch.zeros(G, Cg, K, K, dtype=x.dtype)
    if m.lam != 0 and m.gamma != 0:
        M, D = gh[0].view(G, Cg, K, K) ** m.lam, gh[1].view(G, Cg, K, K) * m.gamma
    elif m.gamma != 0:
        M, D = one, gh.view(G, Cg, K, K) * m.gamma
    elif m.lam != 0:
        M, D = gh.view(G, Cg, K, K) ** m.lam, zero
    else:
        M, D = one, zero
    Vp = F.pad(v.view(B, G * Cg, H, W), (r * d,) * 4).view(B, G, Cg, H + 2 * r * d, W + 2 * r * d)
    out = x.new_zeros(B, G, Cg, Ho, Wo)
    for ky in range(K):
        for kx in range(K):
            patch = Vp[..., ky * d: ky * d + (Ho - 1) * s + 1: s, kx * d: kx * d + (Wo - 1) * s + 1: s]
            filt = A[:, :, None, ky * K + kx] * M[None, :, :, ky, kx, None, None] \
                + D[None, :, :, ky, kx, None, None]
            out = out + patch * filt
    out = out.reshape(B, Cv, Ho * Wo).transpose(1, 2)
    return out @ m.proj.weight.t() + m.proj.bias


@pytest.mark.parametrize('kw,hw', [
    (dict(lam=0, gamma=1), (9, 11)),               # ELSA-Swin setting
    (dict(lam=1, gamma=1, qk_scale=None), (8, 8)),  # both ghosts
    (dict(lam=2, gamma=0.5, dilation=2), (10, 7)),
    (dict(lam=0, gamma=0, kernel_size=3), (5, 6)),  # plain local attention
    (dict(lam=1, gamma=0, kernel_size=5, groups=2), (7, 7)),
    (dict(lam=0, gamma=1, stride=2, kernel_size=3), (9, 8)),
])
def test_elsa_attention_matches_restatement(kw, hw):
    kw = dict(dict(kernel_size=5, group_width=4), **kw)
    m = ELSAAttention(dim=12, num_heads=2, **kw).double()
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.normal_(0, 0.3)
            if name == 'ghost_head' and m.lam not in (0, 1, 2):
                p.abs_()
    x = torch.randn(2, hw[0] * hw[1], 12, dtype=torch.float64)
    y = m(x, hw)
    s = m.stride
    assert y.shape == (2, (hw[0] // s) * (hw[1] // s), 12)
    torch.testing.assert_close(y, elsa_restated(x, hw, m), rtol=1e-10, atol=1e-10)


def test_elsa_swin_setting_is_local_attention_plus_depthwise_conv():
    """lam=0, gamma=1 (spec C3): O = LocalAttention(V, A) + DepthwiseConv(V, ghost)."""
    m = ELSAAttention(dim=12, num_heads=3, kernel_size=3, group_width=4).double()
    B, H, W, K = 2, 6, 5, 3
    x = torch.randn(B, H * W, 12, dtype=torch.float64)
    xm = x.transpose(1, 2).reshape(B, 12, H, W)
    q, k, v = m.qkv(xm).split([m.dim_qk, m.dim_qk, 12], 1)
    A = m.attn_gen(q * k).view(B, 3, K * K, H * W).softmax(2)
    Vu = F.unfold(v, K, padding=1).view(B, 3, 4, K * K, H * W)
    O = (Vu * A.unsqueeze(2)).sum(3).view(B, 12, H, W)
    O = O + F.conv2d(v, m.ghost_head.view(12, 1, K, K), padding=1, groups=12)
    ref = m.proj(O.flatten(2).transpose(1, 2))
    torch.testing.assert_close(m(x, (H, W)), ref, rtol=1e-10, atol=1e-10)


def test_elsa_attention_registry_equals_direct_and_backward():
    cfg = dict(type='lsa.ELSAAttention', dim=24, num_heads=3, kernel_size=5, group_width=8)
    torch.manual_seed(3)
    a = MODELS.build(cfg)
    torch.manual_seed(3)
    b = ELSAAttention(24, 3, kernel_size=5, group_width=8)
    assert type(a) is ELSAAttention
    for hw in [(1, 1), (4, 9), (13, 6)]:
        x = torch.randn(2, hw[0] * hw[1], 24, requires_grad=True)
        ya = a(x, hw)
        torch.testing.assert_close(ya, b(x, hw), rtol=0, atol=0)
        ya.square().sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        for name, p in a.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        a.zero_grad()


def test_elsa_attention_widths_and_errors():
    # q/k width dim // 3 * 2 rounded up to group_width (ELSA-Swin-B stages 0-2; T stage 0)
    assert [ELSAAttention(c, h, group_width=8).dim_qk for c, h in
            [(128, 4), (256, 8), (512, 16)]] == [88, 176, 344]
    t0 = ELSAAttention(96, 3, group_width=4)
    assert t0.dim_qk == 64 and t0.attn_gen[0].groups == 16
    assert t0.attn_gen[2].out_channels == 49 * 3 and t0.scale == 1.0
    assert tuple(t0.ghost_head.shape) == (1, 96, 7, 7)
    assert tuple(ELSAAttention(12, 2, lam=1, gamma=1).ghost_head.shape) == (2, 1, 12, 7, 7)
    assert ELSAAttention(12, 2, lam=0, gamma=0).ghost_head is None
    with pytest.raises(ValueError, match='ELSAAttention: dim_v.*dim_v=96, num_heads=5'):
        ELSAAttention(96, 5)
    with pytest.raises(ValueError, match='kernel_size must be odd, got 4'):
        ELSAAttention(96, 3, kernel_size=4)
    with pytest.raises(ValueError, match='groups=5'):
        ELSAAttention(96, 3, groups=5)
    with pytest.raises(ValueError, match=r'expected \(B, 4\*4, 96\)'):
        t0(torch.randn(1, 15, 96), (4, 4))


@pytest.mark.parametrize('arch,total,det', [('tiny', 29_140_978, 28_373_322),
                                            ('small', 52_874_626, 52_106_970),
                                            ('base', 92_682_464, None)])
def test_param_counts(arch, total, det):
    with torch.device('meta'):
        cls = ELSASwin(arch=arch, out_indices=(3,))
        c3 = cls.stage_channels[3]
        # + the official classifier head (Linear C3 -> 1000); norm3 is the official final norm
        assert n_params(cls) + c3 * 1000 + 1000 == total
        if det is not None:  # det/seg backbone: norm0..3, no head
            assert n_params(ELSASwin(arch=arch)) == det


def test_default_layout_and_swaps():
    with torch.device('meta'):
        m = ELSASwin(arch='tiny', out_indices=(3,))
        kinds = [{type(b.attn) for b in s.blocks} for s in m.stages]
        assert kinds == [{ELSAAttention}] * 3 + [{ShiftWindowAttention}]
        assert [b.attn.shift_size for b in m.stages[3].blocks] == [0, 3]
        assert {b.attn.group_width for s in m.stages[:3] for b in s.blocks} == {4}
        assert {b.attn.dim_qk for b in m.stages[2].blocks} == {256}
        # ELSA everywhere: the arch's group width reaches stage 3 too
        allm = ELSASwin(arch='tiny', attn_cfgs=dict(type='lsa.ELSAAttention'))
        assert all(isinstance(b.attn, ELSAAttention) and b.attn.group_width == 4
                   for s in allm.stages for b in s.blocks)
        # window attention everywhere: plain Swin-T
        base = ELSASwin(arch='tiny', attn_cfgs=dict(type='lsa.ShiftWindowAttention'),
                        out_indices=(3,))
        assert n_params(base) + 769_000 == 28_288_354


@pytest.fixture(scope='module')
def tiny_det():
    torch.manual_seed(0)
    return ELSASwin(arch='tiny', out_indices=(0, 1, 2, 3), pad_small_map=True).eval()


@pytest.mark.parametrize('size,expect', [
    ((1, 3, 200, 333), [(96, 50, 84), (192, 25, 42), (384, 13, 21), (768, 7, 11)]),
    ((2, 3, 64, 64), [(96, 16, 16), (192, 8, 8), (384, 4, 4), (768, 2, 2)]),
    ((1, 3, 90, 50), [(96, 23, 13), (192, 12, 7), (384, 6, 4), (768, 3, 2)]),
])
def test_tiny_forward_det_form(size, expect, tiny_det):
    m = tiny_det
    assert m.out_channels == (96, 192, 384, 768) and m.out_strides == (4, 8, 16, 32)
    with torch.no_grad():
        outs = m(torch.randn(*size))
    assert [tuple(o.shape[1:]) for o in outs] == expect
    assert all(o.shape[0] == size[0] and torch.isfinite(o).all() for o in outs)


def test_elsa_in_all_four_stages_runs():
    m = ELSASwin(arch='tiny', attn_cfgs=dict(type='lsa.ELSAAttention'), out_indices=(2, 3))
    x = torch.randn(1, 3, 48, 80)
    outs = m(x)
    assert [tuple(o.shape) for o in outs] == [(1, 384, 3, 5), (1, 768, 2, 3)]
    outs[-1].sum().backward()
    assert m.stages[3].blocks[1].attn.ghost_head.grad is not None


def test_frozen_stages_norm_eval_with_cp():
    torch.manual_seed(0)
    a = ELSASwin(arch=MINI, drop_path_rate=0.0, frozen_stages=1, norm_eval=True)
    a.train()
    assert not a.patch_embed.training and not a.stages[0].training and not a.norm0.training
    assert all(not p.requires_grad for p in a.stages[0].parameters())
    assert all(p.requires_grad for p in a.stages[1].parameters())
    b = ELSASwin(arch=MINI, drop_path_rate=0.0, frozen_stages=1, with_cp=True)
    b.load_state_dict(a.state_dict())
    b.train()
    x = torch.randn(2, 3, 36, 52)
    ya, yb = a(x), b(x)
    for p, q in zip(ya, yb):
        torch.testing.assert_close(p, q)
    sum(o.sum() for o in ya).backward()
    sum(o.sum() for o in yb).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, msg=n)


def test_arch_errors():
    with pytest.raises(ValueError, match="missing \\['group_width'\\]"):
        ELSASwin(arch={'embed_dims': 16, 'depths': (1, 1, 1, 1), 'num_heads': (1, 1, 1, 1)})
    with pytest.raises(ValueError, match='ELSASwin: blocks keep the map size.*stride=2'):
        ELSASwin(arch=MINI, attn_cfgs=dict(type='lsa.ELSAAttention', stride=2))
    with pytest.raises(ValueError, match='default attn_cfgs are for 4 stages'):
        ELSASwin(arch=dict(MINI, depths=(1, 1), num_heads=(1, 2)))


@pytest.mark.parametrize('variant,total', [('t', 29_140_978), ('s', 52_874_626),
                                           ('b', 92_682_464)])
def test_mmpretrain_classifier_from_config(variant, total):
    pytest.importorskip('mmpretrain')
    import glob

    from mmengine.config import Config
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS

    path, = glob.glob(f'configs/cls/elsa/elsa-swin-{variant}_*in1k.py')
    cfg = Config.fromfile(path)
    with torch.device('meta'):
        model = PRETRAIN_MODELS.build(cfg.model)
    assert n_params(model) == total
    assert type(model.backbone) is ELSASwin and model.backbone.out_indices == (3,)


def test_runs_under_autocast():
    """AMP training (the cls configs use AmpOptimWrapper) mixes dtypes inside the block."""
    torch.manual_seed(0)
    m = ELSASwin(arch=MINI, out_indices=(0, 3)).eval()
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = m(x)
    for a, b in zip(ref, low):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b.float(), a, rtol=0.1, atol=0.1)


def test_elsa_attention_fuses_the_softmax_unless_dropout_is_active(monkeypatch):
    """The op's fused softmax is used in eval and without attention dropout, the separate
    softmax + dropout otherwise; both paths give the same values and gradients (fp64)."""
    import lsa.models.layers.elsa_attention as mod
    real, calls = mod.elsa, []

    def unfused(v, attn, mul, add, k, stride, dilation, softmax):  # record, then run unfused
        calls.append(softmax)
        return real(v, attn.softmax(1) if softmax else attn, mul, add, k, stride, dilation)

    torch.manual_seed(0)
    m = ELSAAttention(12, 2, kernel_size=3, group_width=4).double()
    x = torch.randn(2, 36, 12, dtype=torch.float64, requires_grad=True)
    out = m(x, (6, 6))
    grads = torch.autograd.grad(out.square().sum(), [x, *m.parameters()])
    monkeypatch.setattr(mod, 'elsa', unfused)
    ref = m(x, (6, 6))
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, *m.parameters()])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
    m.attn_drop.p = 0.5
    m(x, (6, 6))
    m.eval()
    m(x, (6, 6))
    assert calls == [True, False, True]
