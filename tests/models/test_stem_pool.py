"""The training fast path of SAN's stem + first pool (lsa.models.layers.stem_pool) equals the
plain modules: values, gradients, running statistics, and the pool's choice among ties."""
import contextlib
import copy
from collections import OrderedDict

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from lsa.models.backbones.san import SAN, SANStem
from lsa.models.layers import stem_pool
from lsa.models.layers.fast_paths import must_run_module
from lsa.models.layers.stem_pool import conv_bn_relu_max_pool_2x2, relu_max_pool_backward_


def _stem(dtype: torch.dtype, momentum: float | None = 0.1, channels: int = 8) -> SANStem:
    torch.manual_seed(0)
    stem = SANStem(OrderedDict(conv=nn.Conv2d(3, channels, 1, bias=False),
                               norm=nn.BatchNorm2d(channels, momentum=momentum),
                               act=nn.ReLU(inplace=True))).to(dtype)
    nn.init.normal_(stem.norm.weight)
    nn.init.normal_(stem.norm.bias)
    stem.norm.running_mean.normal_()
    return stem


def _fast_and_plain(stem: nn.Module, monkeypatch) -> tuple[nn.Module, nn.Module]:
    """The stem (its forward must not run: the fast path computes it) and a copy with a
    no-op hook, which makes the fast path step aside."""
    plain = copy.deepcopy(stem)
    plain.register_forward_pre_hook(lambda mod, args: None)

    def not_called(*args):
        raise AssertionError('the fast path ran the stem module')

    monkeypatch.setattr(stem, 'forward', not_called)
    return stem, plain


def _input(n: int, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """Random, with a zero block and a constant negative block: windows whose four
    elements are bitwise equal after BN (both ReLU zeros and positive ties)."""
    gen = torch.Generator().manual_seed(n * 100 + h * 10 + w)
    x = torch.randn(n, 3, h, w, dtype=dtype, generator=gen)
    x[:, :, :4, :4] = 0
    x[-1, :, 4:, :] = -1.5
    return x


def _assert_rel(a: torch.Tensor, b: torch.Tensor, tol: float, name: str) -> None:
    err = (a - b).abs().max() / b.abs().max().clamp_min(1e-30)
    assert err <= tol, f'{name}: relative error {err:.3g} > {tol}'


@pytest.mark.parametrize('dtype, tol', [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize('momentum', [0.1, None])
@pytest.mark.parametrize('n, h, w, per_chunk', [(1, 7, 11, None), (3, 9, 6, None),
                                                (3, 9, 6, 2), (2, 8, 8, 1)])
def test_stem_pool_equals_the_modules(dtype, tol, momentum, n, h, w, per_chunk, monkeypatch):
    """Pooled output, gradients of x / conv weight / BN weight and bias, and the running
    statistics after two steps (momentum None: the cumulative average); odd sizes drop
    the last row/column; ``per_chunk`` samples at a time (a shorter last chunk)."""
    if per_chunk:
        per_sample = 8 * (h // 2) * (w // 2) * 4 * dtype.itemsize  # (8, 4, H/2 * W/2)
        monkeypatch.setattr(stem_pool, '_CHUNK_BYTES', per_chunk * per_sample)
    fast, plain = _fast_and_plain(_stem(dtype, momentum), monkeypatch)
    for step in range(2):
        x = _input(n, h, w, dtype) * (1 + step)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        a, b = conv_bn_relu_max_pool_2x2(xa, fast), conv_bn_relu_max_pool_2x2(xb, plain)
        assert a.shape == b.shape == (n, 8, h // 2, w // 2)
        _assert_rel(a, b, tol, 'output')
        grad = torch.randn_like(a)
        a.backward(grad)
        b.backward(grad)
        _assert_rel(xa.grad, xb.grad, tol, 'x grad')
    for (name, pa), pb in zip(fast.named_parameters(), plain.parameters()):
        _assert_rel(pa.grad, pb.grad, tol, name)
    for (name, ba), bb in zip(fast.named_buffers(), plain.buffers()):
        if name.endswith('num_batches_tracked'):
            assert ba.item() == bb.item() == 2
        else:
            _assert_rel(ba, bb, tol, name)


def _windows(t: torch.Tensor) -> torch.Tensor:
    """(N, C, 2 H2, 2 W2) -> (N, C, 4, H2 * W2): each 2x2 window's elements, row-major."""
    N, C, H, W = t.shape
    return t.unflatten(3, (W // 2, 2)).unflatten(2, (H // 2, 2)).permute(
        0, 1, 3, 5, 2, 4).reshape(N, C, 4, H * W // 4)


@pytest.mark.parametrize('case', ['ties', 'nan', 'inf_grad'])
def test_relu_max_pool_backward_routes_as_max_pool2d(case):
    """The gradient goes where CPU max_pool2d after a ReLU sends it: the first of tied
    maxima (zeros after ReLU included), the last NaN, nothing where the max is <= 0."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-2, 3, (2, 5, 8, 10), generator=gen).double()  # many exact ties
    grad = torch.randn(2, 5, 4, 5, dtype=torch.float64, generator=gen)
    if case == 'nan':
        x.view(-1)[torch.randperm(x.numel(), generator=gen)[:120]] = float('nan')
    if case == 'inf_grad':
        grad[0, 1, 2, 3] = float('inf')
    xr = x.clone().requires_grad_()
    F.max_pool2d(F.relu(xr), 2).backward(grad)
    out = relu_max_pool_backward_(_windows(x), grad.flatten(2))
    torch.testing.assert_close(out, _windows(xr.grad), rtol=0, atol=0, equal_nan=True)


def test_stem_pool_steps_aside(monkeypatch):
    """Hooks, eval mode, no gradient, autocast, a conv bias, a channels-last input: the
    stem module runs, and the pool of its output is returned."""
    x = _input(2, 8, 8, torch.float32)
    calls = []

    def cases():
        stem = _stem(torch.float32)
        stem.register_forward_hook(lambda *a: calls.append('stem'))
        yield stem, x, contextlib.nullcontext()
        stem = _stem(torch.float32)
        stem.norm.register_forward_hook(lambda *a: calls.append('norm'))
        yield stem, x, contextlib.nullcontext()
        yield _stem(torch.float32).eval(), x, contextlib.nullcontext()
        yield _stem(torch.float32), x, torch.no_grad()
        yield _stem(torch.float32), x, torch.autocast('cpu', dtype=torch.bfloat16)
        stem = _stem(torch.float32)
        stem.conv.bias = nn.Parameter(torch.zeros(8))
        yield stem, x, contextlib.nullcontext()
        yield _stem(torch.float32), x.to(memory_format=torch.channels_last), contextlib.nullcontext()

    for stem, inp, ctx in cases():
        ref = torch.randn(2, 8, 8, 8)

        def forward(self, t, ref=ref):
            calls.append('forward')
            return ref

        monkeypatch.setattr(SANStem, 'forward', forward)
        with ctx:
            out = conv_bn_relu_max_pool_2x2(inp, stem)
        monkeypatch.undo()
        assert torch.equal(out, F.max_pool2d(ref, 2))
    assert calls.count('forward') == 7 and 'stem' in calls


def test_stem_pool_steps_aside_for_torch_func_and_forward_ad(monkeypatch):
    """torch.func transforms and forward-mode AD see the modules: under forward AD the same
    tangents; under torch.func.grad the stem module runs (here a stand-in, since a
    training BatchNorm's running-statistics update is itself refused by torch.func)."""
    stem = _stem(torch.float64)
    x = _input(2, 6, 8, torch.float64)
    ref = copy.deepcopy(stem)
    ref.register_forward_pre_hook(lambda mod, args: None)
    tangent = torch.randn_like(x)
    with fwAD.dual_level():
        outs = [fwAD.unpack_dual(conv_bn_relu_max_pool_2x2(fwAD.make_dual(x, tangent), m))
                for m in (stem, ref)]
    torch.testing.assert_close(outs[0].primal, outs[1].primal, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(outs[0].tangent, outs[1].tangent, rtol=1e-10, atol=1e-12)
    calls = []
    monkeypatch.setattr(SANStem, 'forward', lambda self, t: calls.append(1) or t * 2)
    got = torch.func.grad(lambda t: conv_bn_relu_max_pool_2x2(t, stem).sum())(x)
    assert calls and torch.equal(got, torch.func.grad(lambda t: F.max_pool2d(t * 2, 2).sum())(x))


def test_double_backward_raises():
    """A graph of the backward (create_graph=True) is refused, not silently detached."""
    stem = _stem(torch.float64)
    x = _input(1, 6, 6, torch.float64).requires_grad_()
    out = conv_bn_relu_max_pool_2x2(x, stem)
    with pytest.raises(NotImplementedError, match='double backward'):
        torch.autograd.grad(out.sum(), x, create_graph=True)
    (gx,) = torch.autograd.grad(out.sum(), x)
    assert not gx.requires_grad


def test_san_training_step_equals_the_plain_stem(monkeypatch):
    """A whole SAN train step (stem fast path vs the stem module, which a no-op hook
    forces): outputs, every parameter's gradient, every running statistic."""
    torch.manual_seed(0)
    arch = dict(widths=(32, 32, 32, 32, 32), layers=(1, 1, 1, 1, 1), kernels=(3, 3, 3, 3, 3))
    fast = SAN(arch=arch, out_indices=(0, 2)).double().train()
    for mod in fast.modules():
        if isinstance(mod, nn.BatchNorm2d):
            nn.init.uniform_(mod.weight, 0.5, 1.5)
            nn.init.normal_(mod.bias, 0, 0.3)
    fast.stem, plain_stem = _fast_and_plain(fast.stem, monkeypatch)
    plain = copy.deepcopy(fast)
    plain.stem = plain_stem
    x = _input(2, 33, 26, torch.float64)
    outs_a, outs_b = fast(x), plain(x)
    for a, b in zip(outs_a, outs_b):
        _assert_rel(a, b, 1e-10, 'output')
    sum((o * o).sum() for o in outs_a).backward()
    sum((o * o).sum() for o in outs_b).backward()
    # absolute tolerances too: biases before a BatchNorm have gradients of rounding size
    for (name, pa), pb in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-9, atol=1e-9, msg=name)
    for (name, ba), bb in zip(fast.named_buffers(), plain.buffers()):
        torch.testing.assert_close(ba, bb, rtol=1e-10, atol=1e-12, msg=name)


def test_san_training_stem_hooks_fire():
    """A hooked stem runs as itself in training too (the fast path steps aside)."""
    model = SAN(arch=dict(widths=(32, 32, 32, 32, 32), layers=(1, 1, 1, 1, 1),
                          kernels=(3, 3, 3, 3, 3)), out_indices=(0,)).train()
    seen = []
    model.stem.register_forward_hook(lambda mod, i, o: seen.append(tuple(o.shape)))
    out = model(torch.randn(2, 3, 10, 12))
    assert seen == [(2, 32, 10, 12)] and out[0].shape == (2, 32, 5, 6)


def test_backward_hooks_and_fast_stem_false_run_the_modules():
    """Backward hooks (the module's own or global) fire only if the modules run; SAN's
    fast_stem=False is the switch for double backward."""
    x = _input(2, 8, 8, torch.float64).requires_grad_()
    # (a full backward hook on norm or act, or a global one, fails in the plain modules
    # themselves: the in-place ReLU modifies the hook's view; the rule is checked below)
    for where in ('stem', 'conv'):
        stem, seen = _stem(torch.float64), []
        module = stem if where == 'stem' else stem.conv
        handle = module.register_full_backward_hook(lambda *a, seen=seen: seen.append(1))
        conv_bn_relu_max_pool_2x2(x, stem).sum().backward()
        handle.remove()
        assert seen, where
    relu = nn.ReLU()
    for register in (relu.register_full_backward_pre_hook,
                     nn.modules.module.register_module_full_backward_hook,
                     nn.modules.module.register_module_full_backward_pre_hook):
        assert not must_run_module(x, relu, nn.ReLU)
        handle = register(lambda *a: None)
        assert must_run_module(x, relu, nn.ReLU), register
        handle.remove()
    arch = dict(widths=(32, 32, 32, 32, 32), layers=(1, 1, 1, 1, 1), kernels=(3, 3, 3, 3, 3))
    san = SAN(arch=arch, out_indices=(0,), fast_stem=False,
              attn_cfg=dict(type='lsa.SANAttention', fused=False)).double().train()
    xs = _input(1, 32, 32, torch.float64).requires_grad_()
    g, = torch.autograd.grad(san(xs)[0].square().sum(), xs, create_graph=True)
    g.square().sum().backward()  # second order through the plain stem and attention
    assert xs.grad is not None and torch.isfinite(xs.grad).all()


@pytest.mark.parametrize('dtype, tol', [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_offset_input_frozen_weight_and_chunked_moments(monkeypatch, dtype, tol):
    """An input with a large DC offset (the BN statistics and T cancel it), a frozen conv
    weight (only some gradients asked), and the moments accumulated over several chunks."""
    monkeypatch.setattr(stem_pool, '_CHUNK_BYTES', 1)  # one sample per chunk, moments too
    stem = _stem(dtype)
    stem.conv.weight.requires_grad_(False)
    fast, plain = _fast_and_plain(stem, monkeypatch)
    x = (_input(3, 9, 7, dtype) + 50.0).requires_grad_()
    x_ref = x.detach().double().requires_grad_()
    ref_stem = copy.deepcopy(plain).double()
    out = conv_bn_relu_max_pool_2x2(x, fast)
    ref = conv_bn_relu_max_pool_2x2(x_ref, ref_stem)  # the plain modules, in float64
    _assert_rel(out.double(), ref, tol, 'output')
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, [x, fast.norm.weight, fast.norm.bias], g.to(dtype))
    want = torch.autograd.grad(ref, [x_ref, ref_stem.norm.weight, ref_stem.norm.bias], g)
    for a, b, name in zip(grads, want, ('x', 'bn weight', 'bn bias')):
        _assert_rel(a.double(), b, tol, name)
    for name in ('running_mean', 'running_var'):
        _assert_rel(getattr(fast.norm, name).double(), getattr(ref_stem.norm, name), tol, name)


@pytest.mark.parametrize('dtype, tol', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize('n, h, w, per_chunk', [(1, 7, 11, None), (3, 9, 6, 2)])
def test_inference_path_equals_the_modules(monkeypatch, dtype, tol, n, h, w, per_chunk):
    """No gradient, BatchNorm in eval mode: the folded conv + BatchNorm, chunk by chunk,
    equals the plain modules up to rounding (the fold), also under inference_mode; the
    stem module does not run."""
    stem = _stem(dtype).eval()
    stem.norm.running_var.uniform_(0.5, 2.0)
    if per_chunk is not None:
        monkeypatch.setattr(stem_pool, '_CHUNK_BYTES', per_chunk * 8 * 4 * (h // 2) * (w // 2)
                            * torch.finfo(dtype).bits // 8)
    fast, plain = _fast_and_plain(stem, monkeypatch)
    x = _input(n, h, w, dtype)
    want = F.max_pool2d(plain(x), 2)
    for ctx in (torch.no_grad(), torch.inference_mode()):
        with ctx:
            _assert_rel(conv_bn_relu_max_pool_2x2(x, fast), want.detach(), tol, 'output')


def test_san_inference_equals_the_plain_stem(monkeypatch):
    torch.manual_seed(0)
    arch = dict(widths=(32, 32, 32, 32, 32), layers=(1, 1, 1, 1, 1), kernels=(3, 3, 3, 3, 3))
    fast = SAN(arch=arch, out_indices=(0, 2)).double().eval()
    for mod in fast.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2.0)
    plain = copy.deepcopy(fast)
    plain.fast_stem = False
    x = _input(2, 33, 26, torch.float64)
    with torch.no_grad():
        for a, b in zip(fast(x), plain(x)):
            _assert_rel(a, b, 1e-10, 'output')
