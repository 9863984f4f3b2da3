"""Checks of a fused SAN op pair (attention, stats) against its unfused references.

Both fused ops (pairwise, patchwise) take ``ins`` = [u1, u2, value, scale1, shift1,
weight1, bias1, weight2, bias2]; their stats ops take ``stats_inputs(ins)``.
"""
from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Sequence

import pytest
import torch
from torch import Tensor

NAMES = ['u1', 'u2', 'value', 'scale1', 'shift1', 'weight1', 'bias1', 'weight2', 'bias2']
STATS_NAMES = ['u1', 'u2', 'scale1', 'shift1', 'weight1']


class FusedOp(NamedTuple):
    """A fused op pair and its references (same arguments)."""

    attention: Callable[..., Tensor]
    reference: Callable[..., Tensor]
    stats: Callable[..., Tensor]
    stats_reference: Callable[..., Tensor]


def stats_inputs(ins: Sequence[Tensor]) -> List[Tensor]:
    """The stats ops' tensors (u1, u2, scale1, shift1, weight1) out of the attention's."""
    return [*ins[:2], *ins[3:6]]


def group_scale(tensors: Sequence[Tensor]) -> float:
    return max(t.abs().max().item() for t in tensors)


def group_error(got: Sequence[Tensor], want: Sequence[Tensor]) -> float:
    """Largest |got - want| over the group, relative to the group's largest |want|."""
    err = max((a.double() - b.double()).abs().max().item() for a, b in zip(got, want))
    return err / group_scale(want)


def assert_all_close(got, want, rtol, names):
    """Each tensor to ``rtol`` relative to the largest entry of its group (gradients that
    are zero in exact arithmetic, e.g. of bias2 under the softmax, are rounding noise)."""
    scale = group_scale(want)
    for name, a, b in zip(names, got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale,
                                   msg=lambda m, name=name: f'{name}: {m}')


def _outputs_and_grads(fn, ins, args, g):
    y = fn(*ins, *args)
    return y, torch.autograd.grad(y, ins, g.to(y.dtype))


def _against_reference(fn, ref, ins, args, rtol, out_name, names):
    ins_ref = [t.detach().double().requires_grad_() for t in ins]
    y_ref = ref(*ins_ref, *args)
    g = torch.randn_like(y_ref)
    _, grads_ref = _outputs_and_grads(ref, ins_ref, args, g)
    y, grads = _outputs_and_grads(fn, ins, args, g)
    assert_all_close([y.double()], [y_ref], rtol, [out_name])
    assert_all_close([t.double() for t in grads], list(grads_ref), rtol, names)


def check_op(op: FusedOp, ins: Sequence[Tensor], args: tuple, rtol: float) -> None:
    """Output and all nine gradients against the fp64 reference (``rtol`` of each group's
    scale)."""
    _against_reference(op.attention, op.reference, ins, args, rtol, 'output', NAMES)


def check_stats(op: FusedOp, ins: Sequence[Tensor], args: tuple, rtol: float) -> None:
    """The stats op and its five gradients against the fp64 reference."""
    _against_reference(op.stats, op.stats_reference, stats_inputs(ins), args, rtol, 'stats',
                       STATS_NAMES)


def half_precision_errors(fn: Callable[..., Tensor], ref: Callable[..., Tensor],
                          ins: Sequence[Tensor], args: tuple) -> Dict[str, Dict[str, float]]:
    """Errors of ``fn`` (the fused op) and of ``ref`` run in the activations' dtype (the
    unfused composition in 16 bits), each against ``ref`` in fp64 on the same (rounded)
    inputs: ``{'fused' / 'unfused': {'output': e, 'gradients': e}}``, e relative to the
    group's scale. Checks that each gradient has its input's dtype."""
    ins_ref = [t.detach().double().requires_grad_() for t in ins]
    y_ref = ref(*ins_ref, *args)
    g = torch.randn_like(y_ref)
    _, grads_ref = _outputs_and_grads(ref, ins_ref, args, g)
    low = ins[0].dtype
    errors = {}
    for name, f, xs in (('fused', fn, ins),
                        ('unfused', ref, [t.detach().to(low).requires_grad_() for t in ins])):
        y, grads = _outputs_and_grads(f, xs, args, g)
        assert [t.dtype for t in grads] == [t.dtype for t in xs], name
        errors[name] = dict(output=group_error([y], [y_ref]),
                            gradients=group_error(grads, grads_ref))
    return errors


#: Tolerance of a 16-bit fused op's output and gradients (relative to each group's scale):
#: they are computed in float32 and rounded once to 16 bits (unit roundoff 2^-8 bf16,
#: 2^-11 fp16); measured max 3.6e-3 (bf16) / 3.1e-4 (fp16), docs/ops.md.
HALF_TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3}
#: (activation dtype, parameter dtype) pairs of the 16-bit tests: autocast's float32
#: parameters, an all-bf16 module, fp16
HALF_CASES = [(torch.bfloat16, torch.float32), (torch.bfloat16, torch.bfloat16),
              (torch.float16, torch.float32)]


def check_half_precision(op: FusedOp, ins: Sequence[Tensor], args: tuple,
                         dtype: torch.dtype, params_dtype: torch.dtype) -> None:
    """u1, u2, value in ``dtype`` (16 bits), the parameters in ``params_dtype``: output and
    gradients (each in its input's dtype) within ``HALF_TOL`` of the fp64 reference on the
    same rounded inputs and no worse than the unfused composition in ``dtype``; the stats
    are float32, to 1e-6."""
    low = [t.detach().to(dtype if i < 3 else params_dtype).requires_grad_()
           for i, t in enumerate(ins)]
    err = half_precision_errors(op.attention, op.reference, low, args)
    assert op.attention(*low, *args).dtype == dtype
    for group in ('output', 'gradients'):
        assert err['fused'][group] <= HALF_TOL[dtype], (group, err)
        assert err['fused'][group] <= err['unfused'][group], (group, err)
    sins = stats_inputs(low)
    assert op.stats(*sins, *args).dtype == torch.float32
    err = half_precision_errors(op.stats, op.stats_reference, sins, args)['fused']
    assert err['output'] <= 1e-6 and err['gradients'] <= HALF_TOL[dtype], err


def check_compiles(op: FusedOp, ins: Sequence[Tensor], args: tuple) -> None:
    """``torch.compile`` (aot_eager, one graph) of attention + stats and their backward:
    the fake implementations give the eager dtypes, and the values agree."""
    def both(*t):
        return op.attention(*t, *args), op.stats(*stats_inputs(t), *args)

    compiled = torch.compile(both, backend='aot_eager', fullgraph=True)
    got, want = compiled(*ins), both(*ins)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b)
    g = [torch.randn_like(t) for t in want]
    # one backward per graph (aot_eager's backward donates its buffers)
    for a, b in zip(*[torch.autograd.grad(ys, ins, g, materialize_grads=True)
                      for ys in (got, want)]):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b)


def check_dtype_errors(op: FusedOp, ins: Sequence[Tensor], kernel_size: int) -> None:
    """Clear TypeErrors for dtypes outside the rule (``ins`` in fp64)."""
    with pytest.raises(TypeError, match='dtype must be float32, float64, bfloat16 or '
                                        'float16, got u1 torch.int32'):
        op.attention(*[t.detach().int() for t in ins], kernel_size)
    with pytest.raises(TypeError, match=r'the activations \(u1, u2, value\) must have one '
                                        'dtype, got u1 torch.bfloat16 and value torch.float32'):
        op.attention(ins[0].bfloat16(), ins[1].bfloat16(), ins[2].float(), *ins[3:],
                     kernel_size)
    with pytest.raises(TypeError, match=r'the activations \(u1, u2\) must have one dtype, '
                                        'got u1 torch.bfloat16 and u2 torch.float32'):
        op.stats(ins[0].bfloat16(), ins[1].float(), *stats_inputs(ins)[2:], kernel_size)
    with pytest.raises(TypeError, match='with torch.float64 activations the parameters must '
                                        'be torch.float64, got scale1 torch.bfloat16'):
        op.attention(*ins[:3], ins[3].bfloat16(), *ins[4:], kernel_size)
    with pytest.raises(TypeError, match='with torch.bfloat16 activations the parameters must '
                                        'be torch.bfloat16 or torch.float32, got weight1 '
                                        'torch.float64'):
        op.stats(*[t.bfloat16() for t in stats_inputs(ins)[:4]], ins[5], kernel_size)


def check_refuses_double_backward(op: FusedOp, ins: Sequence[Tensor], args: tuple) -> None:
    """A gradient of the gradient through either fused op raises (it would otherwise be a
    silent zero: the backward kernels have no derivative), while the first-order gradients
    taken with ``create_graph=True`` still equal those without it."""
    for fn, tensors in ((op.attention, list(ins)), (op.stats, stats_inputs(ins))):
        y = fn(*tensors, *args)
        g1 = torch.autograd.grad(y.square().sum(), tensors, create_graph=True)
        want = torch.autograd.grad(fn(*tensors, *args).square().sum(), tensors)
        for a, b in zip(g1, want):
            torch.testing.assert_close(a.detach(), b)
        with pytest.raises(NotImplementedError, match='double backward'):
            torch.autograd.grad(sum(g.square().sum() for g in g1), tensors)
