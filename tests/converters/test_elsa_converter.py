"""ELSA-Swin converter on synthetic checkpoints in the released layouts (spec B5, D4)."""
import pytest
import torch

from lsa.converters.common import CheckpointMismatchError
from lsa.converters.elsa import convert_elsa_checkpoint, infer_elsa_arch
from lsa.models.backbones.elsa_swin import ELSASwin
from lsa.models.layers.window_attention import ShiftWindowAttention

MINI = {'embed_dims': 16, 'depths': (1, 1, 2, 2), 'num_heads': (1, 2, 2, 4), 'group_width': 4}


def official_relative_id(w):
    """The official buffer: entry (i, j) indexes the offset of token j relative to token i."""
    ys, xs = torch.meshgrid(torch.arange(w), torch.arange(w), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[None, :] - ys[:, None]  # y_j - y_i
    dx = xs[None, :] - xs[:, None]
    return ((dy + w - 1) * (2 * w - 1) + (dx + w - 1)).flatten()


def to_official(sd):
    """lsa ELSASwin keys -> the official layout, restated from the spec (not the converter)."""
    window_blocks = {k.split('attn.')[0] for k in sd if k.endswith('relative_position_bias_table')}
    out = {}
    for k, v in sd.items():
        window = '.attn.' in k and k.split('attn.')[0] in window_blocks
        if k.endswith('attn.relative_position_bias_table'):
            v = v.flip(0).t().contiguous()  # (heads, (2w-1)**2), negated offset
            w = (round(v.shape[1] ** 0.5) + 1) // 2
            k = k.replace('relative_position_bias_table', 'rb')
            out[k.replace('stages.', 'layers.', 1)[:-2] + 'relative_id'] = official_relative_id(w)
        elif window and '.attn.qkv.' in k:
            q, kk, vv = v.chunk(3)
            v = torch.cat([vv, q, kk])  # window attention rows: v, q, k
        k = k.replace('stages.', 'layers.', 1).replace('.ffn.', '.mlp.')
        k = k.replace('attn.qkv.', 'attn.pre_proj.').replace('attn.attn_gen.', 'attn.attn.')
        out[k.replace('attn.proj.', 'attn.post_proj.')] = v
    return out


def cls_official(model, n_cls=10):
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith('norm3.')}
    off = to_official(sd)
    off['norm.weight'], off['norm.bias'] = model.norm3.weight.detach(), model.norm3.bias.detach()
    off['head.weight'] = torch.randn(n_cls, model.stage_channels[3])
    off['head.bias'] = torch.randn(n_cls)
    return off


@pytest.fixture(scope='module')
def mini_cls():
    torch.manual_seed(0)
    m = ELSASwin(arch=MINI, out_indices=(3,)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m


@pytest.mark.parametrize('wrap', ['state_dict', 'state_dict_ema', 'model', 'raw', 'module'])
def test_cls_round_trip(mini_cls, wrap):
    off = cls_official(mini_cls)
    if wrap == 'raw':
        ckpt = off
    elif wrap == 'module':
        ckpt = {'state_dict': {'module.' + k: v for k, v in off.items()}}
    elif wrap == 'state_dict_ema':
        ckpt = {'state_dict': {k: torch.zeros_like(v) for k, v in off.items()},
                'state_dict_ema': off, 'epoch': 3}
    else:
        ckpt = {wrap: off, 'epoch': 3, 'arch': 'elsa_swin_mini'}
    sd, meta = convert_elsa_checkpoint(ckpt, use_ema=wrap == 'state_dict_ema')
    assert meta['source'] == 'cls' and meta['arch']['name'] is None
    ref = mini_cls.state_dict()
    bb = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    assert bb.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(bb[k], ref[k], rtol=0, atol=0, msg=k)
    torch.testing.assert_close(sd['head.fc.weight'], off['head.weight'])
    m2 = ELSASwin(arch=MINI, out_indices=(3,)).eval()
    m2.load_state_dict(bb, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m2(x)[0], mini_cls(x)[0], rtol=0, atol=0)


def test_stage3_quirks_against_the_official_formula():
    """v, q, k row order and the negated bias index, computed the official way."""
    torch.manual_seed(0)
    C, h, w = 32, 2, 7
    # float32 values (the checkpoint dtype), computed in float64
    W_pre, b_pre = torch.randn(3 * C, C).double(), torch.randn(3 * C).double()
    rb = torch.randn(h, (2 * w - 1) ** 2).double()
    W_post, b_post = torch.randn(C, C).double(), torch.randn(C).double()
    x = torch.randn(2, w * w, C, dtype=torch.float64)  # one window per sample
    feat = (x @ W_pre.t() + b_pre).reshape(2, w * w, 3, h, C // h).permute(2, 0, 3, 1, 4)
    v, q, k = feat[0], feat[1], feat[2]
    bias = rb[:, official_relative_id(w)].reshape(1, h, w * w, w * w)
    attn = ((q @ k.transpose(-2, -1)) * (C // h) ** -0.5 + bias).softmax(-1)
    expect = (attn @ v).transpose(1, 2).reshape(2, w * w, C) @ W_post.t() + b_post

    m = ELSASwin(arch={'embed_dims': 4, 'depths': (1, 1, 1, 1), 'num_heads': (1, 1, 1, h),
                       'group_width': 1}, out_indices=(3,))
    off = cls_official(m)
    pre = 'layers.3.blocks.0.attn.'
    off.update({pre + 'pre_proj.weight': W_pre.float(), pre + 'pre_proj.bias': b_pre.float(),
                pre + 'rb': rb.float(), pre + 'post_proj.weight': W_post.float(),
                pre + 'post_proj.bias': b_post.float()})
    # stage 3 of this arch has 32 channels (4 * 2**3)
    sd, _ = convert_elsa_checkpoint({'state_dict': off})
    attn = ShiftWindowAttention(C, h, window_size=w).double()
    p = 'backbone.stages.3.blocks.0.attn.'
    attn.load_state_dict({k[len(p):]: v.double() for k, v in sd.items() if k.startswith(p)})
    torch.testing.assert_close(attn(x, (w, w)), expect, rtol=1e-10, atol=1e-10)


def test_det_checkpoint(mini_cls):
    torch.manual_seed(1)
    det = ELSASwin(arch=MINI, out_indices=(0, 1, 2, 3), pad_small_map=True).eval()
    off = {'backbone.' + k: v for k, v in to_official(det.state_dict()).items()}
    off['neck.fpn_convs.0.conv.weight'] = torch.randn(4, 4, 3, 3)
    off['rpn_head.rpn_cls.bias'] = torch.randn(3)
    sd, meta = convert_elsa_checkpoint({'meta': {'epoch': 12}, 'state_dict': off, 'optimizer': {}})
    assert meta['source'] == 'det'
    assert 'neck.fpn_convs.0.conv.weight' in sd and 'rpn_head.rpn_cls.bias' in sd
    assert {f'backbone.norm{i}.weight' for i in range(4)} <= sd.keys()
    m2 = ELSASwin(arch=MINI, out_indices=(0, 1, 2, 3), pad_small_map=True).eval()
    m2.load_state_dict({k[9:]: v for k, v in sd.items() if k.startswith('backbone.')})
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        for a, b in zip(m2(x), det(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    bb_only, _ = convert_elsa_checkpoint({'state_dict': off}, backbone_only=True)
    assert all(k.startswith('backbone.') for k in bb_only)
    # cls -> backbone-only pretrain weights: no head, no final norm (det starts norm{i} fresh)
    pre, _ = convert_elsa_checkpoint({'state_dict': cls_official(mini_cls)}, backbone_only=True)
    assert all(k.startswith('backbone.') for k in pre) and 'backbone.norm3.weight' not in pre


def test_published_tiny_layout():
    """Our ELSA-Swin-T maps onto the released key layout and shapes listed in spec B5."""
    with torch.device('meta'):
        model = ELSASwin(arch='tiny', out_indices=(3,))
    off = cls_official(model, n_cls=1000)
    off = {k: (v if v.device.type == 'cpu' else torch.empty(v.shape)) for k, v in off.items()}
    expect = {
        'patch_embed.proj.weight': (96, 3, 4, 4),
        'layers.0.blocks.0.attn.ghost_head': (1, 96, 7, 7),
        'layers.0.blocks.0.attn.pre_proj.weight': (224, 96, 1, 1),
        'layers.0.blocks.0.attn.attn.0.weight': (64, 4, 7, 7),
        'layers.0.blocks.0.attn.attn.2.weight': (147, 64, 1, 1),
        'layers.0.blocks.0.attn.post_proj.weight': (96, 96),
        'layers.0.blocks.0.mlp.fc1.weight': (384, 96),
        'layers.0.downsample.reduction.weight': (192, 384),
        'layers.0.downsample.norm.weight': (384,),
        'layers.2.blocks.5.attn.attn.2.weight': (588, 256, 1, 1),
        'layers.3.blocks.1.attn.rb': (24, 169),
        'layers.3.blocks.1.attn.relative_id': (2401,),
        'layers.3.blocks.1.attn.pre_proj.weight': (2304, 768),
        'norm.weight': (768,), 'head.weight': (1000, 768),
    }
    for k, shape in expect.items():
        assert tuple(off[k].shape) == shape, k
    assert len([k for k in off if k.endswith('ghost_head')]) == 10
    assert infer_elsa_arch(off)['name'] == 'tiny'
    sd, meta = convert_elsa_checkpoint({'state_dict': off}, arch='tiny')
    assert meta['arch']['name'] == 'tiny'
    assert tuple(sd['backbone.stages.3.blocks.1.attn.relative_position_bias_table'].shape) == (
        169, 24)
    assert tuple(sd['backbone.stages.0.blocks.0.attn.attn_gen.0.weight'].shape) == (64, 4, 7, 7)
    assert tuple(sd['backbone.norm3.weight'].shape) == (768,)


def test_wrong_checkpoints(mini_cls):
    with pytest.raises(ValueError, match='not an ELSA-Swin checkpoint'):
        convert_elsa_checkpoint({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7)}})
    with pytest.raises(ValueError, match='no state dict found'):
        convert_elsa_checkpoint({'epoch': 3})
    off = cls_official(mini_cls)
    broken = {k: v for k, v in off.items() if k != 'layers.1.blocks.0.mlp.fc2.bias'}
    with pytest.raises(CheckpointMismatchError, match='missing keys.*stages.1.blocks.0.ffn.fc2'):
        convert_elsa_checkpoint({'state_dict': broken})
    with pytest.raises(ValueError, match="expected an ELSA-Swin 'tiny' checkpoint"):
        convert_elsa_checkpoint({'state_dict': off}, arch='tiny')
    tampered = dict(off)
    tampered['layers.3.blocks.0.attn.relative_id'] = official_relative_id(7).flip(0)
    with pytest.raises(ValueError, match='relative_id does not follow'):
        convert_elsa_checkpoint({'state_dict': tampered})
    with pytest.raises(ValueError, match='no state_dict_ema'):
        convert_elsa_checkpoint({'state_dict': off}, use_ema=True)
    shaped = dict(off)
    shaped['layers.0.blocks.0.mlp.fc1.weight'] = torch.zeros(3, 3)
    with pytest.raises(CheckpointMismatchError, match='shape mismatches'):
        convert_elsa_checkpoint({'state_dict': shaped})


def test_cli(tmp_path, mini_cls, load_script):
    cli = load_script('tools/model_converters/elsa2lsa.py')
    src, dst = tmp_path / 'official.pth', tmp_path / 'out' / 'lsa.pth'
    torch.save({'state_dict': cls_official(mini_cls), 'epoch': 1}, src)
    cli.main([str(src), str(dst)])
    out = torch.load(dst, map_location='cpu', weights_only=False)
    assert out['meta']['converter'] == 'elsa2lsa' and out['meta']['source'] == 'cls'
    bb = {k[9:]: v for k, v in out['state_dict'].items() if k.startswith('backbone.')}
    m2 = ELSASwin(arch=MINI, out_indices=(3,))
    m2.load_state_dict(bb, strict=True)
