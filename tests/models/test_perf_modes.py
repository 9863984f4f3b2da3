"""The speed and memory modes keep every backbone exact: ``with_cp`` and ``compile``."""
import copy

import pytest
import torch

import lsa.models  # noqa: F401
from lsa.models.backbones.base import BaseLSABackbone
from lsa.registry import MODELS, build_block

SWIN_ARCH = dict(embed_dims=8, depths=(2, 1, 1, 1), num_heads=(1, 2, 2, 4))
VIT_ARCH = dict(embed_dims=16, depth=2, num_heads=2, mlp_ratio=2, se_channels=4)
#: Small widths of every backbone, with stochastic depth where the model has it (the
#: recomputation in the backward pass must draw the same masks).
TINY = {
    'SAN': dict(arch=dict(widths=(32, 32, 64, 64, 64), layers=(1, 1, 2, 1, 1),
                          kernels=(3, 3, 3, 3, 3)), sa_type='pairwise', out_indices=(2, 4)),
    'LESAResNet': dict(arch=dict(base_channels=8, stage_blocks=(1, 1, 2, 2), widen_factor=1),
                       form='det', out_indices=(1, 3)),
    'ELSASwin': dict(arch=dict(SWIN_ARCH, group_width=4), drop_path_rate=0.2),
    'SwinHost': dict(arch=SWIN_ARCH, drop_path_rate=0.2),
    'LocalViTSwin': dict(arch=SWIN_ARCH, drop_path_rate=0.2),
    'LocalViT': dict(arch=VIT_ARCH, drop_path_rate=0.2, out_type='featmap'),
    'LocalViTT2T': dict(arch=VIT_ARCH, token_dims=8, drop_path_rate=0.2),
    'LocalViTPVT': dict(arch=dict(embed_dims=[8, 8, 16, 16], depths=[1, 1, 1, 1],
                                  num_heads=[1, 1, 2, 2], mlp_ratios=[2, 2, 2, 2],
                                  sr_ratios=[4, 2, 1, 1], se_channels=[2, 2, 2, 2]),
                        drop_path_rate=0.2),
    'LocalViTTNT': dict(arch=dict(embed_dims=16, inner_dims=4, depth=2, num_heads=2,
                                  inner_num_heads=1, mlp_ratio=2, se_channels=4),
                        drop_path_rate=0.2),
}


def _build(name: str, **kw) -> BaseLSABackbone:
    torch.manual_seed(0)
    return build_block(dict(type=name, **{**TINY[name], **kw}))


def _step(model: BaseLSABackbone, x: torch.Tensor) -> list[torch.Tensor]:
    torch.manual_seed(1)  # the same drop-path masks for both models
    outs = model(x)
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    sum((o.float() * torch.linspace(-1, 1, o.numel()).view_as(o)).sum()
        for o in outs).backward()
    return [o.detach() for o in outs]


def test_tiny_configs_cover_every_backbone():
    registered = {n for n, c in MODELS.module_dict.items()
                  if isinstance(c, type) and issubclass(c, BaseLSABackbone)}
    assert registered == set(TINY)


@pytest.mark.parametrize('name', sorted(TINY))
def test_with_cp_is_exact(name):
    """Checkpointing changes nothing: outputs, gradients, BatchNorm running statistics."""
    plain, cp = _build(name), _build(name, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    plain.train(), cp.train()
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(_step(plain, x), _step(cp, x)):
        torch.testing.assert_close(a, b)
    for (n, p), q in zip(plain.named_parameters(), cp.parameters()):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=n)
    for (n, p), q in zip(plain.named_buffers(), cp.buffers()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)


def test_with_cp_saves_memory_only_when_training():
    """with_cp needs a grad-requiring input or parameters: eval and no_grad run plainly."""
    model = _build('ELSASwin', with_cp=True).eval()
    with torch.no_grad():
        ref = model(torch.ones(1, 3, 32, 32))
    plain = _build('ELSASwin').eval()
    with torch.no_grad():
        for a, b in zip(ref, plain(torch.ones(1, 3, 32, 32))):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_compile_switch_rejects_bad_values():
    with pytest.raises(TypeError, match='compile must be a bool or a dict'):
        _build('SwinHost', compile='yes')


def test_compile_keeps_state_dict_keys():
    eager, compiled = _build('SwinHost'), _build('SwinHost', compile=True)
    assert list(eager.state_dict()) == list(compiled.state_dict())


#: aot_eager fails in the backward pass of T2T's token dropout (p=0.1): the traced graph
#: views the strided output of ``native_dropout_backward`` (a PyTorch aot_eager issue;
#: inductor, what ``compile=True`` uses, compiles it). Random masks also differ between
#: eager and inductor, so the comparison runs without that dropout.
COMPILE_KW = {'LocalViTT2T': dict(token_drop=0.0)}


@pytest.mark.compile
@pytest.mark.parametrize('name', sorted(TINY))
def test_compiled_backbone_equals_eager_forward_and_backward(name):
    """torch.compile traces every backbone, the lsa ops included (fake + autograd
    registrations), forward and backward: outputs, gradients, running statistics.

    ``aot_eager`` runs dynamo and AOT autograd without inductor's C++ codegen, so each
    case stays well under a minute on CPU; inductor is measured in docs/performance.md.
    """
    kw = COMPILE_KW.get(name, {})
    eager = _build(name, **kw)
    compiled = _build(name, compile=dict(backend='aot_eager'), **kw)
    compiled.load_state_dict(eager.state_dict())
    eager.train(), compiled.train()
    x = torch.randn(2, 3, 64, 64)
    # fp32 tolerance: compiled graphs run the plain modules where eager takes the CPU fast
    # paths (lsa.models.layers.fast_paths: GEMMs summed in another order), and batch
    # statistics amplify that (SAN: 2.8e-5 relative seen); a wrong graph is off by O(1)
    for a, b in zip(_step(eager, x), _step(compiled, x)):
        torch.testing.assert_close(b, a, rtol=2e-4, atol=2e-5 * a.abs().max().item())
    grads = [(n, p.grad, q.grad) for (n, p), q in zip(eager.named_parameters(),
                                                      compiled.parameters())]
    assert all((g is None) == (h is None) for _, g, h in grads)
    scale = max(g.abs().max().item() for _, g, _ in grads if g is not None)
    for n, g, h in grads:
        if g is not None:  # relative to the largest gradient
            torch.testing.assert_close(h, g, rtol=2e-4, atol=2e-5 * scale, msg=n)
    for (n, p), q in zip(eager.named_buffers(), compiled.buffers()):
        torch.testing.assert_close(q, p, msg=n)


class _OtherBN(torch.nn.BatchNorm2d):
    """Not exactly ``nn.BatchNorm2d``: LESA's logit norm then runs as a module."""


@pytest.mark.parametrize('pe_type', ['cls', 'det'])
def test_lesa_fused_logit_norm_equals_batchnorm(pe_type):
    """LESA's summed logit BatchNorm (fused scale-and-add) equals the module, train and eval."""
    from lsa.models.layers.lesa_attention import LESAAttention
    torch.manual_seed(0)
    fused = LESAAttention(16, 16, fmap_size=5, pe_type=pe_type, groups=2).double()
    module = LESAAttention(16, 16, fmap_size=5, pe_type=pe_type, groups=2).double()
    module.logit_norm = _OtherBN(fused.logit_norm.num_features).double()
    with torch.no_grad():
        for p in fused.logit_norm.parameters():
            p.uniform_(0.5, 1.5)
    module.load_state_dict(fused.state_dict())
    x = torch.randn(3, 16, 5, 5, dtype=torch.float64, requires_grad=True)
    for _ in range(2):  # running statistics after two updates
        ya, yb = fused(x), module(x)
        torch.testing.assert_close(ya, yb)
        (ya * ya.detach().sign()).sum().backward()
        (yb * yb.detach().sign()).sum().backward()
    for (n, p), q in zip(fused.named_parameters(), module.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    for (n, p), q in zip(fused.named_buffers(), module.buffers()):
        torch.testing.assert_close(p, q, msg=n)
    fused.eval(), module.eval()
    torch.testing.assert_close(fused(x), module(x))


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for the backward of ``fn()``."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _lff_nchw_reference(m, x):
    """The LFF composed from its own modules on the NCHW grid (the former implementation)."""
    y = m.act2(m.bn2(m.dwconv(x))) if m.dw_first else x
    y = m.act1(m.bn1(m.fc1(y)))
    if m.dwconv is not None and not m.dw_first:
        y = m.act2(m.bn2(m.dwconv(y)))
    return m.bn3(m.fc2(m.attn(y)))


LFF_CASES = [dict(act='hs+se'), dict(act='relu6'), dict(act='hs+eca'), dict(act='hs+ecah'),
             dict(act='hs', with_dwconv=False), dict(act='hs+se', hidden_features=8,
                                                     dw_first=True)]


@pytest.mark.parametrize('recompute', [True, False])
@pytest.mark.parametrize('kw', LFF_CASES)
def test_locality_ffn_token_path_equals_nchw_composition(kw, recompute):
    """Tokens, channels-last, BN folded in eval: the same outputs, gradients and running
    statistics (momentum 0.1 and cumulative) as the module composition on NCHW, in fp64."""
    from lsa.models.layers.locality_ffn import LocalityFeedForward
    torch.manual_seed(0)
    kw = dict(dict(hidden_features=32), **kw)
    a = LocalityFeedForward(8, recompute=recompute, **kw).double()
    a.bn3.momentum = None  # cumulative moving average
    with torch.no_grad():
        for bn in (a.bn1, a.bn3, getattr(a, 'bn2', a.bn1)):
            bn.weight.normal_(1, 0.3), bn.bias.normal_(0, 0.3)
    b = copy.deepcopy(a)
    B, H, W = 3, 5, 6
    x = torch.randn(B, 8, H, W, dtype=torch.float64, requires_grad=True)
    tokens = x.flatten(2).transpose(1, 2)
    for _ in range(2):  # two steps: running statistics and num_batches_tracked move
        ya = a(tokens, (H, W))
        yb = _lff_nchw_reference(b, x).flatten(2).transpose(1, 2)
        torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
        ga = torch.autograd.grad(ya.square().sum(), [x, *a.parameters()])
        gb = torch.autograd.grad(yb.square().sum(), [x, *b.parameters()])
        for name, p, q in zip(['x', *dict(a.named_parameters())], ga, gb):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-10, msg=name)
        for (name, p), q in zip(a.named_buffers(), b.buffers()):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=0, msg=name)
    assert int(a.bn1.num_batches_tracked) == 2
    a.eval(), b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(x), _lff_nchw_reference(b, x), rtol=1e-12, atol=1e-12)


def test_locality_ffn_recompute_is_exact_and_keeps_only_the_input():
    from lsa.models.layers.locality_ffn import LocalityFeedForward
    torch.manual_seed(0)
    a = LocalityFeedForward(8, 32, act='hs+se', recompute=True)
    b = LocalityFeedForward(8, 32, act='hs+se', recompute=False)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 30, 8, requires_grad=True)
    ya, yb = a(x, (5, 6)), b(x, (5, 6))
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    for (n, p), q in zip(a.named_buffers(), b.buffers()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    hidden = 2 * 32 * 30 * 4  # one expanded fp32 activation
    kept_a, kept_b = (_saved_bytes(lambda m=m: m(x, (5, 6))) for m in (a, b))
    assert kept_a == x.numel() * 4, kept_a  # the block input only
    assert kept_b >= 5 * hidden, kept_b


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_locality_ffn_low_precision_tracks_fp32(dtype):
    from lsa.models.layers.locality_ffn import LocalityFeedForward
    torch.manual_seed(0)
    m = LocalityFeedForward(16, 64, act='hs+se')
    x = torch.randn(2, 36, 16)
    for train in (True, False):
        m.train(train)
        ref = m(x, (6, 6)).detach()
        with torch.autocast('cpu', dtype=dtype):
            out = m(x, (6, 6))
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


@pytest.mark.parametrize('pe_type', ['cls', 'det'])
def test_lesa_recompute_is_exact_and_keeps_less(pe_type):
    """LESA's logit terms recomputed in the backward: same step, >= n_terms maps fewer kept."""
    from lsa.models.layers.lesa_attention import LESAAttention
    torch.manual_seed(0)
    a = LESAAttention(16, 16, fmap_size=6, pe_type=pe_type, groups=2, recompute=True).double()
    b = LESAAttention(16, 16, fmap_size=6, pe_type=pe_type, groups=2, recompute=False).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 16, 6, 6, dtype=torch.float64, requires_grad=True)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-12, msg=n)
    for (n, p), q in zip(a.named_buffers(), b.buffers()):  # running stats updated once
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    logit_map = 3 * 2 * 36 * 36 * 8  # one (B, G, L, L) fp64 tensor
    kept_a, kept_b = (_saved_bytes(lambda m=m: m(x)) for m in (a, b))
    assert kept_b - kept_a >= a.logit_norm.num_features // 2 * logit_map, (kept_a, kept_b)



@pytest.mark.compile
@pytest.mark.parametrize('pe_type', ['cls', 'det'])
def test_compiled_lesa_block_equals_eager(pe_type):
    """The recomputed logits (a checkpoint inside the graph) and A.E_v compile: same step."""
    from lsa.models.layers.lesa_attention import LESAAttention
    torch.manual_seed(0)
    eager = LESAAttention(16, 16, fmap_size=5, pe_type=pe_type, groups=2)
    compiled = LESAAttention(16, 16, fmap_size=5, pe_type=pe_type, groups=2)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile(backend='aot_eager')
    x = torch.randn(2, 16, 5, 5)
    ya, yb = eager(x), compiled(x)
    torch.testing.assert_close(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (n, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    for (n, p), q in zip(eager.named_buffers(), compiled.buffers()):
        torch.testing.assert_close(p, q, msg=n)
