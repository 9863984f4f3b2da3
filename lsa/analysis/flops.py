"""FLOP handles for the ops mmengine's analyzer does not count, and a counter that uses them.

mmengine's :class:`~mmengine.analysis.FlopAnalyzer` traces the model with ``torch.jit``
and counts each traced op with a *handle* ``(inputs, outputs) -> flops`` looked up by
the op's name. It has handles for convolutions, linear layers, matmul/bmm/einsum and
norms, but none for lsa's compiled attention ops, ``scaled_dot_product_attention``,
``baddbmm`` (the ELSA block's 1x1 projections) or mmcv's deformable convolutions, so those
count as zero. :data:`LSA_FLOP_HANDLES` fills the gap; :func:`flop_analyzer` returns an
analyzer with them installed.

Convention (mmengine's, and the SAN/DeiT/Swin papers'): one multiply-add is one FLOP;
element-wise ops, softmax and activations are not counted. Per op, with ``numel(out)``
the number of output elements:

============================================  =================================================
op                                            FLOPs
============================================  =================================================
``lsa::aggregation_forward``                  ``numel(out) * kh * kw`` (one MAC per tap)
``lsa::subtraction2_forward``                 ``numel(out)`` (one subtraction per tap)
``lsa::elsa_forward``                         ``2 * numel(out) * k * k`` (per tap: filter
                                              ``A * M + D``, then the weighted sum)
``lsa::elsa_softmax_forward``                 the same (the softmax is not counted, as
                                              ``aten::softmax`` is not)
``lsa::san_pairwise_forward`` (fused SAN)     what the unfused path counts: relation
                                              ``P * Cr``, gamma's two BatchNorms ``2 * P *
                                              (Cr + M)``, its 1x1 convs ``P * M * (Cr + Cw)``,
                                              aggregation ``numel(out) * K`` (``P = N*K*H*W``)
``lsa::san_patchwise_forward`` (fused SAN)    what the unfused path counts: gamma's
                                              BatchNorms ``2 * P * (Ca + M)``, its 1x1
                                              convs ``P * M * (Ca + Cw * K)``, aggregation
                                              ``numel(out) * K`` (``P = N*H*W``,
                                              ``Ca = R * (K + 1)``)
``aten::scaled_dot_product_attention``        ``B * L * S * (E + Ev)`` (``q k^T`` and ``A v``)
``aten::matmul`` / ``aten::bmm``              ``prod(batch) * n * k * m``, batch dims broadcast
``aten::baddbmm``                             as ``bmm`` (the bias add is not counted)
``aten::einsum`` (two operands)               product of the sizes of all its indices
LESA's ``_RelLogits`` / ``_RelValue``         ``B * G * L * L * d`` (q.E_q, k.E_k / A.E_v, as
                                              the released einsums)
DCN (``DeformConv2dFunction``)                ``numel(out) * Cin/g * kh * kw`` (the conv) +
                                              ``4 * N * Cin * kh * kw * Ho * Wo`` (bilinear
                                              sampling, as mmengine counts ``grid_sampler``)
Modulated DCN                                 the same + ``N * Cin * kh * kw * Ho * Wo`` (mask)
============================================  =================================================

A new op needs one line in :data:`LSA_FLOP_HANDLES` (its traced name and a handle).
The lsa ops are counted only when the compiled extension ``lsa._C`` is loaded; without
it the ops run their pure-PyTorch references, whose unfold/multiply steps are not counted.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Sequence

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import conv_flop_jit, einsum_flop_jit
from mmengine.analysis.print_helper import _format_size, complexity_stats_table
from torch import nn

__all__ = ['LSA_FLOP_HANDLES', 'SAN_COUNTER_HANDLES', 'complexity_info', 'flop_analyzer']

Handle = Callable[[Sequence[Any], Sequence[Any]], int]


def _shape(value: Any) -> list[int]:
    """Sizes of a traced tensor value; a clear error if the trace lost them."""
    if not value.isCompleteTensor():
        raise ValueError(f'FLOP handle: the traced value {value.debugName()} has no complete '
                         'tensor type (shape unknown); trace with concrete inputs')
    return list(value.type().sizes())


def aggregation_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """SAN aggregation: (N, C, Ho, Wo) outputs, each a weighted sum over the K taps of
    the (N, Cw, K, Ho*Wo) weight."""
    return math.prod(_shape(outputs[0])) * _shape(inputs[1])[2]


def subtraction_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """SAN (pairwise) subtraction: one subtraction per (N, C, K, Ho*Wo) output."""
    return math.prod(_shape(outputs[0]))


def elsa_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """ELSA: per output and tap, one MAC for ``A * M + D`` and one for the weighted sum."""
    taps = _shape(inputs[1])[1]  # attn: (Nb, k*k, Ho, Wo)
    return 2 * math.prod(_shape(outputs[0])) * taps


def _san_pairwise_sizes(inputs: Sequence[Any]) -> tuple[int, int, int, int]:
    """(P, Cr, M, Cw) of ``lsa::san_pairwise_forward``: P = N * K * H * W (pixel, tap) pairs."""
    n, cr, h, w = _shape(inputs[0])  # u1
    m, cw = _shape(inputs[5])[0], _shape(inputs[7])[0]  # weight1 (M, Cr), weight2 (Cw, M)
    k = inputs[9].toIValue()  # kernel_size
    return n * k * k * h * w, cr, m, cw


def san_pairwise_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """Fused SAN pairwise attention, counted as the unfused path it replaces (so a model's
    count does not depend on which path runs; equal at batch 1, where the unfused path's
    position relation has the batch size too): relation ``u1_i - u2_j`` (``subtraction2``),
    gamma's BatchNorms at 2 per element (mmengine's eval count; BN2 is folded into the
    op's conv1), its two 1x1 convs, and the aggregation of ``value``."""
    p, cr, m, cw = _san_pairwise_sizes(inputs)
    taps = inputs[9].toIValue() ** 2
    return p * cr + 2 * p * (cr + m) + p * m * (cr + cw) + math.prod(_shape(outputs[0])) * taps


def san_pairwise_counter_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """The fused op under the SAN authors' counter: :func:`san_pairwise_flops` plus gamma's
    two ReLUs (one per element) and conv2's bias (one per output element)."""
    p, cr, m, cw = _san_pairwise_sizes(inputs)
    return san_pairwise_flops(inputs, outputs) + p * (cr + m) + p * cw


def _san_patchwise_sizes(inputs: Sequence[Any]) -> tuple[int, int, int, int]:
    """(P, Ca, M, Cw * K) of ``lsa::san_patchwise_forward``: P = N * H * W pixels."""
    n, _, h, w = _shape(inputs[0])  # u1
    m, ca = _shape(inputs[5])  # weight1 (M, Ca)
    return n * h * w, ca, m, _shape(inputs[7])[0]  # weight2 (Cw * K, M)


def san_patchwise_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """Fused SAN patchwise attention, counted as the unfused path it replaces: gamma's
    BatchNorms at 2 per element (BN2 is folded into the op's conv1), its two 1x1 convs
    and the aggregation of ``value`` (the unfold itself counts nothing)."""
    p, ca, m, cwk = _san_patchwise_sizes(inputs)
    taps = inputs[9].toIValue() ** 2
    return 2 * p * (ca + m) + p * m * (ca + cwk) + math.prod(_shape(outputs[0])) * taps


def san_patchwise_counter_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """The fused op under the SAN authors' counter: :func:`san_patchwise_flops` plus
    gamma's two ReLUs and conv2's bias."""
    p, ca, m, cwk = _san_patchwise_sizes(inputs)
    return san_patchwise_flops(inputs, outputs) + p * (ca + m) + p * cwk


def sdpa_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``scaled_dot_product_attention(q, k, v)``: (.., L, E) x (.., S, E) and (.., L, S) x (.., S, Ev)."""
    q, k, v = (_shape(t) for t in inputs[:3])
    batch = math.prod(torch.broadcast_shapes(q[:-2], k[:-2], v[:-2]))
    L, E, S, Ev = q[-2], q[-1], k[-2], v[-1]
    return batch * L * S * (E + Ev)


def matmul_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``matmul``/``bmm`` with broadcast batch dims: (.., n, k) x (.., k, m) -> n*k*m per batch."""
    a, b = _shape(inputs[0]), _shape(inputs[1])
    if len(a) == 1:
        a = [1] + a
    if len(b) == 1:
        b = b + [1]
    if a[-1] != b[-2]:
        raise ValueError(f'matmul FLOP handle: inner sizes differ, shapes {a} and {b}')
    batch = math.prod(torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2])))
    return batch * a[-2] * a[-1] * b[-1]


def baddbmm_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``baddbmm(bias, a, b)``: the ``a @ b`` MACs; the bias add is element-wise (not counted,
    as for ``linear``)."""
    return matmul_flops(inputs[1:3], outputs)


def einsum_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """Two-operand ``einsum``: one MAC per point of the loop nest over all its indices.

    (mmengine's handle takes numpy's float estimate, which is a few MACs off.) Other
    forms (one or three operands, ``...``) fall back to mmengine's handle.
    """
    equation = inputs[0].toIValue().replace(' ', '')
    operands = list(inputs[1].node().inputs())
    lhs = equation.split('->')[0].split(',')
    if len(operands) != 2 or '.' in equation or len(lhs) != 2:
        return einsum_flop_jit(inputs, outputs)
    sizes: dict[str, int] = {}
    for letters, value in zip(lhs, operands):
        shape = _shape(value)
        if len(letters) != len(shape):
            raise ValueError(f'einsum FLOP handle: {equation!r} does not fit shape {shape}')
        for letter, size in zip(letters, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return math.prod(sizes.values())


def rel_logits_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """LESA's q.E_q / k.E_k (``_RelLogits``): one MAC per (b, g, i, j, c), as the released
    einsum (the GEMM that computes it runs 2L-1 columns per token, L of them kept)."""
    return math.prod(_shape(outputs[0])) * _shape(inputs[1])[0]


def rel_value_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """LESA's A.E_v (``_RelValue``): one MAC per (b, g, i, j, c), as the released einsum
    (the padded GEMM that computes it runs 2L-1 columns per row, L of them non-zero)."""
    return math.prod(_shape(inputs[0])) * _shape(inputs[1])[0]


def _dcn_flops(inputs: Sequence[Any], outputs: Sequence[Any], modulated: bool) -> int:
    # traced tensor inputs: input, offset, (mask,) weight, (bias)
    x = _shape(inputs[0])
    w = _shape(inputs[3 if modulated else 2])
    out = _shape(outputs[0])
    n, cin = x[0], x[1]
    taps = w[2] * w[3]
    samples = n * cin * taps * out[2] * out[3]  # sampled input values
    conv = math.prod(out) * w[1] * taps
    return conv + 4 * samples + (samples if modulated else 0)


def dcn_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """mmcv ``DeformConv2d``: the conv MACs plus 4 per bilinearly sampled value."""
    return _dcn_flops(inputs, outputs, modulated=False)


def modulated_dcn_flops(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """mmcv ``ModulatedDeformConv2d``: as :func:`dcn_flops` plus the mask product."""
    return _dcn_flops(inputs, outputs, modulated=True)


#: Traced op name -> FLOP handle, added to mmengine's defaults by :func:`flop_analyzer`.
LSA_FLOP_HANDLES: dict[str, Handle] = {
    'lsa::aggregation_forward': aggregation_flops,
    'lsa::subtraction2_forward': subtraction_flops,
    'lsa::elsa_forward': elsa_flops,
    'lsa::elsa_softmax_forward': elsa_flops,
    'lsa::san_pairwise_forward': san_pairwise_flops,
    'lsa::san_patchwise_forward': san_patchwise_flops,
    'aten::scaled_dot_product_attention': sdpa_flops,
    'aten::matmul': matmul_flops,
    'aten::bmm': matmul_flops,
    'aten::baddbmm': baddbmm_flops,
    'aten::einsum': einsum_flops,
    'prim::PythonOp._RelLogits': rel_logits_flops,
    'prim::PythonOp._RelValue': rel_value_flops,
    'prim::PythonOp.DeformConv2dFunction': dcn_flops,
    'prim::PythonOp.ModulatedDeformConv2dFunction': modulated_dcn_flops,
}


def _numel_of(index: int, of_outputs: bool = False) -> Handle:
    def handle(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
        return math.prod(_shape((outputs if of_outputs else inputs)[index]))
    return handle


def _conv_with_bias(inputs: Sequence[Any], outputs: Sequence[Any]) -> Counter:
    counts = conv_flop_jit(inputs, outputs)  # Counter({'conv': MACs of the weights})
    if inputs[2].isCompleteTensor():  # a bias tensor, not None
        counts['conv'] += math.prod(_shape(outputs[0]))
    return counts


#: Opt-in extras that reproduce the SAN authors' counter (``util/complexity.py``): it also
#: counts ReLU (one per element), max pooling (one per input element) and conv biases
#: (one per output element), which mmengine's convention leaves out; the fused SAN ops
#: hide gamma's ReLUs and conv2 bias from the trace, so they get their own handles here.
SAN_COUNTER_HANDLES: dict[str, Handle] = {
    'aten::relu': _numel_of(0),
    'aten::relu_': _numel_of(0),
    'aten::max_pool2d': _numel_of(0),
    'aten::_convolution': _conv_with_bias,
    'lsa::san_pairwise_forward': san_pairwise_counter_flops,
    'lsa::san_patchwise_forward': san_patchwise_counter_flops,
}


def flop_analyzer(model: nn.Module, inputs: torch.Tensor | tuple,
                  extra_handles: dict[str, Handle] | None = None) -> FlopAnalyzer:
    """mmengine's :class:`FlopAnalyzer` for ``model(*inputs)`` with :data:`LSA_FLOP_HANDLES`
    (and ``extra_handles``, e.g. :data:`SAN_COUNTER_HANDLES`, on top)."""
    handles = {**LSA_FLOP_HANDLES, **(extra_handles or {})}
    analyzer = FlopAnalyzer(model, inputs).set_op_handle(**handles)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


def complexity_info(model: nn.Module, inputs: torch.Tensor | tuple, show_table: bool = False,
                    extra_handles: dict[str, Handle] | None = None) -> dict:
    """FLOPs and parameters of ``model(*inputs)``, counting the ops of :data:`LSA_FLOP_HANDLES`.

    Returns a dict with ``flops`` (int), ``flops_str``, ``params``, ``params_str``,
    ``by_operator`` ({op: flops}), ``by_part`` ({name: flops} of the top-level submodules
    of the model's only child if it has one, e.g. a wrapped detector's backbone / neck /
    heads, else of the model), ``uncounted`` ({op: calls} of traced ops that have no
    handle) and ``out_table`` (per-module table if ``show_table``, else '').
    """
    analyzer = flop_analyzer(model, inputs, extra_handles)
    flops = analyzer.total()
    params = parameter_count(model)['']
    children = list(model.named_children())
    prefix = f'{children[0][0]}.' if len(children) == 1 else ''
    top = children[0][1] if prefix else model
    by_module = analyzer.by_module()
    by_part = {name: by_module[prefix + name] for name, _ in top.named_children()
               if by_module.get(prefix + name)}
    return dict(flops=flops, flops_str=_format_size(flops), params=params,
                params_str=_format_size(params), by_operator=dict(analyzer.by_operator()),
                by_part=by_part,
                uncounted=dict(analyzer.unsupported_ops()),
                out_table=complexity_stats_table(analyzer) if show_table else '')
