"""SAN: the attention block, the bottleneck, the backbone and the classifiers from the configs."""
import copy
import os.path as osp
import types
import warnings

import pytest
import torch
import torch.nn as nn

import lsa.models  # noqa: F401  (registers the blocks)
from lsa.models.backbones.san import SAN
from lsa.models.layers.san_attention import SANAttention, SANBottleneck
from lsa.registry import MODELS

warnings.filterwarnings('ignore', message='lsa.ops')  # reference fallback without lsa._C

CFG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs', 'cls', 'san')
# whole classifier (backbone + 2048 -> 1000 fc), as counted from the official model
PARAMS = {
    ('san10', 'pairwise'): 10_531_848, ('san10', 'patchwise'): 11_841_124,
    ('san15', 'pairwise'): 14_065_436, ('san15', 'patchwise'): 16_181_310,
    ('san19', 'pairwise'): 17_596_156, ('san19', 'patchwise'): 20_518_470,
}
LAYERS = {'san10': (2, 1, 2, 4, 1), 'san15': (3, 2, 3, 5, 2), 'san19': (3, 3, 4, 6, 3)}
TINY = dict(widths=(32, 32, 64, 64, 96), layers=(1, 2, 1, 1, 1), kernels=(3, 3, 3, 5, 3))
SA_TYPES = ('pairwise', 'patchwise')


# --------------------------------------------------------------------------------------------
# An independent re-statement of the SAN block math (spec A1-A5), written with explicit
# reflect indices and per-tap slices (no F.unfold, no F.pad, no lsa.ops).
# --------------------------------------------------------------------------------------------
def reflect_index(L, p):
    i = torch.arange(-p, L + p)
    i = torch.where(i < 0, -i, i)
    return torch.where(i >= L, 2 * (L - 1) - i, i)


def taps(x, k, d=1):
    """(N, C, H, W) -> (N, C, K, H, W): tap kk = kh*k + kw of pixel (h, w) reads the reflected
    input at (h - p + kh*d, w - p + kw*d)."""
    H, W = x.shape[-2:]
    p = d * (k - 1) // 2
    xp = x[:, :, reflect_index(H, p)][:, :, :, reflect_index(W, p)]
    return torch.stack([xp[:, :, kh * d:kh * d + H, kw * d:kw * d + W]
                        for kh in range(k) for kw in range(k)], 2)


def conv1x1(x, conv, dim=1):
    y = torch.movedim(torch.movedim(x, dim, -1) @ conv.weight.flatten(1).T, -1, dim)
    if conv.bias is not None:
        shape = [1] * y.dim()
        shape[dim] = -1
        y = y + conv.bias.view(shape)
    return y


def batchnorm(x, bn, training):
    dims = [i for i in range(x.dim()) if i != 1]
    if training:  # statistics over every position of the (N, C, ...) tensor
        mean, var = x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)
    else:
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean, var = bn.running_mean.view(shape), bn.running_var.view(shape)
    shape = [1, -1] + [1] * (x.dim() - 2)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def gamma_mlp(t, g, training):
    t = batchnorm(t, g.norm1, training).relu()
    t = batchnorm(conv1x1(t, g.conv1), g.norm2, training).relu()
    return conv1x1(t, g.conv2)


def san_attention_restated(m, x, training=False):
    N, _, H, W = x.shape
    k, K = m.kernel_size, m.kernel_size ** 2
    x1, x2, x3 = conv1x1(x, m.phi), conv1x1(x, m.psi), conv1x1(x, m.beta)
    if m.sa_type == 'pairwise':
        xs = torch.linspace(-1, 1, W, dtype=x.dtype)
        ys = torch.linspace(-1, 1, H, dtype=x.dtype)
        coords = torch.stack([xs.repeat(H, 1), ys.view(H, 1).repeat(1, W)])[None]
        pos = conv1x1(coords, m.pos_enc)  # 1, 2, H, W
        rel = x1.unsqueeze(2) - taps(x2, k, m.dilation)  # N, rel, K, H, W
        rel_pos = (pos.unsqueeze(2) - taps(pos, k, m.dilation)).expand(N, -1, -1, -1, -1)
        t = torch.cat([rel, rel_pos], 1).flatten(3)  # N, rel + 2, K, HW
        w = gamma_mlp(t, m.gamma, training).softmax(2)  # N, Cw, K, HW
    else:
        patch = taps(x2, k, m.dilation).reshape(N, -1, 1, H * W)  # channel c*K + kk
        t = torch.cat([x1.reshape(N, -1, 1, H * W), patch], 1)
        w = gamma_mlp(t, m.gamma, training).view(N, -1, K, H * W)  # o -> (o // K, o % K)
    Cw = w.shape[1]
    v = taps(x3, k, m.dilation).flatten(3)  # N, C, K, HW
    idx = torch.arange(x3.shape[1]) % Cw  # value channel c uses weight channel c % Cw
    return (v * w[:, idx]).sum(2).view(N, -1, H, W)


def randomise_bn(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.weight.data.uniform_(0.5, 1.5, generator=gen)
            mod.bias.data.normal_(0, 0.3, generator=gen)
            mod.running_mean.normal_(0, 0.3, generator=gen)
            mod.running_var.uniform_(0.5, 1.5, generator=gen)
    return model


# --------------------------------------------------------------------------------------------
# SANAttention / SANBottleneck
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('sa_type', SA_TYPES)
@pytest.mark.parametrize('k,dilation,hw', [(3, 1, (7, 9)), (5, 1, (6, 5)), (3, 2, (5, 8)),
                                           (7, 1, (4, 4))])
@pytest.mark.parametrize('training', [False, True])
def test_attention_matches_restatement(sa_type, k, dilation, hw, training):
    m = randomise_bn(SANAttention(32, 16, kernel_size=k, sa_type=sa_type, dilation=dilation))
    m = m.double().train(training)
    x = torch.randn(2, 32, *hw, dtype=torch.float64)
    expected = san_attention_restated(m, x, training)
    torch.testing.assert_close(m(x), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('sa_type', SA_TYPES)
def test_bottleneck_matches_restatement(sa_type):
    blk = randomise_bn(SANBottleneck(64, kernel_size=3, attn_cfg=dict(sa_type=sa_type)))
    blk = blk.double().eval()
    x = torch.randn(2, 64, 6, 7, dtype=torch.float64)
    a = san_attention_restated(blk.attn, batchnorm(x, blk.norm1, False).relu())
    expected = x + conv1x1(batchnorm(a, blk.norm2, False).relu(), blk.proj)
    torch.testing.assert_close(blk(x), expected, rtol=1e-10, atol=1e-12)
    assert blk.attn.out_channels == 16 and blk.attn.rel_channels == 4


@pytest.mark.parametrize('sa_type', SA_TYPES)
def test_attention_registry_equals_direct(sa_type):
    kwargs = dict(in_channels=48, out_channels=24, kernel_size=5, sa_type=sa_type,
                  share_planes=4, rel_channels=5)
    torch.manual_seed(3)
    direct = SANAttention(**kwargs)
    torch.manual_seed(3)
    built = MODELS.build(dict(type='lsa.SANAttention', **kwargs))
    assert type(built) is SANAttention
    for (ka, va), (kb, vb) in zip(direct.state_dict().items(), built.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x = torch.randn(2, 48, 9, 6)
    torch.testing.assert_close(direct.eval()(x), built.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize('sa_type', SA_TYPES)
@pytest.mark.parametrize('hw', [(5, 5), (8, 11), (13, 6)])
def test_attention_forward_backward(sa_type, hw):
    m = SANAttention(32, 16, kernel_size=5, sa_type=sa_type)
    x = torch.randn(2, 32, *hw, requires_grad=True)
    y = m(x)
    assert y.shape == (2, 16, *hw)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_attention_param_layout():
    pair = SANAttention(256, 64, kernel_size=7, sa_type='pairwise')
    patch = SANAttention(256, 64, kernel_size=7, sa_type='patchwise')
    # spec A5: stage-1 blocks are 42,450 / 53,496 parameters including bn1, bn2 and proj
    extra = 2 * 256 + 2 * 64 + 64 * 256 + 256
    assert sum(p.numel() for p in pair.parameters()) + extra == 42_450
    assert sum(p.numel() for p in patch.parameters()) + extra == 53_496
    assert pair.gamma.norm1.num_features == 18 and pair.gamma.conv2.out_channels == 8
    assert patch.gamma.norm1.num_features == 800 and patch.gamma.conv2.out_channels == 392
    assert not hasattr(patch, 'pos_enc') and pair.pos_enc.weight.shape == (2, 2, 1, 1)


def test_attention_patchwise_weights_unnormalised_pairwise_softmax():
    x = torch.randn(1, 32, 6, 6)
    for sa_type, normalised in (('pairwise', True), ('patchwise', False)):
        w = SANAttention(32, 16, kernel_size=3, sa_type=sa_type).eval().attention_weights(x)
        assert w.shape == (1, 2, 9, 36)
        assert torch.allclose(w.sum(2), torch.ones(1, 2, 36)) == normalised


@pytest.mark.parametrize('kwargs,match', [
    (dict(sa_type='foo'), 'sa_type'),
    (dict(kernel_size=4), 'kernel_size'),
    (dict(out_channels=20), 'share_planes'),
    (dict(in_channels=8), 'rel_channels'),
    (dict(dilation=0), 'dilation'),
])
def test_attention_bad_arguments(kwargs, match):
    args = dict(in_channels=32, out_channels=16, kernel_size=3, sa_type='pairwise')
    args.update(kwargs)
    with pytest.raises(ValueError, match=match) as info:
        SANAttention(**args)
    assert 'SANAttention' in str(info.value)


@pytest.mark.parametrize('sa_type', SA_TYPES)
def test_attention_small_input_error(sa_type):
    m = SANAttention(32, 16, kernel_size=7, sa_type=sa_type)
    with pytest.raises(ValueError, match=r'3x8 is too small.*>= 4'):
        m(torch.randn(1, 32, 3, 8))
    assert m(torch.randn(1, 32, 4, 8)).shape == (1, 16, 4, 8)


# --------------------------------------------------------------------------------------------
# SAN backbone
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', ['san10', 'san15', 'san19'])
@pytest.mark.parametrize('sa_type', SA_TYPES)
def test_classifier_from_config_param_count(arch, sa_type):
    pytest.importorskip('mmpretrain')
    from mmengine.config import Config
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS

    cfg = Config.fromfile(osp.join(CFG_DIR, f'{arch}-{sa_type}_8xb32_in1k.py'))
    assert cfg.default_scope == 'mmpretrain'
    with torch.device('meta'):
        model = PRETRAIN_MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[(arch, sa_type)]
    backbone = model.backbone
    assert isinstance(backbone, SAN) and backbone.sa_type == sa_type
    assert tuple(len(s.blocks) for s in backbone.stages) == LAYERS[arch]
    assert backbone.out_channels == (2048,) and model.head.fc.in_features == 2048
    block = backbone.stages[1].blocks[0]
    assert block.attn.kernel_size == 7 and backbone.stages[0].blocks[0].attn.kernel_size == 3
    assert block.attn.sa_type == sa_type and block.attn.share_planes == 8


@pytest.mark.parametrize('arch', ['san10', 'san15', 'san19'])
@pytest.mark.parametrize('sa_type', SA_TYPES)
@pytest.mark.parametrize('hw', [(224, 224), (128, 160), (200, 333)])
def test_backbone_shapes_all_variants(arch, sa_type, hw):
    # full-size variants traced on the meta device (shapes only; the numerics of the same
    # blocks are checked on real tensors below and in test_attention_matches_restatement)
    with torch.device('meta'):
        model = SAN(arch=arch, sa_type=sa_type, out_indices=(0, 1, 2, 3, 4))
        outs = model(torch.empty(2, 3, *hw))
    H, W = hw
    expect = [(2, c, H // s, W // s) for c, s in zip((64, 256, 512, 1024, 2048),
                                                      (2, 4, 8, 16, 32))]
    assert [tuple(o.shape) for o in outs] == expect
    assert model.out_channels == (64, 256, 512, 1024, 2048)
    assert model.out_strides == (2, 4, 8, 16, 32)


@pytest.mark.parametrize('sa_type', SA_TYPES)
def test_backbone_real_forward_san10(sa_type):
    model = SAN(arch=f'san10-{sa_type}', out_indices=(1, 2, 3, 4)).eval()
    assert model.sa_type == sa_type
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 128, 160))
    assert [tuple(o.shape) for o in outs] == [(1, 256, 32, 40), (1, 512, 16, 20),
                                              (1, 1024, 8, 10), (1, 2048, 4, 5)]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('sa_type', SA_TYPES)
@pytest.mark.parametrize('hw', [(64, 64), (64, 97), (101, 75)])
def test_backbone_tiny_forward_backward(sa_type, hw):
    model = SAN(arch=TINY, sa_type=sa_type, out_indices=(1, 2, 3, 4))
    x = torch.randn(1, 3, *hw, requires_grad=True)
    outs = model(x)
    H, W = hw
    assert [tuple(o.shape) for o in outs] == [(1, c, H // s, W // s) for c, s in
                                              zip((32, 64, 64, 96), (4, 8, 16, 32))]
    assert model.out_channels == (32, 64, 64, 96) and model.out_strides == (4, 8, 16, 32)
    sum(o.mean() for o in outs).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_backbone_out_indices_order_and_negative():
    model = SAN(arch=TINY, out_indices=(-1, 1)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [96, 32] == list(model.out_channels)
    assert model.out_indices == (4, 1)


def test_backbone_small_input_error():
    model = SAN(arch='san10')
    assert model.min_input_size == 128
    with torch.device('meta'):
        model = SAN(arch='san10')
        with pytest.raises(ValueError, match=r'112x224 is too small.*>= 128'):
            model(torch.empty(1, 3, 112, 224))
        assert model(torch.empty(1, 3, 128, 128))[0].shape == (1, 2048, 4, 4)
    # only the stages that run count: stage 1 (k=7, stride 4) needs 16 px
    assert SAN(arch='san10', out_indices=(1,)).min_input_size == 16


def test_backbone_bad_arch():
    with pytest.raises(ValueError, match='unknown arch'):
        SAN(arch='san50')
    with pytest.raises(ValueError, match='missing'):
        SAN(arch=dict(widths=(32,) * 5, layers=(1,) * 5))
    with pytest.raises(ValueError, match='sa_type'):
        SAN(arch=TINY, sa_type='dotproduct')


def test_frozen_stages():
    model = SAN(arch=TINY, frozen_stages=2, out_indices=(1, 2, 3, 4))
    model.train()
    frozen = [model.stem, model.stages[0], model.stages[1]]
    for mod in frozen:
        assert all(not m.training for m in mod.modules())
        assert all(not p.requires_grad for p in mod.parameters())
    for mod in model.stages[2:]:
        assert all(m.training for m in mod.modules())
        assert all(p.requires_grad for p in mod.parameters())
    # frozen BN statistics do not move in training mode
    before = model.stages[1].norm.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.stages[1].norm.running_mean, before)
    assert not torch.equal(model.stages[2].norm.running_mean, torch.zeros(64))


def test_norm_eval():
    model = SAN(arch=TINY, norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert model.training and model.stages[0].blocks[0].attn.training
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize('sa_type', SA_TYPES)
def test_with_cp_same_result(sa_type):
    ref = SAN(arch=TINY, sa_type=sa_type, out_indices=(1, 3, 4))
    cp = copy.deepcopy(ref)
    cp.with_cp = True
    x = torch.randn(1, 3, 64, 80)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    outs_a, outs_b = ref(xa), cp(xb)
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    sum(o.sum() for o in outs_a).backward()
    sum(o.sum() for o in outs_b).backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-6, atol=1e-7)
    for (n, pa), (_, pb) in zip(ref.named_parameters(), cp.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-5, atol=1e-6, msg=n)


def test_backbone_registry_and_attn_cfg_swap():
    built = MODELS.build(dict(type='lsa.SAN', arch=TINY, sa_type='patchwise'))
    assert isinstance(built, SAN)
    assert all(b.attn.sa_type == 'patchwise' for s in built.stages for b in s.blocks)
    # an attn_cfg for SANAttention without sa_type picks up the backbone's sa_type
    model = SAN(arch=TINY, sa_type='patchwise', attn_cfg=dict(type='lsa.SANAttention',
                                                              share_planes=4))
    attn = model.stages[2].blocks[0].attn
    assert attn.sa_type == 'patchwise' and attn.share_planes == 4


class _DepthwiseConvAttention(nn.Module):
    """A stand-in attention: a k x k depthwise + 1x1 conv (the ResNet-like baseline)."""

    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__()
        self.dw = nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2,
                            groups=in_channels)
        self.pw = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        return self.pw(self.dw(x))


def test_backbone_attention_swappable_by_config():
    name = 'SANTestDepthwiseConvAttention'
    if name not in MODELS.module_dict:
        MODELS.register_module(name=name, module=_DepthwiseConvAttention)
    model = SAN(arch=TINY, attn_cfg=dict(type=f'lsa.{name}'), out_indices=(0, 4))
    blocks = [b for s in model.stages for b in s.blocks]
    assert all(isinstance(b.attn, _DepthwiseConvAttention) for b in blocks)
    assert blocks[0].attn.dw.kernel_size == (3, 3) and blocks[-2].attn.dw.kernel_size == (5, 5)
    outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 32, 48), (1, 96, 2, 3)]


def test_config_loss_is_the_official_smooth_loss():
    """Official smooth_loss: target 0.9, every other class 0.1 / (K - 1), mean over the batch."""
    pytest.importorskip('mmpretrain')
    from mmengine.config import Config
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    from mmpretrain.structures import DataSample

    cfg = Config.fromfile(osp.join(CFG_DIR, 'san10-pairwise_8xb32_in1k.py'))
    cfg.model.backbone.arch = TINY
    cfg.model.head.in_channels = TINY['widths'][-1]
    model = PRETRAIN_MODELS.build(cfg.model).eval()
    x = torch.randn(2, 3, 64, 64)
    labels = [3, 999]
    loss = model.loss(x, [DataSample().set_gt_label(t) for t in labels])['loss']
    logp = model(x, mode='tensor').log_softmax(1)
    target = torch.full_like(logp, 0.1 / 999)
    target[0, 3] = target[1, 999] = 0.9
    torch.testing.assert_close(loss, -(target * logp).sum(1).mean())


# --------------------------------------------------------------------------------------------
# The fused paths (default in eval) against the unfused composition (fused=False)
# --------------------------------------------------------------------------------------------
def fused_and_unfused(k, dilation=1, dtype=torch.float64, momentum=0.1, sa_type='pairwise'):
    torch.manual_seed(k * 10 + dilation)
    fused = randomise_bn(SANAttention(32, 16, kernel_size=k, dilation=dilation,
                                      sa_type=sa_type, fused=True)).to(dtype)
    for bn in (fused.gamma.norm1, fused.gamma.norm2):
        bn.momentum = momentum
    unfused = copy.deepcopy(fused)
    unfused.fused = False
    return fused, unfused


def assert_group_close(got, want, rtol, names):
    scale = max(w.abs().max().item() for w in want)  # zero-in-exact-math grads are noise
    for name, a, b in zip(names, got, want):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale,
                                   msg=lambda m, name=name: f'{name}: {m}')


def check_fused_steps(fused, unfused, x, training, rtol, steps=2):
    """Outputs, input and parameter gradients, and BN buffers after each of `steps` calls."""
    fused.train(training)
    unfused.train(training)
    names = ['input'] + [n for n, _ in fused.named_parameters()]
    for _ in range(steps):
        xa, xb = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
        ya, yb = fused(xa), unfused(xb)
        assert_group_close([ya], [yb], rtol, ['output'])
        g = torch.randn_like(yb)
        ga = torch.autograd.grad(ya, [xa, *fused.parameters()], g)
        gb = torch.autograd.grad(yb, [xb, *unfused.parameters()], g)
        assert_group_close(ga, gb, rtol, names)
        sa, sb = fused.state_dict(), unfused.state_dict()
        assert list(sa) == list(sb)
        for key in sa:
            if key.endswith('num_batches_tracked'):
                assert sa[key] == sb[key], key
            else:
                torch.testing.assert_close(sa[key], sb[key], rtol=rtol, atol=rtol, msg=key)


@pytest.mark.parametrize('sa_type', SA_TYPES)
@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('k,dilation,n,hw', [(3, 1, 2, (7, 9)), (7, 1, 1, (11, 8)),
                                             (7, 1, 2, (4, 5)), (3, 2, 2, (6, 7)),
                                             (3, 1, 1, (13, 11))])
def test_fused_attention_equals_unfused_fp64(training, k, dilation, n, hw, sa_type):
    fused, unfused = fused_and_unfused(k, dilation, sa_type=sa_type)
    x = torch.randn(n, 32, *hw, dtype=torch.float64)
    check_fused_steps(fused, unfused, x, training, 1e-10)
    if training:
        assert fused.gamma.norm1.num_batches_tracked == 2


@pytest.mark.parametrize('sa_type', SA_TYPES)
def test_fused_attention_cumulative_momentum_and_non_contiguous_input(sa_type):
    fused, unfused = fused_and_unfused(5, momentum=None, sa_type=sa_type)
    x = torch.randn(2, 9, 7, 32, dtype=torch.float64).permute(0, 3, 1, 2)  # channels-last
    assert not x.is_contiguous()
    check_fused_steps(fused, unfused, x, True, 1e-10, steps=3)


@pytest.mark.parametrize('sa_type', SA_TYPES)
@pytest.mark.parametrize('training', [False, True])
def test_fused_attention_close_to_unfused_fp32(training, sa_type):
    """fp32: outputs and gradients to 1e-4 of the unfused path (relative to their scale)."""
    fused, unfused = fused_and_unfused(7, dtype=torch.float32, sa_type=sa_type)
    check_fused_steps(fused, unfused, torch.randn(2, 32, 10, 9), training, 1e-4, steps=1)


def _group_error(got, want):
    return (max((a.double() - b).abs().max().item() for a, b in zip(got, want))
            / max(b.abs().max().item() for b in want))


def _bf16_step(m, x, g, low_dtype_model):
    """One call of ``m`` under bf16 CPU autocast (or of ``m`` itself in bf16) and its
    backward with output gradient ``g``: [output], [input grad], parameter grads, running
    statistics."""
    xa = (x.bfloat16() if low_dtype_model else x.clone()).requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=not low_dtype_model):
        y = m(xa)
    grads = torch.autograd.grad(y, [xa, *m.parameters()], g.to(y.dtype))
    return [y], grads[:1], grads[1:], [b for n, b in m.named_buffers() if 'running' in n]


@pytest.mark.parametrize('sa_type', SA_TYPES)
@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('low_dtype_model', [False, True], ids=['autocast', 'bf16_module'])
def test_fused_attention_bf16_no_worse_than_unfused(low_dtype_model, training, sa_type):
    """bf16 CPU autocast (float32 parameters) or a bf16 module: the fused path (taken by
    'auto' too, except a patchwise training step on a map this small) returns the unfused path's dtypes (bf16 output; gradients and running
    statistics in the parameters' dtype). Against the fp64 module, each error (output, input
    and parameter gradients, running statistics after the step) is at most 1.5x the
    unfused path's: both are dominated by the bf16 convolutions around gamma (measured
    ratios 0.6-1.1, docs/ops.md)."""
    torch.manual_seed(0)
    base = randomise_bn(SANAttention(32, 16, kernel_size=7, sa_type=sa_type)).train(training)
    x = torch.randn(2, 32, 10, 9)
    ref = copy.deepcopy(base).double()
    x_ref = (x.bfloat16() if low_dtype_model else x).double().requires_grad_()
    y_ref = ref(x_ref)
    g = torch.randn_like(y_ref)
    grads_ref = torch.autograd.grad(y_ref, [x_ref, *ref.parameters()], g)
    want = [[y_ref], grads_ref[:1], grads_ref[1:],
            [b for n, b in ref.named_buffers() if 'running' in n]]
    errors, dtypes = {}, {}
    for fused in (True, False):
        m = copy.deepcopy(base)
        m.fused = fused
        m = m.bfloat16() if low_dtype_model else m
        calls = []
        m.gamma.conv1.register_forward_hook(lambda *a, calls=calls: calls.append(1))
        got = _bf16_step(m, x, g, low_dtype_model)
        assert bool(calls) == (fused is False)  # fused: gamma's modules unused
        errors[fused] = [_group_error(a, b) for a, b in zip(got, want)]
        dtypes[fused] = [group[0].dtype for group in got]
    param = torch.bfloat16 if low_dtype_model else torch.float32
    x_dtype = torch.bfloat16 if low_dtype_model else torch.float32
    assert dtypes[True] == dtypes[False] == [torch.bfloat16, x_dtype, param, param]
    for name, e, e_unfused in zip(('output', 'input grad', 'parameter grads', 'running stats'),
                                  errors[True], errors[False]):
        assert e <= 1.5 * e_unfused, (name, errors)
    assert errors[True][0] <= 2e-2, errors


@pytest.mark.parametrize('sa_type', SA_TYPES)
def test_fused_is_default_and_skips_the_gamma_modules(sa_type):
    m = SANAttention(32, 16, kernel_size=3, sa_type=sa_type).eval()
    assert m.fused == 'auto' and "fused='auto'" in repr(m)
    unfused = copy.deepcopy(m)
    unfused.fused = False
    calls = []
    m.gamma.conv1.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(1, 32, 5, 6)
    y = m(x)
    assert not calls  # eval: the fused path, no tap-expanded gamma pass
    torch.testing.assert_close(unfused(x), y, rtol=1e-5, atol=1e-5)
    assert list(unfused.state_dict()) == list(m.state_dict())
    m.train()
    xt = torch.randn(1, 32, 28, 28)  # patchwise trains fused from 28x28 up ('auto')
    m(xt).sum().backward()  # a training step is fused too by default (on CPU)
    assert not calls
    m.fused = 'eval'
    with torch.no_grad():  # 'eval': training mode without gradients is inference: fused
        m(x)
    assert not calls
    m(x)  # 'eval': a training step takes the unfused path
    assert len(calls) == 1
    with pytest.raises(ValueError, match="fused must be 'auto', True, False or 'eval'"):
        SANAttention(32, 16, fused='always')


@pytest.mark.parametrize('sa_type', SA_TYPES)
def test_fused_steps_aside_for_sync_batchnorm_training(sa_type):
    """SyncBatchNorm's batch statistics span processes: a training step runs the unfused
    path (its modules), eval folds the running statistics as for BatchNorm."""
    m = SANAttention(32, 16, kernel_size=3, sa_type=sa_type)
    m = torch.nn.SyncBatchNorm.convert_sync_batchnorm(m)
    assert type(m.gamma.norm1) is torch.nn.SyncBatchNorm
    calls = []
    m.gamma.conv1.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(1, 32, 5, 6)
    m.eval()
    m(x)
    assert not calls
    m.train()
    m(x)  # without a process group SyncBatchNorm runs as BatchNorm on CPU: the modules ran
    assert len(calls) == 1


def test_fused_auto_is_cpu_only():
    """'auto' picks the fused op on CPU; CUDA input takes the unfused path, True the fused."""
    m = SANAttention(32, 16, kernel_size=3)
    cpu = torch.randn(1, 32, 5, 6)
    cuda = types.SimpleNamespace(dtype=torch.float32, device=torch.device('cuda'))
    assert m._fused_applies(cpu) and not m._fused_applies(cuda)
    m.fused = True
    assert m._fused_applies(cpu) and m._fused_applies(cuda)
    m.fused = False
    assert not m._fused_applies(cpu)


def test_fused_auto_trains_patchwise_unfused_on_small_maps():
    """'auto': a patchwise training step on a map under PATCHWISE_FUSED_MIN_PIXELS takes the
    unfused path (faster there); inference, the pairwise form and fused=True stay fused."""
    from lsa.models.layers.san_attention import PATCHWISE_FUSED_MIN_PIXELS
    assert PATCHWISE_FUSED_MIN_PIXELS == 28 * 28
    small, large = torch.randn(1, 32, 27, 28), torch.randn(1, 32, 28, 28)
    for sa_type in SA_TYPES:
        m = SANAttention(32, 16, kernel_size=3, sa_type=sa_type).train()
        assert m._fused_applies(large)
        assert m._fused_applies(small) == (sa_type == 'pairwise')
        with torch.no_grad():
            assert m._fused_applies(small)
        m.fused = True
        assert m._fused_applies(small)
        m.fused = 'auto'
        m.eval()
        assert m._fused_applies(small)


@pytest.mark.parametrize('sa_type', SA_TYPES)
def test_fused_backbone_equals_unfused_training(sa_type):
    torch.manual_seed(0)
    fused = randomise_bn(SAN(arch=TINY, sa_type=sa_type, out_indices=(2, 4))).double().train()
    for mod in fused.modules():
        if isinstance(mod, SANAttention):
            mod.fused = True
    unfused = copy.deepcopy(fused)
    for mod in unfused.modules():
        if isinstance(mod, SANAttention):
            mod.fused = False
    x = torch.randn(2, 3, 64, 72, dtype=torch.float64)
    outs_a, outs_b = fused(x), unfused(x)
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    sum(o.sum() for o in outs_a).backward()
    sum(o.sum() for o in outs_b).backward()
    for (name, pa), pb in zip(fused.named_parameters(), unfused.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-9, atol=1e-9, msg=name)
