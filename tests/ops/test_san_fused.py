"""Fused SAN pairwise attention ops against the unfused references (and BN glue)."""
from functools import partial

import pytest
import torch
from helpers import san_fused_checks as checks
from helpers.san_fused_checks import assert_all_close, stats_inputs
from torch.library import opcheck

import lsa.ops._ext as ext
from lsa.ops import san_pairwise_attention, san_pairwise_stats
from lsa.ops._san_args import PAD_MODES
from lsa.ops.reference import san_pairwise_ref, san_pairwise_stats_ref, subtraction2_ref
from lsa.ops.san_gamma import relation_moments

pytestmark = pytest.mark.skipif(not ext.HAS_EXT, reason='lsa._C is not built')

# (kernel, dilation, pad_mode, N, H, W): both pad modes, odd / non-square / tiny sizes,
# batch 1, and maps with more pixels than one 64-pixel tile and several bands
CASES = [
    (3, 1, 'reflect', 2, 7, 9),
    (7, 1, 'reflect', 1, 11, 8),
    (7, 1, 'reflect', 2, 4, 4),
    (3, 2, 'zeros', 2, 5, 8),
    (5, 1, 'zeros', 1, 6, 5),
    (3, 1, 'reflect', 1, 13, 12),
]


def make(N, H, W, Cr=5, M=4, Cw=3, C=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(N * 1000 + H * 10 + W)

    def t(*shape):
        return torch.randn(*shape, dtype=dtype, generator=g).requires_grad_()

    return [t(N, Cr, H, W), t(N, Cr, H, W), t(N, C, H, W), t(Cr), t(Cr), t(M, Cr), t(M),
            t(Cw, M), t(Cw)]


OP = checks.FusedOp(san_pairwise_attention, san_pairwise_ref, san_pairwise_stats,
                    san_pairwise_stats_ref)
check_op, check_stats = partial(checks.check_op, OP), partial(checks.check_stats, OP)


@pytest.mark.parametrize('k,d,mode,N,H,W', CASES)
def test_forward_backward_match_reference_fp64(k, d, mode, N, H, W):
    check_op(make(N, H, W), (k, d, mode), 1e-10)


@pytest.mark.parametrize('k,d,mode,N,H,W', CASES)
def test_stats_match_reference_fp64(k, d, mode, N, H, W):
    check_stats(make(N, H, W), (k, d, mode), 1e-10)


def test_fp32_close_to_fp64_reference():
    """fp32 kernels to 1e-4 of the fp64 reference (relative to each group's scale)."""
    ins = [t.detach().float().requires_grad_() for t in make(2, 9, 10, Cr=18, M=16, Cw=8,
                                                                 C=32)]
    check_op(ins, (7, 1, 'reflect'), 1e-4)
    check_stats(ins, (7, 1, 'reflect'), 1e-4)


@pytest.mark.parametrize('dtype, params_dtype', checks.HALF_CASES)
def test_half_precision_close_to_fp64_reference(dtype, params_dtype):
    """16-bit activations, parameters 16-bit or float32 (as under autocast): computed in
    float32, so within one rounding of the fp64 reference and better than the unfused
    composition in 16 bits (helpers.san_fused_checks.check_half_precision)."""
    ins = make(2, 9, 10, Cr=18, M=16, Cw=8, C=32)
    checks.check_half_precision(OP, ins, (7, 1, 'reflect'), dtype, params_dtype)


def test_compile_bf16():
    """bf16 activations, float32 parameters through torch.compile: one graph, eager dtypes."""
    ins = [t.detach().to(torch.bfloat16 if i < 3 else torch.float32).requires_grad_()
           for i, t in enumerate(make(2, 5, 6))]
    checks.check_compiles(OP, ins, (3, 1, 'reflect'))


@pytest.mark.parametrize('dtype, factor, rtol', [(torch.float64, 100., 1e-10),
                                                  (torch.float32, 10., 1e-4)])
def test_logits_spanning_the_exp_range(dtype, factor, rtol):
    """Logit gaps to the tap maximum from 0 to ~2000 (fp64) / ~200 (fp32): 15-25 % of the
    softmax terms underflow (the kernel's vectorised exp flushes them to 0), the rest cross
    its whole range; 90 pixels, so full tiles and a partial one."""
    ins = [t.detach().to(dtype) for t in make(2, 9, 10, Cr=6, M=8, Cw=3, C=6)]
    ins[7] *= factor
    check_op([t.requires_grad_() for t in ins], (3, 1, 'reflect'), rtol)


def test_non_contiguous_inputs():
    ins = make(2, 7, 6)
    nc = [ins[0].detach().transpose(2, 3).contiguous().transpose(2, 3),  # strides (.., 1, H)
          ins[1].detach().contiguous(memory_format=torch.channels_last),
          ins[2].detach()[:, :, :, :].contiguous(memory_format=torch.channels_last),
          torch.stack([ins[3].detach(), ins[3].detach()], 1)[:, 0],
          ins[4].detach(), ins[5].detach().t().contiguous().t(), ins[6].detach(),
          ins[7].detach().t().contiguous().t(), ins[8].detach()]
    assert not nc[0].is_contiguous() and not nc[5].is_contiguous()
    nc = [t.requires_grad_() for t in nc]
    check_op(nc, (3, 1, 'reflect'), 1e-10)
    check_stats(nc, (3, 1, 'reflect'), 1e-10)


def test_gradcheck():
    ins = make(1, 5, 4, Cr=2, M=3, Cw=2, C=4)
    assert torch.autograd.gradcheck(lambda *t: san_pairwise_attention(*t, 3, 1, 'reflect'), ins)
    assert torch.autograd.gradcheck(lambda *t: san_pairwise_stats(*t, 3, 1, 'zeros'),
                                    stats_inputs(ins))


def test_double_backward_raises():
    checks.check_refuses_double_backward(OP, make(2, 5, 4), (3, 1, 'reflect'))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_opcheck(dtype):
    ins = [t.detach().to(dtype).requires_grad_() for t in make(2, 5, 6)]
    opcheck(torch.ops.lsa.san_pairwise_forward, (*ins, 3, 1, 1))
    opcheck(torch.ops.lsa.san_pairwise_moments, (ins[0], ins[1], ins[3], ins[4], 3, 1, 1))


@pytest.mark.parametrize('k, d, mode', [(3, 1, 'reflect'), (3, 2, 'zeros')])
def test_moments_op_match_explicit(k, d, mode):
    """The kernel behind san_pairwise_stats: sum of a and of a a^T over (N, K, H*W)."""
    u1, u2, _, s1, t1 = make(2, 6, 7)[:5]
    r = subtraction2_ref(u1, u2, k, 1, d * (k - 1) // 2, d, mode)
    a = torch.relu(r * s1.view(1, -1, 1, 1) + t1.view(1, -1, 1, 1)).transpose(0, 1).flatten(1)
    got = torch.ops.lsa.san_pairwise_moments(u1, u2, s1, t1, k, d, PAD_MODES[mode])
    want = torch.cat([a.sum(1)[None], a @ a.T])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(want)
    assert_all_close(torch.autograd.grad(got, (u1, u2, s1, t1), g),
                     torch.autograd.grad(want, (u1, u2, s1, t1), g), 1e-10,
                     ['u1', 'u2', 'scale1', 'shift1'])


def test_deterministic_and_thread_count_independent():
    """The backward scatters run in a fixed order: bitwise equal across runs and threads."""
    ins = [t.detach().float().requires_grad_() for t in make(2, 16, 15, Cr=6, M=8, Cw=4, C=8)]
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            y = san_pairwise_attention(*ins, 7, 1, 'reflect')
            s = san_pairwise_stats(*stats_inputs(ins), 7, 1, 'reflect')
            grads = torch.autograd.grad((y.square().sum(), s.square().sum()), ins,
                                        allow_unused=True)
            results.append([y, s] + [g for g in grads if g is not None])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_relation_moments_match_explicit():
    for mode, d in (('reflect', 1), ('zeros', 2)):
        u1, u2 = make(2, 6, 7)[:2]
        r = subtraction2_ref(u1, u2, 3, 1, d, d, mode)
        mean, var = relation_moments(u1, u2, 3, d, mode)
        torch.testing.assert_close(mean, r.mean((0, 2, 3)), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(var, r.var((0, 2, 3), unbiased=False), rtol=1e-12,
                                   atol=1e-12)


def test_bad_arguments():
    ins = make(1, 5, 5)
    with pytest.raises(ValueError, match='kernel_size must be a positive odd int'):
        san_pairwise_attention(*ins, 4)
    with pytest.raises(ValueError, match='weight1 must have shape'):
        san_pairwise_stats(ins[0], ins[1], ins[3], ins[4], ins[5][:, :3], 3)
    with pytest.raises(ValueError, match='value must be'):
        san_pairwise_attention(*ins[:2], ins[2][:, :5], *ins[3:], 3)
    checks.check_dtype_errors(OP, ins, 3)
    with pytest.raises(ValueError, match='reflect'):
        san_pairwise_attention(*ins, 11)
