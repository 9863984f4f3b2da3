"""The CUDA kernels' per-thread bodies, run on the CPU over their whole launch grid.

``torch.ops.lsa._emulate_cuda_<op>_*`` executes the very functors that the ``.cu`` files
launch (``csrc/<op>/<op>_kernels.h``, ``lsa/emulate.h``): every block and thread of the
grid, the grid-stride loops, 32- and 64-bit indexing, the shared-memory reduction tree of
the ELSA ghost gradients. Tested against the references for every dtype, so a wrong index
or accumulation in the CUDA code fails here without a GPU.
"""
import pytest
import torch

import lsa.ops._ext as ext
from lsa.ops.reference import aggregation_ref, elsa_ref, subtraction2_ref

pytestmark = pytest.mark.skipif(
    not (ext.HAS_EXT and hasattr(torch.ops.lsa, '_emulate_cuda_elsa_forward')),
    reason='lsa._C is not built')

ops = torch.ops.lsa
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
# relative error to fp64 (16-bit types round inputs and output; fp32 accumulation)
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
# launch variants: (index_bits, max_blocks); 1 block of 256 threads makes every thread
# loop over many items (the grid-stride path), 1 << 20 is the real cap
LAUNCH = [(32, 1 << 20), (64, 1 << 20), (32, 1), (64, 3)]
MODES = {'zeros': 0, 'reflect': 1}
# (kernel, stride, padding, dilation, pad_mode, H, W)
SAN_GEOMS = [
    (3, 1, 1, 1, 'reflect', 9, 8),
    (5, 2, 4, 2, 'zeros', 11, 10),
    (7, 1, 3, 1, 'reflect', 8, 9),
    ((3, 5), (2, 1), (1, 2), (2, 1), 'reflect', 7, 9),
    (3, 2, 3, 1, 'zeros', 7, 6),
    (3, 1, 2, 1, 'reflect', 6, 7),  # padding > centre offset: the centre itself is reflected
]


def _pair(v):
    return list(v) if isinstance(v, tuple) else [v, v]


def _close(name, got, want, dtype):
    assert got.dtype == dtype and got.shape == want.shape, name
    err = (got.double() - want).abs().max().item()
    assert err <= TOL[dtype] * max(want.abs().max().item(), 1.0), (name, dtype, err)


def _grads(fn, inputs, grad):
    inputs = [t.detach().double().requires_grad_() for t in inputs]
    out = fn(*inputs)
    return out, torch.autograd.grad(out, inputs, grad.double())


def _san(geom, dtype, c=6, cw=3):
    """Op arguments, input (N, C, H, W), weight (N, Cw, K, L), and (Ho, Wo) for a geometry."""
    k, s, p, d, mode, H, W = geom
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (k, s, p, d))
    ho, wo = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    args = ([kh, kw], [sh, sw], [ph, pw], [dh, dw], MODES[mode])
    x = torch.randn(2, c, H, W).to(dtype)
    w = torch.randn(2, cw, kh * kw, ho * wo).to(dtype)
    return args, x, w, (ho, wo)


@pytest.mark.parametrize('bits,blocks', LAUNCH)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('geom', SAN_GEOMS, ids=str)
def test_aggregation_kernels(geom, dtype, bits, blocks):
    args, x, w, (ho, wo) = _san(geom, dtype)
    g = torch.randn(2, x.shape[1], ho, wo).to(dtype)
    want, (dx_want, dw_want) = _grads(lambda a, b: aggregation_ref(a, b, *geom[:5]), (x, w), g)
    emu = (bits, blocks)
    _close('forward', ops._emulate_cuda_aggregation_forward(x, w, *args, *emu), want, dtype)
    _close('grad_input', ops._emulate_cuda_aggregation_backward_input(g, x, w, *args, *emu),
           dx_want, dtype)
    _close('grad_weight', ops._emulate_cuda_aggregation_backward_weight(g, x, w, *args, *emu),
           dw_want, dtype)


@pytest.mark.parametrize('bits,blocks', LAUNCH)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('geom', SAN_GEOMS, ids=str)
def test_subtraction2_kernels(geom, dtype, bits, blocks):
    args, x1, _, (ho, wo) = _san(geom, dtype)
    x2 = torch.randn_like(x1)
    g = torch.randn(2, x1.shape[1], args[0][0] * args[0][1], ho * wo).to(dtype)
    want, (d1_want, d2_want) = _grads(lambda a, b: subtraction2_ref(a, b, *geom[:5]), (x1, x2), g)
    emu = (bits, blocks)
    _close('forward', ops._emulate_cuda_subtraction2_forward(x1, x2, *args, *emu), want, dtype)
    d1, d2 = ops._emulate_cuda_subtraction2_backward(g, list(x1.shape), *args, *emu)
    _close('grad_input1', d1, d1_want, dtype)
    _close('grad_input2', d2, d2_want, dtype)


# (Nb, Cg, H, W, k, stride, dilation, ghost_mul shape, ghost_add shape)
ELSA_CASES = [
    (2, 3, 9, 8, 3, 1, 1, 'full', 'full'),
    (2, 4, 11, 10, 5, 2, 1, 'one', 'full'),
    (1, 2, 12, 9, 3, 3, 2, 'full', 'head'),
    (2, 3, 7, 7, 7, 1, 1, 'head', 'one'),
    (1, 2, 20, 18, 3, 1, 1, 'full', 'full'),  # > 256 positions: ghost threads loop (strided)
]


@pytest.mark.parametrize('bits,blocks', LAUNCH)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('case', ELSA_CASES, ids=str)
def test_elsa_kernels(case, dtype, bits, blocks):
    nb, cg, H, W, k, s, d, mul_kind, add_kind = case
    shapes = {'full': (nb, cg, k, k), 'one': (1, 1, 1, 1), 'head': (1, cg, k, k)}
    v = torch.randn(nb, cg, H, W).to(dtype)
    a = torch.randn(nb, k * k, H // s, W // s).to(dtype)
    m, b = torch.randn(shapes[mul_kind]).to(dtype), torch.randn(shapes[add_kind]).to(dtype)
    g = torch.randn(nb, cg, H // s, W // s).to(dtype)
    want, grads_want = _grads(lambda *t: elsa_ref(*t, k, s, d), (v, a, m, b), g)
    emu = (bits, blocks)
    _close('forward', ops._emulate_cuda_elsa_forward(v, a, m, b, k, s, d, *emu), want, dtype)
    full = (nb, cg, k, k)  # the op returns the ghost gradients unreduced
    got = ops._emulate_cuda_elsa_backward(g, v, a, m, b, k, s, d, [True] * 4, *emu)
    for name, t, ref, like in zip(('features', 'attn', 'ghost_mul', 'ghost_add'), got,
                                  grads_want, (v, a, m, b)):
        assert t.dtype == dtype, name
        if t.shape != like.shape:  # a broadcast ghost: reduce as autograd does (in fp64)
            assert t.shape == full, name
            t = t.double().sum_to_size(like.shape).to(dtype)
        _close(name, t, ref, dtype)


@pytest.mark.parametrize('bits,blocks', LAUNCH[1:3])
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('case', ELSA_CASES[:3], ids=str)
def test_elsa_softmax_kernels(case, dtype, bits, blocks):
    """The fused-softmax launch: the softmax kernel before the forward, the softmax
    gradient kernel after dA (the logits' gradient)."""
    nb, cg, H, W, k, s, d, mul_kind, add_kind = case
    shapes = {'full': (nb, cg, k, k), 'one': (1, 1, 1, 1), 'head': (1, cg, k, k)}
    v = torch.randn(nb, cg, H, W).to(dtype)
    logits = (2 * torch.randn(nb, k * k, H // s, W // s)).to(dtype)
    m, b = torch.randn(shapes[mul_kind]).to(dtype), torch.randn(shapes[add_kind]).to(dtype)
    g = torch.randn(nb, cg, H // s, W // s).to(dtype)
    ref = lambda *t: elsa_ref(*t, k, s, d, softmax=True)  # noqa: E731
    want, grads_want = _grads(ref, (v, logits, m, b), g)
    emu = (bits, blocks)
    out, probs = ops._emulate_cuda_elsa_softmax_forward(v, logits, m, b, k, s, d, *emu)
    _close('forward', out, want, dtype)
    _close('softmax', probs, logits.double().softmax(1), dtype)
    got = ops._emulate_cuda_elsa_softmax_backward(g, v, probs, m, b, k, s, d, [True] * 4, *emu)
    full = (nb, cg, k, k)
    for name, t, want_t, like in zip(('features', 'logits', 'ghost_mul', 'ghost_add'), got,
                                     grads_want, (v, logits, m, b)):
        if t.shape != like.shape:
            assert t.shape == full, name
            t = t.double().sum_to_size(like.shape).to(dtype)
        _close(name, t, want_t, dtype)


def test_elsa_ghost_gradients_only_where_asked():
    v, a = torch.randn(1, 2, 6, 6), torch.randn(1, 9, 6, 6)
    m, b, g = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3), torch.randn(1, 2, 6, 6)
    dv, da, dm, dd = ops._emulate_cuda_elsa_backward(g, v, a, m, b, 3, 1, 1,
                                                     [False, False, True, False], 64, 1)
    assert dv.numel() == da.numel() == dd.numel() == 0 and dm.shape == m.shape


def test_emulation_rejects_bad_launch_arguments():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(1, 1, 9, 25)
    with pytest.raises(RuntimeError, match='index_bits must be 32 or 64, got 16'):
        ops._emulate_cuda_aggregation_forward(x, w, [3, 3], [1, 1], [1, 1], [1, 1], 0, 16, 1)
    with pytest.raises(RuntimeError, match='max_blocks must be >= 1, got 0'):
        ops._emulate_cuda_aggregation_forward(x, w, [3, 3], [1, 1], [1, 1], [1, 1], 0, 32, 0)
