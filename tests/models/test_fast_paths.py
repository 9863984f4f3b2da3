"""The CPU fast paths (lsa.models.layers.fast_paths) give the modules' values, and step aside."""
import copy

import pytest
import torch
import torch.nn.utils.prune
from torch import nn

from lsa.models.backbones.san import SAN
from lsa.models.layers.fast_paths import _Conv1x1GEMM, batch_norm_, conv1x1, max_pool_2x2


def _bn(channels: int = 8) -> nn.BatchNorm2d:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(channels)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2)
    nn.init.normal_(bn.weight)
    nn.init.normal_(bn.bias)
    return bn.eval()


def _maps(*shape: int) -> list[torch.Tensor]:
    x = torch.randn(*shape)
    return [x, x.to(memory_format=torch.channels_last),
            torch.randn(*shape[:2], shape[3], shape[2]).transpose(-1, -2)]


def test_batch_norm_in_place_in_inference_only():
    """An eval BatchNorm writes into its input, bitwise bn(x); with gradients it is bn(x)."""
    bn = _bn()
    for x in _maps(2, 8, 5, 7):
        with torch.no_grad():
            ref, y = bn(x), x.clone()
            out = batch_norm_(y, bn)
        assert out is y and torch.equal(out, ref)
        y = x.clone()
        out = batch_norm_(y, bn)  # gradients recorded: out of place
        assert out.data_ptr() != y.data_ptr() and torch.equal(y, x) and torch.equal(out, ref)


def test_batch_norm_steps_aside_for_training_hooks_and_dtypes():
    bn = _bn().train()
    x = torch.randn(2, 8, 5, 7)
    y, ref_bn = x.clone(), copy.deepcopy(bn)
    with torch.no_grad():
        out, ref = batch_norm_(y, bn), ref_bn(x)
    assert torch.equal(y, x) and torch.equal(out, ref)  # batch statistics: not in place
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean, rtol=0, atol=0)
    bn = _bn()
    seen = []
    bn.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        y = x.clone()
        out = batch_norm_(y, bn)
    assert seen and seen[0] is out and torch.equal(y, x)  # a hooked module runs as itself
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        y = x.bfloat16()  # another dtype than the norm's statistics: the module (autocast)
        out = batch_norm_(y, _bn())
    assert out.data_ptr() != y.data_ptr() and torch.equal(y, x.bfloat16())


def test_conv1x1_equals_the_conv_values_and_gradients():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    for conv in (nn.Conv2d(6, 4, 1, bias=False), nn.Conv2d(6, 4, 1)):
        conv = conv.double()
        y = conv1x1(x, conv)
        assert y.is_contiguous()
        torch.testing.assert_close(y, conv(x), rtol=1e-13, atol=1e-13)
        g = torch.randn_like(y)
        got = torch.autograd.grad(y, [x, *conv.parameters()], g)
        want = torch.autograd.grad(conv(x), [x, *conv.parameters()], g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    # The GEMM's own autograd: first and second order, forward mode, batched gradients
    xs = torch.randn(3, 6, 6, dtype=torch.float64, requires_grad=True)
    ws = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_Conv1x1GEMM.apply, (xs, ws), check_forward_ad=True,
                                    check_batched_grad=True)
    assert torch.autograd.gradgradcheck(_Conv1x1GEMM.apply, (xs, ws))
    # the weight gradient alone (an input without gradient), torch.func, an empty batch
    conv = nn.Conv2d(6, 4, 1).double()
    xd = x.detach()
    gw, = torch.autograd.grad(conv1x1(xd, conv).sum(), conv.weight)
    torch.testing.assert_close(gw, torch.autograd.grad(conv(xd).sum(), conv.weight)[0])
    torch.testing.assert_close(torch.func.grad(lambda a: conv1x1(a, conv).sum())(xd),
                               torch.func.grad(lambda a: conv(a).sum())(xd))
    torch.testing.assert_close(torch.func.vmap(lambda a: conv1x1(a, conv))(xd[None].repeat(2, 1, 1, 1, 1)),
                               conv(xd)[None].repeat(2, 1, 1, 1, 1))
    assert conv1x1(xd[:0], conv).shape == (0, 4, 5, 7)


def test_conv1x1_under_autocast_computes_and_differentiates_as_autocasts_bmm():
    torch.manual_seed(0)
    conv, x = nn.Conv2d(6, 4, 1), torch.randn(2, 6, 5, 7, requires_grad=True)
    grads = []
    for f in (lambda a: conv1x1(a, conv),
              lambda a: torch.bmm(conv.weight.view(1, 4, 6).expand(2, 4, 6), a.flatten(2))
              .view(2, 4, 5, 7).add_(conv.bias.view(1, -1, 1, 1))):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y = f(x)
        assert y.dtype == torch.bfloat16
        grads.append((y, *torch.autograd.grad(y.float().square().sum(), [x, *conv.parameters()])))
    for a, b in zip(*grads):  # the weight gradient's sum over the batch is rounded to bf16
        assert a.dtype == b.dtype  # in another order: within a few bf16 units (2^-8)
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2,
                                   atol=2e-2 * b.float().abs().max().item())


def test_conv1x1_runs_other_convs_as_modules():
    """Strided, larger, grouped, channels-last, hooked (e.g. pruned) convs run themselves."""
    x = torch.randn(2, 6, 5, 7)
    pruned = nn.Conv2d(6, 4, 1)
    torch.nn.utils.prune.l1_unstructured(pruned, 'weight', amount=0.5)  # a pre-forward hook
    cases = [(nn.Conv2d(6, 4, 1, stride=2), x), (nn.Conv2d(6, 4, 3, padding=1), x),
             (nn.Conv2d(6, 4, 1, groups=2), x),
             (nn.Conv2d(6, 4, 1), x.to(memory_format=torch.channels_last)), (pruned, x)]
    for conv, inp in cases:
        calls = []
        conv.register_forward_hook(lambda *a, calls=calls: calls.append(1))
        torch.testing.assert_close(conv1x1(inp, conv), conv(inp))
        assert len(calls) == 2, conv  # once in conv1x1, once for the reference


@pytest.mark.parametrize('shape', [(2, 3, 8, 8), (1, 4, 9, 7), (1, 7, 300, 301)])
def test_max_pool_2x2_is_max_pool(shape):
    """Bitwise F.max_pool2d (floor mode, NaN propagated), over several channel chunks."""
    for x in _maps(*shape):
        x.as_strided((x.numel() // 97,), (97,)).fill_(float('nan'))
        with torch.no_grad():
            assert torch.equal(max_pool_2x2(x).nan_to_num(7.0),
                               nn.functional.max_pool2d(x, 2).nan_to_num(7.0))


@pytest.mark.parametrize('sa_type', ['pairwise', 'patchwise'])
def test_san_inference_fast_paths_change_no_value(sa_type):
    """In-place BatchNorms, the index-free pools and the early release of the maps: the
    outputs of a no-grad forward equal those of a forward that records gradients (where
    batch_norm_ and max_pool_2x2 run the modules). The stem's own inference path folds its
    BatchNorm into the conv (not bitwise; tests/models/test_stem_pool.py), so it is off."""
    torch.manual_seed(0)
    model = SAN(arch=dict(widths=(32, 32, 64, 64, 64), layers=(1, 1, 2, 1, 1),
                          kernels=(3, 3, 3, 3, 3)), sa_type=sa_type, out_indices=(2, 4),
                fast_stem=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fast = model(x)
    recorded = model(x)
    assert len(fast) == len(recorded) == 2
    for a, b in zip(fast, recorded):
        assert torch.equal(a, b)


def test_san_stem_and_stage_hooks_fire():
    """SAN pools before a stage to free the larger map, but still calls stem and stages."""
    model = SAN(arch=dict(widths=(32, 32, 32, 32, 32), layers=(1, 1, 1, 1, 1),
                          kernels=(3, 3, 3, 3, 3)), out_indices=(4,)).eval()
    seen = []
    for name in ('stem', 'stages'):
        for m in ([model.stem] if name == 'stem' else list(model.stages)):
            m.register_forward_hook(lambda mod, i, o: seen.append(tuple(o.shape)))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert seen == [(1, 32, 64, 64), (1, 32, 32, 32), (1, 32, 16, 16), (1, 32, 8, 8),
                    (1, 32, 4, 4), (1, 32, 2, 2)]
