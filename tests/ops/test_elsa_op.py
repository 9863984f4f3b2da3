"""The compiled ELSA op (lsa.ops.elsa) against its unfold reference: values, every
gradient, dtypes, determinism, registration and bad input."""
import importlib

import pytest
import torch

from lsa.ops import HAS_EXT, elsa, has_cuda_kernels
from lsa.ops.reference import elsa_ref

elsa_mod = importlib.import_module('lsa.ops.elsa')  # the module (lsa.ops.elsa is the function)
ext_mod = importlib.import_module('lsa.ops._ext')

pytestmark = pytest.mark.skipif(not HAS_EXT, reason='lsa._C is not built')

# (Nb, Cg, H, W, k, s, d, ghost_mul shape, ghost_add shape); shapes are written with
# Nb, Cg, k placeholders: 'full' = (Nb, Cg, k, k), 'chan' = (1, Cg, k, k), 'tap' = (k, k),
# 'one' = (1, 1, 1, 1) (the ELSA-Swin lam=0 form).
CASES = [
    (2, 3, 9, 11, 3, 1, 1, 'full', 'full'),
    (1, 5, 8, 9, 7, 1, 1, 'one', 'full'),
    (2, 3, 10, 10, 3, 1, 2, 'chan', 'full'),
    (1, 4, 10, 7, 3, 2, 1, 'full', 'chan'),
    (1, 3, 9, 9, 5, 2, 2, 'full', 'tap'),
    (2, 2, 7, 13, 5, 1, 1, 'chan', 'chan'),
    (1, 2, 11, 9, 7, 2, 1, 'full', 'full'),
    (1, 2, 13, 12, 7, 1, 2, 'one', 'chan'),
    (1, 3, 3, 4, 7, 1, 1, 'full', 'full'),  # window wider than the image
]


def ghost_shape(kind, nb, cg, k):
    return {'full': (nb, cg, k, k), 'chan': (1, cg, k, k), 'tap': (k, k),
            'one': (1, 1, 1, 1)}[kind]


def make_inputs(case, dtype=torch.float64, device='cpu', requires_grad=True):
    nb, cg, h, w, k, s, d, mk, ak = case
    t = dict(dtype=dtype, device=device)
    v = torch.randn(nb, cg, h, w, **t)
    a = torch.randn(nb, k * k, h // s, w // s, **t).softmax(1)
    m = 1 + 0.5 * torch.randn(ghost_shape(mk, nb, cg, k), **t)
    g = torch.randn(ghost_shape(ak, nb, cg, k), **t)
    ins = [v, a, m, g]
    if requires_grad:
        ins = [x.requires_grad_() for x in ins]
    return ins, (k, s, d)


def fwd_bwd(fn, ins, cfg, grad):
    out = fn(*ins, *cfg)
    grads = torch.autograd.grad(out, ins, grad)
    return out, grads


@pytest.mark.parametrize('case', CASES)
def test_fp64_matches_reference(case):
    ins, cfg = make_inputs(case)
    grad = torch.randn(ins[0].shape[0], ins[0].shape[1], *ins[1].shape[2:], dtype=torch.float64)
    out, grads = fwd_bwd(elsa, ins, cfg, grad)
    ref, ref_grads = fwd_bwd(elsa_ref, ins, cfg, grad)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    for name, g, r in zip(('features', 'attn', 'ghost_mul', 'ghost_add'), grads, ref_grads):
        assert g.shape == r.shape, name
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f'{n}: {m}')


# Max error relative to the largest reference value (fp64 reference on the rounded inputs).
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


@pytest.mark.parametrize('dtype', list(TOLERANCE))
@pytest.mark.parametrize('case', [CASES[1], CASES[4]])
def test_low_precision_matches_reference(case, dtype):
    ins, cfg = make_inputs(case, dtype=dtype)
    grad = torch.randn(ins[0].shape[0], ins[0].shape[1], *ins[1].shape[2:], dtype=dtype)
    out, grads = fwd_bwd(elsa, ins, cfg, grad)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    ins64 = [x.detach().double().requires_grad_() for x in ins]
    ref, ref_grads = fwd_bwd(elsa_ref, ins64, cfg, grad.double())
    for name, got, want in zip(('out', 'features', 'attn', 'ghost_mul', 'ghost_add'),
                               (out, *grads), (ref, *ref_grads)):
        err = (got.double() - want).abs().max().item()
        assert err <= TOLERANCE[dtype] * want.abs().max().item(), (name, err)


@pytest.mark.parametrize('case', [CASES[0], CASES[4]])
def test_gradcheck_fp64(case):
    nb, cg, h, w, k, s, d, mk, ak = case
    small = (1, 2, 6, 7, k, s, d, mk, ak)
    ins, cfg = make_inputs(small)
    assert torch.autograd.gradcheck(lambda *t: elsa(*t, *cfg), ins, eps=1e-6, atol=1e-8)


def test_opcheck_forward_and_backward():
    (v, a, m, g), (k, s, d) = make_inputs(CASES[4], requires_grad=False)
    m, g = (t.expand(v.shape[0], v.shape[1], k, k).contiguous() for t in (m, g))
    fwd_args = [t.clone().requires_grad_() for t in (v, a, m, g)] + [k, s, d]
    torch.library.opcheck(torch.ops.lsa.elsa_forward.default, fwd_args)
    grad = torch.randn(v.shape[0], v.shape[1], *a.shape[2:], dtype=v.dtype)
    for mask in ([True, True, True, True], [True, False, False, True]):
        torch.library.opcheck(torch.ops.lsa.elsa_backward.default,
                              (grad, v, a, m, g, k, s, d, mask))


def test_compile_traces_without_graph_break():
    ins, cfg = make_inputs(CASES[0], dtype=torch.float32)
    compiled = torch.compile(lambda *t: elsa(*t, *cfg), backend='aot_eager', fullgraph=True)
    torch.testing.assert_close(compiled(*ins), elsa(*ins, *cfg))


def test_bitwise_deterministic_and_thread_count_independent():
    ins, cfg = make_inputs((4, 8, 17, 19, 7, 1, 1, 'one', 'full'), dtype=torch.float32)
    grad = torch.randn(4, 8, 17, 19)
    runs = []
    threads = torch.get_num_threads()
    try:
        for n in (threads, threads, 1):
            torch.set_num_threads(n)
            runs.append(fwd_bwd(elsa, ins, cfg, grad))
    finally:
        torch.set_num_threads(threads)
    for out, grads in runs[1:]:
        assert torch.equal(out, runs[0][0])
        assert all(torch.equal(g, r) for g, r in zip(grads, runs[0][1]))


def test_only_requested_gradients():
    """Inputs that need no grad get None (the lam=0 ghost_mul) and the rest still match."""
    ins, cfg = make_inputs(CASES[1])
    ins[2].requires_grad_(False)
    out = elsa(*ins, *cfg)
    out.backward(torch.ones_like(out))
    assert ins[2].grad is None
    ref_ins = [x.detach().requires_grad_(x.requires_grad) for x in ins]
    elsa_ref(*ref_ins, *cfg).sum().backward()
    for x, r in zip(ins, ref_ins):
        if x.requires_grad:
            torch.testing.assert_close(x.grad, r.grad, rtol=1e-9, atol=1e-9)


def test_autocast_runs_in_the_autocast_dtype():
    """AMP gives the op low-precision values next to a float32 softmax."""
    ins, cfg = make_inputs(CASES[1], dtype=torch.float32)
    ins[0] = ins[0].detach().bfloat16().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = elsa(*ins, *cfg)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert ins[1].grad.dtype == torch.float32 and ins[0].grad.dtype == torch.bfloat16
    ref = elsa_ref(*(t.detach().bfloat16().double() for t in ins), *cfg)
    assert (out.double() - ref).abs().max() <= TOLERANCE[torch.bfloat16] * ref.abs().max()


def test_double_backward_is_refused():
    ins, cfg = make_inputs(CASES[0])
    (gv,) = torch.autograd.grad(elsa(*ins, *cfg).sum(), ins[0], create_graph=True)
    with pytest.raises(NotImplementedError, match='double backward'):
        gv.sum().backward()


@pytest.mark.parametrize('shape,attn_hw', [((0, 3, 8, 8), (8, 8)), ((2, 3, 1, 5), (0, 2))])
def test_empty_output(shape, attn_hw):
    """Nb = 0 and H < stride give an empty result and zero gradients."""
    k, s = 3, (1 if attn_hw[0] else 2)
    v = torch.randn(*shape, requires_grad=True)
    a = torch.randn(shape[0], k * k, *attn_hw, requires_grad=True)
    m = torch.randn(1, 3, k, k, requires_grad=True)
    g = torch.randn(1, 3, k, k, requires_grad=True)
    out = elsa(v, a, m, g, k, s)
    assert out.shape == (shape[0], 3, *attn_hw)
    out.sum().backward()
    for t in (v, a, m, g):
        assert t.grad.shape == t.shape and not t.grad.any()


def test_non_contiguous_inputs():
    nb, cg, h, w, k = 2, 3, 9, 10, 5
    v = torch.randn(nb, w, h, cg, dtype=torch.float64).permute(0, 3, 2, 1)
    a = torch.randn(nb, k * k, h, 2 * w, dtype=torch.float64)[..., ::2]
    m = torch.randn(nb, cg, k, k, dtype=torch.float64).transpose(2, 3)
    g = torch.randn(cg, k, k, dtype=torch.float64)
    ins = [t.requires_grad_() for t in (v, a, m, g)]
    grad = torch.randn(nb, cg, w, h, dtype=torch.float64).transpose(2, 3)
    assert not any(t.is_contiguous() for t in (v, a, m, grad))
    out, grads = fwd_bwd(elsa, ins, (k, 1, 1), grad)
    ref, ref_grads = fwd_bwd(elsa_ref, ins, (k, 1, 1), grad)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def _bad(**over):
    args = dict(features=torch.randn(2, 4, 8, 8), attn=torch.randn(2, 9, 8, 8),
                ghost_mul=torch.randn(1, 4, 3, 3), ghost_add=torch.randn(2, 4, 3, 3),
                kernel_size=3, stride=1, dilation=1)
    args.update(over)
    return args


@pytest.mark.parametrize('over,exc,match', [
    (dict(features=torch.randn(4, 8, 8)), ValueError, r'features must be 4-D.*\[4, 8, 8\]'),
    (dict(attn=torch.randn(2, 9, 64)), ValueError, r'attn must be 4-D'),
    (dict(attn=torch.randn(2, 25, 8, 8)), ValueError, r'attn must have shape.*\(2, 9, 8, 8\).*\[2, 25, 8, 8\]'),
    (dict(attn=torch.randn(2, 9, 8, 8), stride=2), ValueError, r'\(2, 9, 4, 4\).*\[2, 9, 8, 8\]'),
    (dict(attn=torch.randn(1, 9, 8, 8)), ValueError, r'attn must have shape'),
    (dict(ghost_mul=torch.randn(1, 3, 3, 3)), ValueError, r'ghost_mul of shape \[1, 3, 3, 3\].*\[2, 4, 3, 3\]'),
    (dict(ghost_add=torch.randn(2, 4, 5, 5)), ValueError, r'ghost_add of shape \[2, 4, 5, 5\]'),
    (dict(ghost_add=torch.randn(1, 2, 4, 3, 3)), ValueError, r'ghost_add of shape'),
    (dict(kernel_size=4, attn=torch.randn(2, 16, 8, 8)), ValueError, r'kernel_size must be a positive odd int, got 4'),
    (dict(kernel_size=0), ValueError, r'kernel_size must be a positive odd int, got 0'),
    (dict(stride=0), ValueError, r'stride must be >= 1, got 0'),
    (dict(dilation=1.5), TypeError, r'elsa: dilation must be an int, got 1.5'),
    (dict(features=torch.randint(0, 3, (2, 4, 8, 8))), TypeError, r'features must be a floating.*Long'),
    (dict(ghost_mul=torch.ones(1, 1, 1, 1, dtype=torch.int32)), TypeError, r'ghost_mul Int'),
    (dict(attn=torch.randn(2, 9, 8, 8, dtype=torch.float64)), TypeError, r'one dtype.*Float.*attn Double'),
    (dict(features=[1.0]), TypeError, r'features must be a torch.Tensor, got list'),
])
def test_bad_inputs_raise_clear_errors(over, exc, match):
    with pytest.raises(exc, match=match):
        elsa(**_bad(**over))


def test_compiled_op_checks_its_inputs():
    """The checks are the dispatcher op's: it accepts what the Python function accepts
    (broadcast ghosts) and rejects the rest with the same messages."""
    v, a = torch.randn(2, 4, 8, 8), torch.randn(2, 9, 8, 8)
    m, b = torch.randn(1, 4, 3, 3), torch.randn(3, 3)
    torch.testing.assert_close(torch.ops.lsa.elsa_forward(v, a, m, b, 3, 1, 1),
                               elsa_ref(v, a, m, b, 3, 1, 1))
    with pytest.raises(ValueError, match=r'ghost_mul of shape \[3, 4, 3, 3\] is not broadcastable'):
        torch.ops.lsa.elsa_forward(v, a, torch.randn(3, 4, 3, 3), b, 3, 1, 1)
    with pytest.raises(ValueError, match=r'grad_out must have the output shape'):
        torch.ops.lsa.elsa_backward(torch.randn(2, 4, 4, 4), v, a, torch.randn(2, 4, 3, 3),
                                    torch.randn(2, 4, 3, 3), 3, 1, 1, [True] * 4)


def test_missing_extension_raises_build_hint(monkeypatch):
    monkeypatch.setattr(elsa_mod, 'HAS_EXT', False)
    monkeypatch.setattr(ext_mod, 'HAS_EXT', False)
    with pytest.raises(RuntimeError, match=r'(?s)lsa.ops.elsa: lsa._C.*pip install -e \.'):
        elsa(**_bad())


@pytest.mark.cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and has_cuda_kernels()),
                    reason='needs a GPU and lsa._C built with CUDA')
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('case', CASES + [(6, 32, 56, 56, 7, 1, 1, 'one', 'full')])
def test_cuda_matches_reference(case, dtype):
    ins, cfg = make_inputs(case, dtype=dtype, device='cuda')
    grad = torch.randn(ins[0].shape[0], ins[0].shape[1], *ins[1].shape[2:], dtype=dtype,
                       device='cuda')
    out, grads = fwd_bwd(elsa, ins, cfg, grad)
    again = fwd_bwd(elsa, ins, cfg, grad)
    assert torch.equal(out, again[0]) and all(torch.equal(a, b) for a, b in zip(grads, again[1]))
    ins64 = [x.detach().double().requires_grad_() for x in ins]
    ref, ref_grads = fwd_bwd(elsa_ref, ins64, cfg, grad.double())
    tol = {torch.float64: 1e-12}.get(dtype, TOLERANCE.get(dtype))
    for name, got, want in zip(('out', 'features', 'attn', 'ghost_mul', 'ghost_add'),
                               (out, *grads), (ref, *ref_grads)):
        assert got.dtype == dtype
        err = (got.double() - want).abs().max().item()
        assert err <= tol * max(want.abs().max().item(), 1.0), (name, err)


# --- softmax=True: the softmax over the k*k taps fused into the op ---------------------------

def _rel_err(got, want):
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-300)).item()


@pytest.mark.parametrize('case', CASES)
def test_fused_softmax_fp64_matches_reference(case):
    """Output and all four gradients (the second one the logits') within 1e-10 relative."""
    ins, cfg = make_inputs(case)
    logits = (3 * torch.randn(ins[1].shape, dtype=torch.float64)).requires_grad_()
    ins[1] = logits
    grad = torch.randn(ins[0].shape[0], ins[0].shape[1], *logits.shape[2:], dtype=torch.float64)
    out, grads = fwd_bwd(lambda *t: elsa(*t, softmax=True), ins, cfg, grad)
    ref, ref_grads = fwd_bwd(lambda *t: elsa_ref(*t, softmax=True), ins, cfg, grad)
    assert _rel_err(out, ref) <= 1e-10
    for name, g, r in zip(('features', 'logits', 'ghost_mul', 'ghost_add'), grads, ref_grads):
        assert g.shape == r.shape, name
        assert _rel_err(g, r) <= 1e-10, name


@pytest.mark.parametrize('mask', [[True, True, True, True], [False, True, False, True],
                                  [True, False, False, False], [False, False, True, False]])
def test_fused_softmax_backward_op_matches_reference(mask):
    """The compiled pair directly: the forward returns the softmax, the backward takes it."""
    (v, a, m, g), (k, s, d) = make_inputs(CASES[2], requires_grad=False)
    m, g = (t.expand(v.shape[0], v.shape[1], k, k).contiguous() for t in (m, g))
    ins = [t.clone().requires_grad_() for t in (v, a, m, g)]
    out, probs = torch.ops.lsa.elsa_softmax_forward(*ins, k, s, d)
    torch.testing.assert_close(probs, ins[1].softmax(1), rtol=1e-14, atol=1e-15)
    grad = torch.randn_like(out)
    got = torch.ops.lsa.elsa_softmax_backward(grad, v, probs, m, g, k, s, d, mask)
    ref = torch.autograd.grad(elsa_ref(*ins, k, s, d, softmax=True), ins, grad)
    for name, t, r, need in zip(('features', 'logits', 'ghost_mul', 'ghost_add'), got, ref, mask):
        if need:
            assert _rel_err(t, r) <= 1e-10, name
        else:
            assert t.numel() == 0, name


@pytest.mark.parametrize('case', [CASES[0], CASES[3], CASES[8]])
def test_fused_softmax_gradcheck_fp64(case):
    ins, cfg = make_inputs(case)
    assert torch.autograd.gradcheck(lambda *t: elsa(*t, *cfg, softmax=True), ins, eps=1e-6,
                                    atol=1e-8)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_fused_softmax_low_precision_matches_reference(dtype):
    ins, cfg = make_inputs(CASES[1], requires_grad=False)
    grad = torch.randn(ins[0].shape[0], ins[0].shape[1], *ins[1].shape[2:], dtype=torch.float64)
    low = [t.to(dtype).requires_grad_() for t in ins]
    out, grads = fwd_bwd(lambda *t: elsa(*t, softmax=True), low, cfg, grad.to(dtype))
    ins64 = [t.detach().double().requires_grad_() for t in low]
    ref, ref_grads = fwd_bwd(lambda *t: elsa_ref(*t, softmax=True), ins64, cfg, grad.to(dtype).double())
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=5e-2, atol=5e-2)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ref, **tol)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, **tol)


def test_fused_softmax_opcheck():
    (v, a, m, g), (k, s, d) = make_inputs(CASES[4], requires_grad=False)
    m, g = (t.expand(v.shape[0], v.shape[1], k, k).contiguous() for t in (m, g))
    torch.library.opcheck(torch.ops.lsa.elsa_softmax_forward.default,
                          [t.clone().requires_grad_() for t in (v, a, m, g)] + [k, s, d])
    probs = torch.ops.lsa.elsa_softmax_forward(v, a, m, g, k, s, d)[1]
    grad = torch.randn(v.shape[0], v.shape[1], *a.shape[2:], dtype=v.dtype)
    for mask in ([True, True, True, True], [True, True, False, True]):
        torch.library.opcheck(torch.ops.lsa.elsa_softmax_backward.default,
                              (grad, v, probs, m, g, k, s, d, mask))


def test_fused_softmax_compiles_forward_and_backward():
    ins, cfg = make_inputs(CASES[0], dtype=torch.float32)
    fn = lambda *t: elsa(*t, *cfg, softmax=True)  # noqa: E731
    compiled = torch.compile(fn, backend='aot_eager', fullgraph=True)
    out = compiled(*ins)
    torch.testing.assert_close(out, fn(*ins))
    grad = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, ins, grad),
                               torch.autograd.grad(fn(*ins), ins, grad))


def test_fused_softmax_thread_count_independent():
    ins, cfg = make_inputs((4, 8, 17, 19, 7, 1, 1, 'one', 'full'), dtype=torch.float32)
    grad = torch.randn(4, 8, 17, 19)
    runs = []
    threads = torch.get_num_threads()
    try:
        for n in (threads, 1):
            torch.set_num_threads(n)
            runs.append(fwd_bwd(lambda *t: elsa(*t, softmax=True), ins, cfg, grad))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(g, r) for g, r in zip(runs[0][1], runs[1][1]))


def test_fused_softmax_flag_must_be_bool():
    with pytest.raises(TypeError, match=r'elsa: softmax must be a bool, got 1'):
        elsa(**_bad(), softmax=1)
