"""localvit2lsa: synthetic official ``{'model': ...}`` checkpoints -> lsa classifiers."""
import pytest
import torch

import lsa.models  # noqa: F401
from lsa.converters.common import CheckpointMismatchError
from lsa.converters.localvit import (
    build_reference,
    convert_localvit,
    convert_localvit_checkpoint,
    infer_localvit_arch,
    localvit_to_official,
)


def _random_classifier(arch):
    """A randomised lsa backbone + head state dict (BN statistics included)."""
    backbone, ref = build_reference(arch)
    with torch.no_grad():
        for m in backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.normal_(0, 0.3)
    sd = {'backbone.' + k: v for k, v in backbone.state_dict().items()}
    sd['head.fc.weight'] = torch.randn_like(ref['head.fc.weight'])
    sd['head.fc.bias'] = torch.randn_like(ref['head.fc.bias'])
    return backbone.eval(), sd


def test_official_tiny_layout_keys_and_shapes():
    # keys written from the spec (B6), LocalViT-T: SE hidden 4, Hd 768
    _, sd = _random_classifier('localvit-t')
    off = localvit_to_official(sd)
    expect = {
        'cls_token': (1, 1, 192), 'pos_embed': (1, 197, 192),
        'patch_embed.proj.weight': (192, 3, 16, 16), 'blocks.0.attn.qkv.weight': (576, 192),
        'blocks.0.conv.conv.0.weight': (768, 192, 1, 1), 'blocks.0.conv.conv.1.running_var': (768,),
        'blocks.0.conv.conv.3.weight': (768, 1, 3, 3), 'blocks.0.conv.conv.4.weight': (768,),
        'blocks.0.conv.conv.6.fc.0.weight': (4, 768), 'blocks.0.conv.conv.6.fc.2.bias': (768,),
        'blocks.11.conv.conv.7.weight': (192, 768, 1, 1), 'blocks.11.conv.conv.8.bias': (192,),
        'norm.weight': (192,), 'head.weight': (1000, 192), 'head.bias': (1000,),
    }
    for k, shape in expect.items():
        assert tuple(off[k].shape) == shape, k
    assert not any('.norm2.' in k or '.mlp.' in k for k in off)
    assert len(off) == len(sd)
    assert infer_localvit_arch(off) == 'localvit-t'


@pytest.mark.parametrize('arch', ['localvit-t', 'localvit-pvt', 'localvit-tnt',
                                  'localvit-swin', 'localvit-t2t'])
def test_round_trip_same_outputs(arch):
    """Forward map vs its inverse (built from the same tables, so a wrong table passes here);
    the independent oracle is tests/converters/test_localvit_oracle.py."""
    backbone, sd = _random_classifier(arch)
    off = localvit_to_official(sd)
    if arch == 'localvit-swin':  # the official file carries buffers lsa recomputes
        off['layers.0.blocks.1.attn_mask'] = torch.zeros(64, 49, 49)
        off['layers.0.blocks.0.attn.relative_position_index'] = torch.zeros(49, 49).long()
    assert infer_localvit_arch(off) == arch
    out, meta = convert_localvit_checkpoint({'model': off, 'epoch': 299})
    assert meta == dict(arch=arch, source_key='model')
    assert set(out) == set(sd)
    fresh, _ = build_reference(arch)
    fresh.load_state_dict({k[9:]: v for k, v in out.items() if k.startswith('backbone.')})
    fresh.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(backbone(x), fresh(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(out['head.fc.weight'], sd['head.fc.weight'])


def test_index_shift_without_channel_attention():
    sd = {'blocks.0.conv.conv.0.weight': torch.zeros(8, 4, 1, 1),
          'blocks.0.conv.conv.6.weight': torch.zeros(4, 8, 1, 1),
          'blocks.0.conv.conv.7.bias': torch.zeros(4),
          'blocks.1.conv.conv.6.conv.weight': torch.zeros(1, 1, 3),
          'blocks.1.conv.conv.7.weight': torch.zeros(4, 8, 1, 1),
          'blocks.1.conv.conv.8.bias': torch.zeros(4)}
    out = convert_localvit(sd)
    assert sorted(out) == sorted([
        'backbone.blocks.0.ffn.fc1.weight', 'backbone.blocks.0.ffn.fc2.weight',
        'backbone.blocks.0.ffn.bn3.bias', 'backbone.blocks.1.ffn.attn.conv.weight',
        'backbone.blocks.1.ffn.fc2.weight', 'backbone.blocks.1.ffn.bn3.bias'])
    assert localvit_to_official(out).keys() == sd.keys()


def test_wrong_checkpoints_raise_clear_errors():
    _, sd = _random_classifier('localvit-t')
    off = localvit_to_official(sd)
    with pytest.raises(CheckpointMismatchError, match='(?s)localvit-s.*shape mismatches'):
        convert_localvit_checkpoint({'model': off}, arch='localvit-s')
    bad = dict(off)
    del bad['blocks.3.attn.proj.bias']
    with pytest.raises(CheckpointMismatchError, match='(?s)missing keys.*blocks.3.attn.proj.bias'):
        convert_localvit_checkpoint({'model': bad})
    with pytest.raises(ValueError, match='cannot recognise'):
        convert_localvit_checkpoint({'model': {'conv1.weight': torch.zeros(3)}})
    with pytest.raises(ValueError, match='no state dict found'):
        convert_localvit_checkpoint({'optimizer': 1, 'epoch': 3})
    with pytest.raises(ValueError, match='unknown LocalViT arch'):
        convert_localvit_checkpoint({'model': off}, arch='localvit-b')


def test_cli(tmp_path, load_script):
    _, sd = _random_classifier('localvit-t')
    src, dst = tmp_path / 'localvit_t.pth', tmp_path / 'out.pth'
    torch.save({'model': localvit_to_official(sd)}, src)
    mod = load_script('tools/model_converters/localvit2lsa.py')
    mod.main([str(src), str(dst), '--arch', 'localvit-t'])
    saved = torch.load(dst, weights_only=False)
    assert saved['meta']['arch'] == 'localvit-t'
    assert saved['state_dict'].keys() == sd.keys()
    for k, v in sd.items():
        torch.testing.assert_close(saved['state_dict'][k], v)


def test_official_t2t_layout_keeps_w_and_pos_embed():
    # keys written from the spec (B6), LocalViT-T2T-7: token LFFs without SE (index shift),
    # encoder LFFs with SE hidden 4; w / pos_embed / unused norm2 kept verbatim
    _, sd = _random_classifier('localvit-t2t')
    a1 = 'tokens_to_token.attention1'
    sd = dict(sd)
    sd[f'backbone.{a1}.w'] = torch.randn(32, 64)  # a "trained" random matrix
    sd['backbone.pos_embed'] = torch.randn(1, 197, 256)
    off = localvit_to_official(sd)
    expect = {
        'cls_token': (1, 1, 256), 'pos_embed': (1, 197, 256), f'{a1}.w': (32, 64),
        'tokens_to_token.attention2.w': (32, 64), f'{a1}.kqv.weight': (192, 147),
        'tokens_to_token.attention2.kqv.weight': (192, 576), f'{a1}.kqv.bias': (192,),
        f'{a1}.proj.weight': (64, 64), f'{a1}.norm1.weight': (147,), f'{a1}.norm2.bias': (64,),
        f'{a1}.conv.conv.0.weight': (64, 64, 1, 1), f'{a1}.conv.conv.1.running_mean': (64,),
        f'{a1}.conv.conv.3.weight': (64, 1, 3, 3), f'{a1}.conv.conv.4.weight': (64,),
        f'{a1}.conv.conv.6.weight': (64, 64, 1, 1), f'{a1}.conv.conv.7.bias': (64,),
        'tokens_to_token.project.weight': (256, 576), 'blocks.0.norm1.weight': (256,),
        'blocks.6.attn.qkv.weight': (768, 256), 'blocks.0.attn.proj.bias': (256,),
        'blocks.0.conv.conv.0.weight': (512, 256, 1, 1), 'blocks.0.conv.conv.6.fc.0.weight': (4, 512),
        'blocks.6.conv.conv.7.weight': (256, 512, 1, 1), 'blocks.6.conv.conv.8.bias': (256,),
        'norm.weight': (256,), 'head.weight': (1000, 256),
    }
    for k, shape in expect.items():
        assert tuple(off[k].shape) == shape, k
    assert f'{a1}.conv.conv.8.weight' not in off and 'blocks.0.attn.qkv.bias' not in off
    assert not any('.mlp.' in k for k in off) and len(off) == len(sd)
    assert infer_localvit_arch(off) == 'localvit-t2t'
    out, _ = convert_localvit_checkpoint({'model': off})
    assert torch.equal(out[f'backbone.{a1}.w'], sd[f'backbone.{a1}.w'])
    assert torch.equal(out['backbone.pos_embed'], sd['backbone.pos_embed'])
    fresh, _ = build_reference('localvit-t2t')
    fresh.load_state_dict({k[9:]: v for k, v in out.items() if k.startswith('backbone.')})
    assert torch.equal(fresh.tokens_to_token.attention1.w, sd[f'backbone.{a1}.w'])
    assert not fresh.tokens_to_token.attention1.w.requires_grad  # loading keeps it fixed
