"""Fused SAN patchwise attention ops against the unfused references (and BN glue)."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from helpers import san_fused_checks as checks
from helpers.san_fused_checks import assert_all_close, stats_inputs
from torch.library import opcheck

import lsa.ops._ext as ext
from lsa.ops import san_patchwise_attention, san_patchwise_stats
from lsa.ops.reference import san_patchwise_ref, san_patchwise_stats_ref
from lsa.ops.san_gamma import patch_moments

pytestmark = pytest.mark.skipif(not ext.HAS_EXT, reason='lsa._C is not built')

# (kernel, dilation, pad_mode, N, H, W): both pad modes, kernels 3 / 5 / 7, odd and
# non-square sizes, batch 1, the smallest reflect size, and maps with more pixels than
# one 64-pixel tile and several bands
CASES = [
    (3, 1, 'reflect', 2, 7, 9),
    (7, 1, 'reflect', 1, 11, 8),
    (7, 1, 'reflect', 2, 4, 4),
    (3, 2, 'zeros', 2, 5, 8),
    (5, 1, 'zeros', 1, 6, 5),
    (3, 1, 'reflect', 1, 13, 12),
]


def make(N, H, W, k, R=3, M=4, Cw=2, C=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(N * 1000 + H * 10 + W + k)
    K = k * k

    def t(*shape):
        return torch.randn(*shape, dtype=dtype, generator=g).requires_grad_()

    return [t(N, R, H, W), t(N, R, H, W), t(N, C, H, W), t(R * (K + 1)), t(R * (K + 1)),
            t(M, R * (K + 1)), t(M), t(Cw * K, M), t(Cw * K)]


OP = checks.FusedOp(san_patchwise_attention, san_patchwise_ref, san_patchwise_stats,
                    san_patchwise_stats_ref)
check_op, check_stats = partial(checks.check_op, OP), partial(checks.check_stats, OP)


@pytest.mark.parametrize('k,d,mode,N,H,W', CASES)
def test_forward_backward_match_reference_fp64(k, d, mode, N, H, W):
    check_op(make(N, H, W, k), (k, d, mode), 1e-10)


@pytest.mark.parametrize('k,d,mode,N,H,W', CASES)
def test_stats_match_reference_fp64(k, d, mode, N, H, W):
    check_stats(make(N, H, W, k), (k, d, mode), 1e-10)


def test_fp32_close_to_fp64_reference():
    """fp32 kernels to 1e-4 of the fp64 reference (relative to each group's scale), at the
    channel counts of SAN10's first patchwise stage (R=16, M=Cw=8) on a small map."""
    ins = [t.detach().float().requires_grad_()
           for t in make(2, 9, 10, 7, R=16, M=8, Cw=8, C=64)]
    check_op(ins, (7, 1, 'reflect'), 1e-4)
    check_stats(ins, (7, 1, 'reflect'), 1e-4)


@pytest.mark.parametrize('dtype, params_dtype', checks.HALF_CASES)
def test_half_precision_close_to_fp64_reference(dtype, params_dtype):
    """16-bit activations, parameters 16-bit or float32 (as under autocast): computed in
    float32, so within one rounding of the fp64 reference and better than the unfused
    composition in 16 bits (helpers.san_fused_checks.check_half_precision)."""
    ins = make(2, 9, 10, 7, R=4, M=8, Cw=4, C=16)
    checks.check_half_precision(OP, ins, (7, 1, 'reflect'), dtype, params_dtype)


def test_compile_bf16():
    """bf16 activations, float32 parameters through torch.compile: one graph, eager dtypes."""
    ins = [t.detach().to(torch.bfloat16 if i < 3 else torch.float32).requires_grad_()
           for i, t in enumerate(make(2, 5, 6, 3))]
    checks.check_compiles(OP, ins, (3, 1, 'reflect'))


def test_non_contiguous_inputs():
    ins = make(2, 7, 6, 3)
    nc = [ins[0].detach().transpose(2, 3).contiguous().transpose(2, 3),  # strides (.., 1, H)
          ins[1].detach().contiguous(memory_format=torch.channels_last),
          ins[2].detach().contiguous(memory_format=torch.channels_last),
          torch.stack([ins[3].detach(), ins[3].detach()], 1)[:, 0],
          ins[4].detach(), ins[5].detach().t().contiguous().t(), ins[6].detach(),
          ins[7].detach().t().contiguous().t(), ins[8].detach()]
    assert not nc[0].is_contiguous() and not nc[5].is_contiguous()
    nc = [t.requires_grad_() for t in nc]
    check_op(nc, (3, 1, 'reflect'), 1e-10)
    check_stats(nc, (3, 1, 'reflect'), 1e-10)


def test_gradcheck():
    ins = make(1, 5, 4, 3, R=2, M=3, Cw=2, C=4)
    assert torch.autograd.gradcheck(lambda *t: san_patchwise_attention(*t, 3, 1, 'reflect'), ins)
    assert torch.autograd.gradcheck(lambda *t: san_patchwise_stats(*t, 3, 1, 'zeros'),
                                    stats_inputs(ins))


def test_double_backward_raises():
    checks.check_refuses_double_backward(OP, make(2, 5, 4, 3), (3, 1, 'reflect'))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_opcheck(dtype):
    ins = [t.detach().to(dtype).requires_grad_() for t in make(2, 5, 6, 3)]
    opcheck(torch.ops.lsa.san_patchwise_forward, (*ins, 3, 1, 1))
    opcheck(torch.ops.lsa.san_patchwise_moments, (*stats_inputs(ins), 3, 1, 0))


def test_deterministic_and_thread_count_independent():
    """The backward scatters run in a fixed order: bitwise equal across runs and threads."""
    ins = [t.detach().float().requires_grad_() for t in make(2, 16, 15, 7, R=4, M=8, Cw=4, C=8)]
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            y = san_patchwise_attention(*ins, 7, 1, 'reflect')
            s = san_patchwise_stats(*stats_inputs(ins), 7, 1, 'reflect')
            grads = torch.autograd.grad((y.square().sum(), s.square().sum()), ins)
            results.append([y, s, *grads])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize('k,d,mode', [(3, 1, 'reflect'), (7, 1, 'reflect'), (3, 2, 'zeros')])
def test_patch_moments_match_unfolded(k, d, mode):
    """BN1's batch statistics without unfolding == those of the unfolded gamma input."""
    u1, u2 = make(2, 8, 7, k)[:2]
    u2 = u2 + 3.0  # an offset: the reflect path's shift must not change the result
    p = d * (k - 1) // 2
    padded = F.pad(u2, (p, p, p, p), mode='reflect' if mode == 'reflect' else 'constant')
    t = torch.cat([u1.flatten(2), F.unfold(padded, k, dilation=d)], 1)  # N, R(K+1), HW
    mean, var = patch_moments(u1, u2, k, d, mode)
    torch.testing.assert_close(mean, t.mean((0, 2)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, t.var((0, 2), unbiased=False), rtol=1e-12, atol=1e-12)
    g1, g2 = torch.randn_like(mean), torch.randn_like(var)
    got = torch.autograd.grad((mean * g1).sum() + (var * g2).sum(), (u1, u2))
    want = torch.autograd.grad((t.mean((0, 2)) * g1).sum()
                               + (t.var((0, 2), unbiased=False) * g2).sum(), (u1, u2))
    assert_all_close(got, want, 1e-10, ['u1', 'u2'])


def test_bad_arguments():
    ins = make(1, 5, 5, 3)
    with pytest.raises(ValueError, match='kernel_size must be a positive odd int'):
        san_patchwise_attention(*ins, 4)
    with pytest.raises(ValueError, match=r'scale1 must have shape \(78,\)'):
        san_patchwise_stats(*stats_inputs(ins), 5)  # gamma's input: R * (K + 1) channels
    with pytest.raises(ValueError, match='weight1 must have shape'):
        san_patchwise_stats(ins[0], ins[1], ins[3], ins[4], ins[5][:, :7], 3)
    with pytest.raises(ValueError, match='weight2 must have Cw . K rows'):
        san_patchwise_attention(*ins[:7], ins[7][:5], ins[8][:5], 3)
    with pytest.raises(ValueError, match='value must be'):
        san_patchwise_attention(*ins[:2], ins[2][:, :5], *ins[3:], 3)
    checks.check_dtype_errors(OP, ins, 3)
    with pytest.raises(ValueError, match='reflect'):
        san_patchwise_attention(*ins, 11)
    with pytest.raises(RuntimeError, match='san_patchwise_forward: weight2 rows must be a '
                                           'positive multiple of K=9'):
        torch.ops.lsa.san_patchwise_forward(*ins[:7], ins[7][:5], ins[8][:5], 3, 1, 1)
