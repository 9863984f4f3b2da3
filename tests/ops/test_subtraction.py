"""lsa.ops.subtraction / subtraction2 (compiled kernels) against their references."""
import itertools

import pytest
import torch
from torch.library import opcheck

import lsa.ops._ext as ext
from lsa.ops import Subtraction, Subtraction2, subtraction, subtraction2
from lsa.ops.reference import subtraction2_ref, subtraction_ref

pytestmark = pytest.mark.skipif(not ext.HAS_EXT, reason='lsa._C is not built')

GRID = list(itertools.product((3, 5, 7), (1, 2), (1, 2), ('zeros', 'reflect')))
# (kernel, stride, padding, dilation, pad_mode, H, W); padding != d(k-1)/2 moves the centre
EXTRA = [
    (3, 1, 0, 1, 'zeros', 6, 5),
    (5, 1, 1, 1, 'reflect', 7, 8),
    (3, 2, 3, 1, 'zeros', 7, 6),
    ((3, 5), (2, 1), (1, 2), (2, 1), 'reflect', 7, 9),
]
TOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def check_against_reference(x1, x2, args, atol):
    x1, x2 = x1.detach().requires_grad_(), x2.detach().requires_grad_()
    y = subtraction2(x1, x2, *args)
    y_ref = subtraction2_ref(x1, x2, *args)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x1, x2), g)
    grads_ref = torch.autograd.grad(y_ref, (x1, x2), g)
    # the single-input op: both gradients flow into the one input
    z = subtraction(x1, *args)
    z_ref = subtraction_ref(x1, *args)
    gz = torch.autograd.grad(z, x1, g)[0]
    gz_ref = torch.autograd.grad(z_ref, x1, g)[0]
    names = ('output', 'grad_input1', 'grad_input2', 'subtraction', 'subtraction grad')
    for name, a, b in zip(names, (y, *grads, z, gz), (y_ref, *grads_ref, z_ref, gz_ref)):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, atol=atol, rtol=0, msg=lambda m, name=name: f'{name}: {m}')


@pytest.mark.parametrize('k,s,d,mode', GRID)
def test_matches_reference_fp64(k, s, d, mode):
    p = d * (k - 1) // 2
    x1, x2 = torch.randn(2, 2, 3, 13, 14, dtype=torch.float64)
    check_against_reference(x1, x2, (k, s, p, d, mode), atol=1e-9)


@pytest.mark.parametrize('k,s,p,d,mode,H,W', EXTRA)
def test_matches_reference_other_geometry(k, s, p, d, mode, H, W):
    x1, x2 = torch.randn(2, 2, 3, H, W, dtype=torch.float64)
    check_against_reference(x1, x2, (k, s, p, d, mode), atol=1e-9)


@pytest.mark.parametrize('dtype', list(TOL))
def test_low_precision(dtype):
    """The forward is one rounding of ``a - b``: equal to the reference in the same dtype.
    Gradients (sums of up to K terms, fp32 accumulation) within the stated tolerance of fp64."""
    x1, x2 = torch.randn(2, 1, 4, 11, 10, dtype=dtype)
    y = subtraction2(x1, x2, 7, 1, 3, 1, 'reflect')
    torch.testing.assert_close(y, subtraction2_ref(x1, x2, 7, 1, 3, 1, 'reflect'), rtol=0,
                               atol=0)
    a, b = x1.requires_grad_(), x2.requires_grad_()
    a64, b64 = x1.detach().double().requires_grad_(), x2.detach().double().requires_grad_()
    g = torch.randn(y.shape, dtype=torch.float64)
    grads = torch.autograd.grad(subtraction2(a, b, 7, 1, 3, 1, 'reflect'), (a, b), g.to(dtype))
    grads64 = torch.autograd.grad(subtraction2_ref(a64, b64, 7, 1, 3, 1, 'reflect'), (a64, b64),
                                  g.to(dtype).double())
    for u, v in zip(grads, grads64):
        assert u.dtype == dtype
        err = (u.double() - v).abs().max() / v.abs().max()
        assert err < TOL[dtype], (dtype, float(err))


@pytest.mark.parametrize('mode', ['zeros', 'reflect'])
def test_gradcheck(mode):
    x1, x2 = torch.randn(2, 1, 1, 5, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: subtraction2(a, b, 3, 2, 1, 1, mode),
                                    (x1.requires_grad_(), x2.requires_grad_()))
    assert torch.autograd.gradcheck(lambda a: subtraction(a, 3, 1, 1, 1, mode), (x1,))


@pytest.mark.parametrize('mode', [0, 1])
def test_opcheck(mode):
    x1, x2 = torch.randn(2, 2, 3, 6, 7)
    geom = ([3, 3], [1, 1], [1, 1], [1, 1], mode)
    opcheck(torch.ops.lsa.subtraction2_forward,
            (x1.requires_grad_(), x2.requires_grad_(), *geom))
    opcheck(torch.ops.lsa.subtraction2_backward, (torch.randn(2, 3, 9, 42), [2, 3, 6, 7], *geom))


def test_deterministic_across_runs_and_threads():
    x1, x2 = torch.randn(2, 2, 8, 15, 13)
    x1, x2 = x1.requires_grad_(), x2.requires_grad_()
    g = torch.randn(2, 8, 49, 15 * 13)
    threads = torch.get_num_threads()

    def run():
        y = subtraction2(x1, x2, 7, 1, 3, 1, 'reflect')
        return (y, *torch.autograd.grad(y, (x1, x2), g))

    try:
        first, second = run(), run()
        torch.set_num_threads(1)
        single = run()
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, second, single):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_empty_batch():
    x = torch.randn(0, 3, 5, 6, requires_grad=True)
    y = subtraction(x, 3, 1, 1, 1, 'reflect')
    assert y.shape == (0, 3, 9, 30)
    assert torch.autograd.grad(y.sum(), x)[0].shape == x.shape


def test_non_contiguous_inputs():
    x1, x2 = torch.randn(2, 2, 3, 9, 8, dtype=torch.float64)
    a = x1.transpose(2, 3).contiguous().transpose(2, 3)
    b = torch.randn(2, 6, 9, 8, dtype=torch.float64)[:, ::2].copy_(x2)
    assert not a.is_contiguous() and not b.is_contiguous()
    check_against_reference(a, b, (5, 1, 2, 1, 'reflect'), atol=1e-9)
    assert torch.equal(subtraction2(a, b, 5, padding=2), subtraction2(x1, x2, 5, padding=2))


def test_module_wrappers():
    x1, x2 = torch.randn(2, 2, 3, 5, 6, dtype=torch.float64)
    args = (3, 1, 1, 1, 'reflect')
    assert torch.equal(Subtraction(*args)(x1), subtraction_ref(x1, *args))
    assert torch.equal(Subtraction2(*args)(x1, x2), subtraction2_ref(x1, x2, *args))
    assert 'reflect' in repr(Subtraction2(*args))


@pytest.mark.parametrize('make,exc,match', [
    (lambda a, b: (a[0], b), ValueError, r'input must be 4-D, got shape \[3, 7, 8\]'),
    (lambda a, b: (a, b[:, :2]), ValueError, r'one shape, got \[2, 3, 7, 8\] and \[2, 2, 7, 8\]'),
    (lambda a, b: (a.int(), b), TypeError, r'input must be a floating tensor.*Int'),
    (lambda a, b: (a, b.float()), TypeError, r'one dtype, got input1 Double and input2 Float'),
])
def test_bad_inputs(make, exc, match):
    x1, x2 = torch.randn(2, 2, 3, 7, 8, dtype=torch.float64)
    with pytest.raises(exc, match=match):
        subtraction2(*make(x1, x2), 3, 1, 1, 1, 'zeros')


def test_bad_geometry():
    x = torch.randn(1, 2, 5, 9)
    with pytest.raises(ValueError, match=r'subtraction2_forward: reflect padding needs padding '
                                         r'< input size, got padding=\[5, 5\]'):
        subtraction(x, 11, 1, 5, 1, 'reflect')
    with pytest.raises(ValueError, match=r'subtraction2_forward: input must be 4-D'):
        subtraction(x[0], 3)
    with pytest.raises(TypeError, match=r'subtraction2_forward: input must be a floating tensor'):
        subtraction(x.to(torch.int64), 3)
    with pytest.raises(ValueError, match=r'kernel_size must be >= 1, got \[3, 0\]'):
        subtraction(x, (3, 0))
    with pytest.raises(TypeError, match=r'subtraction: kernel_size must be an int or a pair'):
        subtraction(x, 3.0)
    with pytest.raises(TypeError, match=r'subtraction: input must be a torch.Tensor, got list'):
        subtraction([1.0], 3)
    with pytest.raises(ValueError, match=r'grad_output must have shape \(1, 2, 9, 45\)'):
        torch.ops.lsa.subtraction2_backward(torch.randn(1, 2, 9, 44), list(x.shape), [3, 3],
                                            [1, 1], [1, 1], [1, 1], 0)


def test_backward_keeps_no_input_alive():
    """subtraction2's backward needs only the input size: autograd saves no tensor."""
    saved = []
    x1, x2 = (torch.randn(1, 2, 6, 7, requires_grad=True) for _ in range(2))
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = subtraction2(x1, x2, 3, 1, 1, 1, 'reflect')
        z = subtraction(x1, 3, 1, 1, 1, 'zeros')
    assert saved == []
    g1, g2 = torch.autograd.grad(y, (x1, x2), torch.ones_like(y))
    assert g1.shape == g2.shape == x1.shape
    assert torch.autograd.grad(z, x1, torch.ones_like(z))[0].shape == x1.shape


def test_missing_extension_raises_build_error(monkeypatch):
    monkeypatch.setattr(ext, 'HAS_EXT', False)
    with pytest.raises(RuntimeError, match=r'lsa.ops.subtraction2: lsa._C .* is not available'):
        subtraction(torch.randn(1, 1, 5, 5), 3, 1, 1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('k,s,p,d,mode,H,W', EXTRA + [(7, 1, 3, 1, 'reflect', 13, 11),
                                                     (5, 2, 4, 2, 'zeros', 12, 13)])
def test_cuda_matches_cpu(dtype, k, s, p, d, mode, H, W):
    if not ext.has_cuda_kernels():
        pytest.skip('lsa._C was built without CUDA kernels')
    x1, x2 = torch.randn(2, 2, 4, H, W)
    g = torch.randn_like(subtraction2_ref(x1, x2, k, s, p, d, mode))
    outs = []
    for dev in ('cpu', 'cuda'):
        a, b = x1.to(dev, dtype).requires_grad_(), x2.to(dev, dtype).requires_grad_()
        y = subtraction2(a, b, k, s, p, d, mode)
        outs.append([t.double().cpu() for t in (y, *torch.autograd.grad(y, (a, b),
                                                                        g.to(dev, dtype)))])
    tol = 1e-9 if dtype == torch.float64 else TOL[dtype] * 10
    for a, b in zip(*outs):
        assert (a - b).abs().max() <= tol * max(1.0, float(b.abs().max()))
