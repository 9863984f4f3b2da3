"""The recorded attention weights are the ones each layer used, laid out at the right pixels.

With one head (one weight channel) and an identity output projection, every output pixel
is ``sum_p pixel_map(y, x)[p] * v[p]``: this checks the weights and their layout at once.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lsa import ops
from lsa.analysis.attention_maps import AttentionRecorder, local_share_map, pixel_map
from lsa.models.layers import ELSAAttention, LESAAttention, SANAttention, ShiftWindowAttention

needs_ext = pytest.mark.skipif(not ops.HAS_EXT, reason='lsa._C not built')
ROOT = Path(__file__).resolve().parents[2]


def _identity_proj(linear: nn.Linear) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.eye(linear.weight.shape[0]))
        linear.bias.zero_()


def _check_maps(rec, out_hw_c, values_hw_c, atol=1e-4):
    """out[y, x] == sum_p pixel_map(y, x)[p] * values[p] for every pixel, sample 0."""
    H, W = rec.hw
    for y in range(H):
        for x in range(W):
            m = pixel_map(rec, y, x)
            want = (m.view(H * W, 1) * values_hw_c).sum(0)
            torch.testing.assert_close(out_hw_c[y * W + x], want, atol=atol, rtol=1e-4)


@needs_ext
@pytest.mark.parametrize('sa_type', ['pairwise', 'patchwise'])
def test_san_weights_reproduce_the_output(sa_type):
    torch.manual_seed(0)
    layer = SANAttention(16, 8, kernel_size=3, sa_type=sa_type, rel_channels=4,
                         share_planes=8).eval()
    x = torch.randn(2, 16, 6, 7)
    with AttentionRecorder(layer) as rec, torch.no_grad():
        out = layer(x)
    r = rec.records['']
    assert r.kind == 'san' and r.hw == (6, 7)
    assert r.weights.shape == (2, 1, 9, 42)
    torch.testing.assert_close(ops.aggregation(layer.beta(x), r.weights, **layer._window), out)
    values = layer.beta(x)[0].flatten(1).T  # HW, C
    _check_maps(r, out[0].flatten(1).T, values)
    if sa_type == 'pairwise':  # softmax over the taps; reflected taps keep their weight
        assert pixel_map(r, 0, 0).sum().item() == pytest.approx(1.0, abs=1e-5)


@needs_ext
def test_elsa_weights_reproduce_the_output():
    torch.manual_seed(0)
    layer = ELSAAttention(8, num_heads=1, kernel_size=3, group_width=4, lam=0, gamma=0).eval()
    _identity_proj(layer.proj)
    x = torch.randn(2, 30, 8)
    with AttentionRecorder(layer) as rec, torch.no_grad():
        out = layer(x, (5, 6))
    r = rec.records['']
    assert r.kind == 'elsa' and r.hw == (5, 6)
    assert r.weights.shape == (2, 9, 5, 6)
    v = layer.qkv(x.transpose(1, 2).reshape(2, 8, 5, 6))[:, -8:]  # B, Cv, H, W
    _check_maps(r, out[0], v[0].flatten(1).T)


@pytest.mark.parametrize('shifted', [False, True])
def test_window_weights_reproduce_the_output(shifted):
    torch.manual_seed(0)
    layer = ShiftWindowAttention(8, num_heads=1, window_size=4, shifted=shifted).eval()
    _identity_proj(layer.proj)
    x = torch.randn(2, 64, 8)
    with AttentionRecorder(layer) as rec, torch.no_grad():
        out = layer(x, (8, 8))
    r = rec.records['']
    assert r.kind == 'window' and r.extra['shift'] == (2 if shifted else 0)
    assert r.weights.shape == (2 * 4, 1, 16, 16)
    v = layer.qkv(x)[..., -8:]  # B, HW, C (per-token, so the roll does not matter)
    _check_maps(r, out[0], v[0])
    assert pixel_map(r, 3, 3).sum().item() == pytest.approx(1.0, abs=1e-5)


def test_lesa_context_weights_and_terms_reproduce_the_output():
    torch.manual_seed(0)
    layer = LESAAttention(8, 8, fmap_size=6, pe_type='det', groups=1).eval()
    seen = {}
    layer.value_norm.register_forward_pre_hook(lambda m, a: seen.update(av=a[0]))
    x = torch.randn(2, 8, 5, 6)
    with AttentionRecorder(layer) as rec, torch.no_grad():
        out = layer(x)
    r = rec.records['']
    assert r.kind == 'lesa' and r.weights.shape == (2, 1, 30, 30)
    qkv = layer.qkv_norm(layer.qkv(x)).detach()
    v = qkv[:, -8:]  # groups=1: [q | k | v], v last
    _check_maps(r, seen['av'][0].flatten(1).T, v[0].flatten(1).T)
    u, b, g = r.extra['unary'], r.extra['binary'], r.extra['gate']
    torch.testing.assert_close(g * b + u, out)
    share = local_share_map(r)
    assert share.shape == (5, 6) and bool(((share >= 0) & (share <= 1)).all())


def test_recorder_rejects_unknown_layers_and_removes_hooks():
    layer = ShiftWindowAttention(8, num_heads=2, window_size=4)
    model = nn.Sequential(layer)
    with pytest.raises(ValueError, match='not lsa attention layers'):
        AttentionRecorder(model, ['nope'])
    with pytest.raises(ValueError, match='no lsa attention layer'):
        AttentionRecorder(nn.Linear(2, 2))
    with AttentionRecorder(model) as rec:
        model[0](torch.randn(1, 16, 8), (4, 4))
    assert list(rec.records) == ['0']
    with pytest.raises(ValueError, match='outside'):
        pixel_map(rec.records['0'], 4, 0)
    assert not layer._forward_hooks and not layer._forward_pre_hooks
    assert not layer.attn_drop._forward_pre_hooks


@needs_ext
def test_vis_attention_writes_a_png(tmp_path, load_script):
    from PIL import Image
    img = tmp_path / 'in.png'
    Image.new('RGB', (64, 48), (120, 30, 200)).save(img)
    out = tmp_path / 'att.png'
    cfg = str(ROOT / 'configs/cls/elsa/elsa-swin-t_8xb128_in1k.py')
    tool = load_script('tools/analysis_tools/vis_attention.py')
    tool.main([str(img), cfg, '--size', '64', '--pixels', '10,20', '40,50',
               '--layers', 'stages.0.blocks.0.attn', 'stages.3.blocks.1.attn',
               '--out', str(out)])
    png = Image.open(out)
    assert png.format == 'PNG' and png.size[0] > 100
