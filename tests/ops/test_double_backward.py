"""Second-order gradients of the SAN ops: exact (against the unfold references and
numerically with gradgradcheck, fp64). ELSA refuses double backward (test_elsa_op.py)."""
import itertools

import pytest
import torch
from torch.autograd import gradgradcheck

import lsa.ops._ext as ext
from lsa.ops import aggregation, subtraction, subtraction2
from lsa.ops.reference import aggregation_ref, subtraction2_ref, subtraction_ref

pytestmark = pytest.mark.skipif(not ext.HAS_EXT, reason='lsa._C is not built')

# (kernel, stride, padding, dilation, pad_mode, H, W): the geometry classes of the
# first-order tests (SAN padding, other paddings, strides, dilations, non-square pairs)
GEOMS = [(k, s, d * (k - 1) // 2, d, m, 7, 6)
         for k, s, d, m in itertools.product((3, 5), (1, 2), (1, 2), ('zeros', 'reflect'))
         if not (k == 5 and d == 2 and m == 'reflect')]  # reflect needs padding < size
GEOMS += [
    (3, 1, 0, 1, 'zeros', 6, 5),
    (5, 1, 1, 1, 'reflect', 7, 8),
    (3, 2, 3, 1, 'zeros', 7, 6),
    ((3, 5), (2, 1), (1, 2), (2, 1), 'reflect', 7, 9),
]
# small cases for the (slow) numerical gradgradcheck: one per pad mode and shape class
SMALL = [(3, 2, 1, 1, 'zeros', 5, 4), (3, 1, 1, 1, 'reflect', 4, 5),
         ((3, 2), (1, 2), (1, 0), (1, 2), 'reflect', 4, 5)]


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def _weight(x, k, s, p, d, cw):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (k, s, p, d))
    ho = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return torch.randn(x.shape[0], cw, kh * kw, ho * wo, dtype=x.dtype)


def _cases(geom, n=2, c=4, cw=2):
    """(name, op, reference, inputs) for the three SAN ops at one geometry."""
    k, s, p, d, mode, h, w = geom
    args = (k, s, p, d, mode)
    x1, x2 = torch.randn(2, n, c, h, w, dtype=torch.float64)
    wt = _weight(x1, k, s, p, d, cw)
    return [
        ('aggregation', lambda a, b: aggregation(a, b, *args),
         lambda a, b: aggregation_ref(a, b, *args), (x1, wt)),
        ('subtraction2', lambda a, b: subtraction2(a, b, *args),
         lambda a, b: subtraction2_ref(a, b, *args), (x1, x2)),
        ('subtraction', lambda a: subtraction(a, *args), lambda a: subtraction_ref(a, *args),
         (x1,)),
    ]


def _second_order(fn, inputs, g, vs):
    """d/d(inputs) <grad_inputs(<fn(inputs), g>), vs>, and d/dg of the same: every
    second-order term (the backward ops' derivatives w.r.t. grad_output and the inputs)."""
    inputs = [t.detach().requires_grad_() for t in inputs]
    g = g.detach().requires_grad_()
    y = fn(*inputs)
    grads = torch.autograd.grad(y, inputs, g, create_graph=True)
    dot = sum((a * v).sum() for a, v in zip(grads, vs))
    return torch.autograd.grad(dot, [*inputs, g], allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize('geom', GEOMS, ids=str)
def test_second_order_matches_reference(geom):
    for name, op, ref, inputs in _cases(geom):
        g = torch.randn_like(ref(*inputs))
        vs = [torch.randn_like(t) for t in inputs]
        got = _second_order(op, inputs, g, vs)
        want = _second_order(ref, inputs, g, vs)
        assert any(t.abs().max() > 0 for t in want), name  # the probe sees second-order terms
        for i, (a, b) in enumerate(zip(got, want)):
            torch.testing.assert_close(a, b, atol=1e-9, rtol=0,
                                       msg=lambda m, name=name, i=i: f'{name} term {i}: {m}')


@pytest.mark.parametrize('geom', SMALL, ids=str)
def test_gradgradcheck(geom):
    for name, op, _, inputs in _cases(geom, n=1, c=2, cw=1):
        inputs = tuple(t.requires_grad_() for t in inputs)
        assert gradgradcheck(op, inputs), name


def _third_order(fn, inputs, g, vs, us):
    """The gradient of <second-order terms, us> (see :func:`_second_order`)."""
    inputs = [t.detach().requires_grad_() for t in inputs]
    g = g.detach().requires_grad_()
    grads = torch.autograd.grad(fn(*inputs), inputs, g, create_graph=True)
    second = torch.autograd.grad(sum((a * v).sum() for a, v in zip(grads, vs)), [*inputs, g],
                                 create_graph=True, materialize_grads=True)
    dot = sum((a * u).sum() for a, u in zip(second, us) if a.requires_grad)
    if not isinstance(dot, torch.Tensor):  # a linear op: every third-order term is 0
        return [torch.zeros_like(t) for t in (*inputs, g)]
    return torch.autograd.grad(dot, [*inputs, g], allow_unused=True, materialize_grads=True)


def test_third_order_matches_reference():
    """The double-backward formulas are themselves lsa ops with autograd (aggregation is
    bilinear: it has non-zero third-order terms)."""
    for name, op, ref, inputs in _cases((3, 1, 1, 1, 'reflect', 5, 6), n=1, c=2, cw=1):
        g = torch.randn_like(ref(*inputs))
        vs = [torch.randn_like(t) for t in inputs]
        us = [torch.randn_like(t) for t in (*inputs, g)]
        got, want = _third_order(op, inputs, g, vs, us), _third_order(ref, inputs, g, vs, us)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-9, rtol=0,
                                       msg=lambda m, name=name: f'{name}: {m}')
