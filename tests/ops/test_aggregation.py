"""lsa.ops.aggregation (compiled kernels) against lsa.ops.reference.aggregation_ref."""
import itertools

import pytest
import torch
from torch.library import opcheck

import lsa.ops._ext as ext
from lsa.ops import Aggregation, aggregation
from lsa.ops.reference import aggregation_ref

pytestmark = pytest.mark.skipif(not ext.HAS_EXT, reason='lsa._C is not built')

# kernel {3,5,7} x stride {1,2} x dilation {1,2} x both pad modes, SAN padding d(k-1)/2,
# odd non-square input, C=6 sharing Cw=3 weight channels
GRID = list(itertools.product((3, 5, 7), (1, 2), (1, 2), ('zeros', 'reflect')))
# other paddings / pairs: (kernel, stride, padding, dilation, pad_mode, H, W)
EXTRA = [
    (3, 1, 0, 1, 'zeros', 6, 5),
    (5, 1, 1, 1, 'reflect', 7, 8),
    (3, 2, 3, 1, 'zeros', 7, 6),
    ((3, 5), (2, 1), (1, 2), (2, 1), 'reflect', 7, 9),
]
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def _out(L, k, s, p, d):
    return (L + 2 * p - d * (k - 1) - 1) // s + 1


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def make_inputs(k, s, p, d, H, W, N=2, C=6, Cw=3, dtype=torch.float64, device='cpu'):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (k, s, p, d))
    L = _out(H, kh, sh, ph, dh) * _out(W, kw, sw, pw, dw)
    x = torch.randn(N, C, H, W, dtype=dtype, device=device)
    w = torch.randn(N, Cw, kh * kw, L, dtype=dtype, device=device)
    return x, w


def check_against_reference(x, w, args, atol, rtol=0.0):
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    y = aggregation(x, w, *args)
    y_ref = aggregation_ref(x, w, *args)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w), g)
    grads_ref = torch.autograd.grad(y_ref, (x, w), g)
    for name, a, b in zip(('output', 'grad_input', 'grad_weight'), (y, *grads),
                          (y_ref, *grads_ref)):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m, name=name: f'{name}: {m}')


@pytest.mark.parametrize('k,s,d,mode', GRID)
def test_matches_reference_fp64(k, s, d, mode):
    p = d * (k - 1) // 2
    x, w = make_inputs(k, s, p, d, 13, 14)
    check_against_reference(x, w, (k, s, p, d, mode), atol=1e-9)


@pytest.mark.parametrize('k,s,p,d,mode,H,W', EXTRA)
def test_matches_reference_other_geometry(k, s, p, d, mode, H, W):
    x, w = make_inputs(k, s, p, d, H, W, C=8, Cw=2)
    check_against_reference(x, w, (k, s, p, d, mode), atol=1e-9)


@pytest.mark.parametrize('dtype', list(TOL))
@pytest.mark.parametrize('mode', ['zeros', 'reflect'])
def test_low_precision_close_to_fp64(dtype, mode):
    """fp32 to 1e-5, fp16 to 1e-2, bf16 to 2e-2 (relative to the output scale) of the fp64
    reference on the same (rounded) inputs; 16-bit types accumulate in fp32."""
    x, w = make_inputs(7, 1, 3, 1, 11, 10, dtype=dtype)
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    x, w = x.requires_grad_(), w.requires_grad_()
    y = aggregation(x, w, 7, 1, 3, 1, mode)
    y64 = aggregation_ref(x64, w64, 7, 1, 3, 1, mode)
    g = torch.randn_like(y64)
    grads = torch.autograd.grad(y, (x, w), g.to(dtype))
    grads64 = torch.autograd.grad(y64, (x64, w64), g)
    for a, b in zip((y, *grads), (y64, *grads64)):
        assert a.dtype == dtype
        err = (a.double() - b).abs().max() / b.abs().max()
        assert err < TOL[dtype], (dtype, float(err))


@pytest.mark.parametrize('mode', ['zeros', 'reflect'])
def test_gradcheck(mode):
    x, w = make_inputs(3, 2, 1, 1, 5, 4, N=1, C=2, Cw=1)
    assert torch.autograd.gradcheck(
        lambda a, b: aggregation(a, b, 3, 2, 1, 1, mode),
        (x.requires_grad_(), w.requires_grad_()))


@pytest.mark.parametrize('mode', [0, 1])
def test_opcheck(mode):
    x, w = make_inputs(3, 1, 1, 1, 6, 7, N=2, C=4, Cw=2, dtype=torch.float32)
    geom = ([3, 3], [1, 1], [1, 1], [1, 1], mode)
    opcheck(torch.ops.lsa.aggregation_forward, (x.requires_grad_(), w.requires_grad_(), *geom))
    g = torch.randn(2, 4, 6, 7)
    opcheck(torch.ops.lsa.aggregation_backward_input, (g, x.detach(), w.detach(), *geom))
    opcheck(torch.ops.lsa.aggregation_backward_weight, (g, x.detach(), w.detach(), *geom))


def test_deterministic_across_runs_and_threads():
    x, w = make_inputs(7, 1, 3, 1, 15, 13, N=2, C=16, Cw=4, dtype=torch.float32)
    x, w = x.requires_grad_(), w.requires_grad_()
    g = torch.randn(2, 16, 15, 13)
    threads = torch.get_num_threads()

    def run():
        y = aggregation(x, w, 7, 1, 3, 1, 'reflect')
        return (y, *torch.autograd.grad(y, (x, w), g))

    try:
        first = run()
        second = run()
        torch.set_num_threads(1)
        single = run()
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, second, single):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_empty_batch():
    x, w = make_inputs(3, 1, 1, 1, 5, 6, N=0)
    x, w = x.requires_grad_(), w.requires_grad_()
    y = aggregation(x, w, 3, 1, 1, 1, 'reflect')
    assert y.shape == (0, 6, 5, 6)
    gx, gw = torch.autograd.grad(y.sum(), (x, w))
    assert gx.shape == x.shape and gw.shape == w.shape


def test_non_contiguous_inputs():
    x, w = make_inputs(5, 1, 2, 1, 9, 8, C=6, Cw=3)
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)  # channels-last-like strides
    w_big = torch.zeros(*w.shape[:3], 2 * w.shape[3], dtype=w.dtype)
    w_big[..., ::2] = w
    w_nc = w_big[..., ::2]  # same values, stride 2 along positions
    assert not x_nc.is_contiguous() and not w_nc.is_contiguous()
    check_against_reference(x_nc, w_nc, (5, 1, 2, 1, 'reflect'), atol=1e-9)
    torch.testing.assert_close(aggregation(x_nc, w_nc, 5, padding=2),
                               aggregation(x, w, 5, padding=2), rtol=0, atol=0)


def test_autocast_runs_in_the_autocast_dtype():
    """AMP hands the op bf16 values next to a float32 softmax: both run in bf16."""
    x, w = make_inputs(3, 1, 1, 1, 5, 6, dtype=torch.float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = aggregation(x.bfloat16(), w.softmax(2), 3, 1, 1, 1, 'reflect')
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(
        y, aggregation(x.bfloat16(), w.softmax(2).bfloat16(), 3, 1, 1, 1, 'reflect'),
        rtol=0, atol=0)


def test_autocast_leaves_float64_alone():
    """PyTorch's autocast rule: float64 inputs are not cast down."""
    x, w = make_inputs(3, 1, 1, 1, 5, 6)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = aggregation(x, w, 3, 1, 1, 1, 'reflect')
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, aggregation_ref(x, w, 3, 1, 1, 1, 'reflect'))


def test_module_wrapper():
    x, w = make_inputs(3, 1, 1, 1, 5, 6)
    m = Aggregation(3, padding=1, pad_mode='reflect')
    assert 'reflect' in repr(m)
    torch.testing.assert_close(m(x, w), aggregation_ref(x, w, 3, 1, 1, 1, 'reflect'))


@pytest.mark.parametrize('make,exc,match', [
    (lambda x, w: (x[0], w), ValueError, r'input must be 4-D, got shape \[6, 7, 8\]'),
    (lambda x, w: (x, torch.cat([w, w[:, :1]], 1)), ValueError,
     r'C=6 must be a multiple of .*Cw=4'),
    (lambda x, w: (x, w[:, :, :8]), ValueError, r'weight taps .*=8 != kernel area 3\*3=9'),
    (lambda x, w: (x, w[..., :-1]), ValueError, r'weight positions .*=55 != Ho\*Wo=7\*8=56'),
    (lambda x, w: (x, w[:1]), ValueError, r'weight batch 1 != input batch 2'),
    (lambda x, w: (x.long(), w), TypeError, r'input must be a floating tensor.*Long'),
    (lambda x, w: (x, w.float()), TypeError, r'one dtype, got input Double and weight Float'),
])
def test_bad_inputs(make, exc, match):
    x, w = make_inputs(3, 1, 1, 1, 7, 8)
    with pytest.raises(exc, match=match):
        aggregation(*make(x, w), 3, 1, 1, 1, 'zeros')


def test_bad_geometry():
    x, w = make_inputs(3, 1, 1, 1, 7, 8)
    with pytest.raises(ValueError, match=r'reflect padding needs padding < input size, got '
                                         r'padding=\[7, 7\] for an input of size \(7, 8\)'):
        aggregation(x, w, 3, 1, 7, 1, 'reflect')
    with pytest.raises(ValueError, match=r"pad_mode must be one of \['reflect', 'zeros'\], "
                                         r"got 'circular'"):
        aggregation(x, w, 3, 1, 1, 1, 'circular')
    with pytest.raises(ValueError, match=r'stride must be >= 1, got \[0, 0\]'):
        aggregation(x, w, 3, 0, 1, 1)
    with pytest.raises(ValueError, match=r'does not fit the input of size \(7, 8\)'):
        aggregation(x, w, 9, 1, 0, 1)


def test_cpp_checks_guard_direct_op_calls():
    """The checks are the C++ op's: a direct torch.ops.lsa.* call fails the same way."""
    x, w = make_inputs(3, 1, 1, 1, 7, 8)
    with pytest.raises(ValueError, match=r'weight taps .*=8 != kernel area 3\*3'):
        torch.ops.lsa.aggregation_forward(x, w[:, :, :8], [3, 3], [1, 1], [1, 1], [1, 1], 0)
    with pytest.raises(ValueError, match=r'reflect padding needs padding < input size'):
        torch.ops.lsa.aggregation_forward(x, w, [3, 3], [1, 1], [7, 7], [1, 1], 1)


def test_missing_extension_raises_build_error(monkeypatch):
    monkeypatch.setattr(ext, 'HAS_EXT', False)
    x, w = make_inputs(3, 1, 1, 1, 5, 6)
    with pytest.raises(RuntimeError, match=r'lsa.ops.aggregation: lsa._C .* is not available'):
        aggregation(x, w, 3, 1, 1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('k,s,p,d,mode,H,W', EXTRA + [(7, 1, 3, 1, 'reflect', 13, 11),
                                                     (5, 2, 4, 2, 'zeros', 12, 13)])
def test_cuda_matches_cpu(dtype, k, s, p, d, mode, H, W):
    if not ext.has_cuda_kernels():
        pytest.skip('lsa._C was built without CUDA kernels')
    x, w = make_inputs(k, s, p, d, H, W, C=8, Cw=4)
    g = torch.randn(x.shape[0], 8, *aggregation_ref(x, w, k, s, p, d, mode).shape[2:])
    outs = []
    for dev in ('cpu', 'cuda'):
        xd, wd = x.to(dev, dtype).requires_grad_(), w.to(dev, dtype).requires_grad_()
        y = aggregation(xd, wd, k, s, p, d, mode)
        outs.append([t.double().cpu() for t in (y, *torch.autograd.grad(y, (xd, wd),
                                                                        g.to(dev, dtype)))])
    tol = 1e-9 if dtype == torch.float64 else TOL[dtype] * 5
    for a, b in zip(*outs):
        assert (a - b).abs().max() <= tol * max(1.0, float(b.abs().max()))
