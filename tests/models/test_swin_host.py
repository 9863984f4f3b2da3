"""Swin window attention and the config-driven Swin host (plain Swin baseline)."""
import pytest
import torch
import torch.nn as nn

from lsa.models.backbones.swin import PatchMerging, SwinHost
from lsa.models.layers.common import Mlp
from lsa.models.layers.window_attention import ShiftWindowAttention
from lsa.registry import MODELS

TINY = {'embed_dims': 8, 'depths': (1, 2, 1, 2), 'num_heads': (1, 2, 2, 4)}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def window_attention_loops(x, hw, m, shift, ws):
    """Swin W-MSA/SW-MSA restated token by token (no partition helpers, no index buffer).

    Pads right/bottom, rolls by -shift, and for every window computes softmax over its
    tokens of q.k * scale + table[(dy + ws-1)*(2ws-1) + (dx + ws-1)], with -100 between
    tokens of different shift regions; results go back to the unrolled positions.
    """
    B, L, C = x.shape
    H, W = hw
    h = m.num_heads
    d = C // h
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    xp = x.new_zeros(B, Hp, Wp, C)
    xp[:, :H, :W] = x.view(B, H, W, C)
    qkv = xp @ m.qkv.weight.t() + m.qkv.bias  # B, Hp, Wp, 3C
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    out = torch.zeros_like(xp)

    def region(t, n):  # Swin's three slices of the rolled axis
        return 0 if t < n - ws else (1 if t < n - shift else 2)

    for wy in range(Hp // ws):
        for wx in range(Wp // ws):
            toks = [(wy * ws + a, wx * ws + b) for a in range(ws) for b in range(ws)]
            src = [((ry + shift) % Hp, (rx + shift) % Wp) for ry, rx in toks]
            for head in range(h):
                sl = slice(head * d, (head + 1) * d)
                qs = torch.stack([q[:, y, x_, sl] for y, x_ in src], 1)  # B, N, d
                ks = torch.stack([k[:, y, x_, sl] for y, x_ in src], 1)
                vs = torch.stack([v[:, y, x_, sl] for y, x_ in src], 1)
                logits = qs @ ks.transpose(1, 2) * m.scale
                bias = torch.zeros(len(toks), len(toks), dtype=x.dtype)
                for i, (yi, xi) in enumerate(toks):
                    for j, (yj, xj) in enumerate(toks):
                        dy, dx = yi - yj, xi - xj
                        idx = (dy + ws - 1) * (2 * ws - 1) + (dx + ws - 1)
                        bias[i, j] = m.relative_position_bias_table[idx, head]
                        if shift and (region(yi, Hp), region(xi, Wp)) != (region(yj, Hp),
                                                                           region(xj, Wp)):
                            bias[i, j] -= 100.0
                o = (logits + bias).softmax(-1) @ vs
                for n, (y, x_) in enumerate(src):
                    out[:, y, x_, sl] = o[:, n]
    out = out @ m.proj.weight.t() + m.proj.bias
    return out[:, :H, :W].reshape(B, H * W, C)


@pytest.mark.parametrize('hw,shifted,pad_small_map', [
    ((6, 8), False, False), ((6, 8), True, False), ((5, 7), True, False),
    ((3, 7), True, False), ((3, 7), True, True), ((4, 4), True, True), ((9, 5), True, True)])
def test_window_attention_matches_loops(hw, shifted, pad_small_map):
    ws = 4
    m = ShiftWindowAttention(dim=6, num_heads=2, window_size=ws, shifted=shifted,
                             pad_small_map=pad_small_map).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(2, hw[0] * hw[1], 6, dtype=torch.float64)
    shift = ws // 2 if shifted and (pad_small_map or min(hw) > ws) else 0
    torch.testing.assert_close(m(x, hw), window_attention_loops(x, hw, m, shift, ws),
                               rtol=1e-10, atol=1e-10)


def test_window_attention_registry_equals_direct_and_backward():
    cfg = dict(type='lsa.ShiftWindowAttention', dim=16, num_heads=4, window_size=3, shifted=True)
    torch.manual_seed(1)
    a = MODELS.build(cfg)
    torch.manual_seed(1)
    b = ShiftWindowAttention(16, 4, window_size=3, shifted=True)
    assert type(a) is ShiftWindowAttention
    for hw in [(3, 3), (7, 5), (1, 10), (12, 12)]:
        x = torch.randn(2, hw[0] * hw[1], 16, requires_grad=True)
        ya, yb = a(x, hw), b(x, hw)
        assert ya.shape == (2, hw[0] * hw[1], 16)
        torch.testing.assert_close(ya, yb, rtol=0, atol=0)
        ya.square().sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        assert a.relative_position_bias_table.grad.abs().sum() > 0


def test_window_attention_errors():
    with pytest.raises(ValueError, match='ShiftWindowAttention.*dim=10, num_heads=4'):
        ShiftWindowAttention(10, 4)
    with pytest.raises(ValueError, match='window_size.*0'):
        ShiftWindowAttention(8, 2, window_size=0)
    m = ShiftWindowAttention(8, 2, window_size=2)
    with pytest.raises(ValueError, match=r'hw_shape=\(3, 3\)'):
        m(torch.randn(1, 10, 8), (3, 3))


def test_patch_merging_channel_order_and_odd_padding():
    m = PatchMerging(1)
    with torch.no_grad():
        m.norm.weight.fill_(1.0)
        m.norm.bias.zero_()
    m.norm = nn.Identity()  # look at the raw concatenation
    m.reduction = nn.Identity()
    grid = torch.arange(15.0).view(1, 3, 5, 1)  # value = 5*y + x
    out, hw = m(grid.reshape(1, 15, 1), (3, 5))
    assert hw == (2, 3)
    out = out.view(2, 3, 4)
    # window (0, 0): x(0,0), x(1,0), x(0,1), x(1,1) = 0, 5, 1, 6 (row offset first)
    assert out[0, 0].tolist() == [0.0, 5.0, 1.0, 6.0]
    # the last column / row are zero-padded
    assert out[1, 2].tolist() == [14.0, 0.0, 0.0, 0.0]


def test_plain_swin_t_param_count():
    with torch.device('meta'):
        m = SwinHost(arch='tiny', out_indices=(3,))
    # + LinearClsHead(768 -> 1000); norm3 is Swin's final norm
    assert n_params(m) + 768 * 1000 + 1000 == 28_288_354
    assert m.out_channels == (768,) and m.out_strides == (32,)


@pytest.mark.parametrize('size', [(64, 64), (45, 77), (32, 100)])
def test_host_forward_shapes(size):
    m = SwinHost(arch=TINY, out_indices=(0, 1, 2, 3), pad_small_map=True).eval()
    assert m.out_channels == (8, 16, 32, 64) and m.out_strides == (4, 8, 16, 32)
    with torch.no_grad():
        outs = m(torch.randn(2, 3, *size))
    h, w = size
    for i, o in enumerate(outs):
        h, w = -(-h // (4 if i == 0 else 2)), -(-w // (4 if i == 0 else 2))
        assert o.shape == (2, 8 * 2 ** i, h, w)


def test_host_shift_alternates_and_cfg_validation():
    m = SwinHost(arch=TINY, out_indices=-1)
    assert m.out_indices == (3,)
    shifts = [[b.attn.shift_size for b in s.blocks] for s in m.stages]
    assert shifts == [[0], [0, 3], [0], [0, 3]]
    assert all(isinstance(b.ffn, Mlp) and b.ffn.fc1.out_features == 4 * b.ffn.fc1.in_features
               for s in m.stages for b in s.blocks)
    dp = [b.drop_path.drop_prob if hasattr(b.drop_path, 'drop_prob') else 0.0
          for s in m.stages for b in s.blocks]
    torch.testing.assert_close(torch.tensor(dp), torch.linspace(0, 0.1, 6))
    with pytest.raises(ValueError, match='attn_cfgs must be one dict or a list of 4'):
        SwinHost(arch=TINY, attn_cfgs=[dict(type='lsa.ShiftWindowAttention')] * 3)
    with pytest.raises(ValueError, match="missing \\['num_heads'\\]"):
        SwinHost(arch={'embed_dims': 8, 'depths': (1, 1)})
    with pytest.raises(ValueError, match="unknown arch 'huge'"):
        SwinHost(arch='huge')


def test_host_ffn_swap_options():
    """ffn_norm / ffn_residual let a feed-forward with its own residual replace the Mlp."""
    m = SwinHost(arch=TINY, ffn_norm=False, ffn_residual=False, out_indices=(3,))
    blk = m.stages[0].blocks[0]
    assert isinstance(blk.norm2, nn.Identity)
    x = torch.randn(1, 16, 8)
    with torch.no_grad():
        h = x + blk.attn(blk.norm1(x), (4, 4))
        torch.testing.assert_close(blk(x, (4, 4)), blk.ffn(h, (4, 4)))
    base = SwinHost(arch=TINY, out_indices=(3,))
    # norm2 per block: 2 * C parameters
    assert n_params(base) - n_params(m) == sum(2 * 8 * 2 ** i * d
                                               for i, d in enumerate(TINY['depths']))


def test_host_frozen_stages_and_norm_eval():
    m = SwinHost(arch=TINY, frozen_stages=2, norm_eval=True, out_indices=(0, 1, 2, 3))
    m.train()
    frozen = [m.patch_embed, m.stages[0], m.stages[1], m.norm0, m.norm1]
    for mod in frozen:
        assert not mod.training
        assert all(not p.requires_grad for p in mod.parameters())
    for mod in [m.stages[2], m.stages[3], m.norm2, m.norm3]:
        assert mod.training
        assert all(p.requires_grad for p in mod.parameters())
    x = torch.randn(1, 3, 64, 64)
    out = m(x)[-1].sum()
    out.backward()
    assert m.patch_embed.proj.weight.grad is None
    assert m.stages[3].blocks[0].attn.qkv.weight.grad is not None


def test_host_with_cp_same_result():
    torch.manual_seed(0)
    a = SwinHost(arch=TINY, out_indices=(1, 3), drop_path_rate=0.0)  # training mode, no dropping
    b = SwinHost(arch=TINY, out_indices=(1, 3), drop_path_rate=0.0, with_cp=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 40, 56)
    ya, yb = a(x), b(x)
    for p, q in zip(ya, yb):
        torch.testing.assert_close(p, q)
    sum(o.sum() for o in ya).backward()
    sum(o.sum() for o in yb).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
