"""Each reusable piece has one home in lsa.models.layers / backbones.base; old paths alias it."""
import pytest
import torch

import lsa.models  # noqa: F401
from lsa.models.backbones import base, elsa_swin, localvit, localvit_pvt, localvit_tnt, swin
from lsa.models.backbones.localvit_t2t import LocalViTT2T
from lsa.models.layers import common, patch_embed, pos_embed, vit_attention, vit_block, weight_init


def test_former_import_paths_are_the_moved_objects():
    assert localvit.PatchEmbed is swin.PatchEmbed is patch_embed.PatchEmbed
    assert localvit.resize_pos_embed is pos_embed.resize_pos_embed
    assert localvit.init_vit_weights is weight_init.init_vit_weights
    assert swin.SwinHost._init_linear_and_norm is weight_init.init_vit_weights
    assert localvit.MultiheadSelfAttention is vit_attention.MultiheadSelfAttention
    assert localvit_pvt.SpatialReductionAttention is vit_attention.SpatialReductionAttention
    assert localvit_tnt.TNTAttention is vit_attention.TNTAttention
    assert localvit.LocalViTBlock is vit_block.LocalViTBlock
    assert localvit.TokenParamsFreezeMixin is base.TokenParamsFreezeMixin
    assert localvit.ClassTokenEncoderMixin is base.ClassTokenEncoderMixin
    assert common.checkpoint_seq is common.maybe_checkpoint


def test_elsa_zoo_is_the_swin_zoo_plus_group_width():
    for name, arch in elsa_swin.ELSASwin.arch_zoo.items():
        arch = dict(arch)  # the class's zoo stays as it is for the tests after this one
        gw = arch.pop('group_width')
        assert arch == swin.SwinHost.arch_zoo[name]
        assert gw == (4 if name in ('t', 'tiny') else 8)


def test_one_arch_resolver():
    zoo = {'tiny': {'a': 1, 'b': 2}}
    got = base.resolve_arch('X', 'TINY', zoo, {'a', 'b'})
    assert got == {'a': 1, 'b': 2} and got is not zoo['tiny']
    assert base.resolve_arch('X', {'a': 1, 'b': 2, 'c': 3}, zoo, {'a', 'b'})['c'] == 3
    with pytest.raises(ValueError, match="X: unknown arch 'huge'"):
        base.resolve_arch('X', 'huge', zoo, {'a', 'b'})
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        base.resolve_arch('X', {'a': 1}, zoo, {'a', 'b'})
    with pytest.raises(ValueError, match='exactly the keys'):
        base.resolve_arch('X', {'a': 1, 'b': 2, 'c': 3}, zoo, {'a', 'b'}, exact=True)
    with pytest.raises(TypeError, match='str or a dict'):
        base.resolve_arch('X', 3, zoo, {'a', 'b'})
    assert localvit.check_arch('X', 'tiny', zoo, {'a'}) == zoo['tiny']


def test_patch_embed_pads_and_norms():
    pe = patch_embed.PatchEmbed(3, 8, 4, norm_eps=1e-5)
    x, hw = pe(torch.randn(2, 3, 10, 13))
    assert hw == (3, 4) and x.shape == (2, 12, 8)
    assert patch_embed.PatchEmbed(3, 8, 4).norm is None


def test_t2t_stride_is_the_soft_split_product():
    m = LocalViTT2T(arch='t2t-7', img_size=64, out_type='featmap', out_indices=(0,))
    assert m.out_strides == (16,)
    assert m(torch.randn(1, 3, 64, 96))[0].shape[-2:] == (4, 6)


def test_swin_blocks_wire_each_ffn_by_the_one_protocol():
    """Per-stage FFNs: each Swin block follows what its own FFN declares (LFF: no norm2,
    residual added outside unless the LFF adds it; MLP: pre-norm residual branch)."""
    from lsa.models.backbones.localvit_swin import LocalViTSwin
    lff = dict(type='lsa.LocalityFeedForward', act='hs+se', se_channels=4)  # residual=False
    arch = dict(embed_dims=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))
    m = LocalViTSwin(arch=arch, ffn_cfg=[lff] + [dict(type='lsa.Mlp')] * 3,
                     drop_path_rate=0.0).eval()
    lff_blk, mlp_blk = m.stages[0].blocks[0], m.stages[1].blocks[0]
    assert isinstance(lff_blk.norm2, torch.nn.Identity) and not lff_blk.ffn.residual
    assert isinstance(mlp_blk.norm2, torch.nn.LayerNorm)
    x = torch.randn(1, 20, 8)
    with torch.no_grad():
        a = x + lff_blk.attn(lff_blk.norm1(x), (4, 5))
        torch.testing.assert_close(lff_blk(x, (4, 5)), a + lff_blk.ffn(a, (4, 5)))
        y = torch.randn(1, 6, 16)
        b = y + mlp_blk.attn(mlp_blk.norm1(y), (2, 3))
        torch.testing.assert_close(mlp_blk(y, (2, 3)), b + mlp_blk.ffn(mlp_blk.norm2(b)))


def test_out_type_and_token_checks_have_one_home():
    """Every LocalViT host rejects a bad ``out_type`` through ``check_out_type`` (its own
    name in the message); both token attentions reject mis-shaped tokens through
    ``common.check_tokens``."""
    from lsa.models.layers.elsa_attention import ELSAAttention
    from lsa.models.layers.window_attention import ShiftWindowAttention
    with pytest.raises(ValueError, match="X: out_type must be 'cls_token' or 'featmap'"):
        base.check_out_type('X', 'tokens')
    assert base.check_out_type('X', 'featmap') == 'featmap'
    small = {localvit.LocalViT: dict(embed_dims=8, depth=1, num_heads=2, mlp_ratio=2,
                                     se_channels=4),
             LocalViTT2T: 't2t-7', localvit_tnt.LocalViTTNT: 'tiny',
             localvit_pvt.LocalViTPVT: 'tiny'}
    for cls, arch in small.items():
        with pytest.raises(ValueError, match=f"{cls.__name__}: out_type must be"):
            cls(arch=arch, out_type='tokens')
    m = localvit.LocalViT(arch=small[localvit.LocalViT], img_size=32, out_type='featmap')
    assert (m.embed_dims, m.out_type, m.final_norm) == (8, 'featmap', True)
    assert m.arch_settings['depth'] == 1 and len(m.blocks) == 1
    for attn in (ELSAAttention(8, 2), ShiftWindowAttention(8, 2, window_size=2)):
        with pytest.raises(ValueError, match=rf'{type(attn).__name__}: expected \(B, 3\*3, 8\) '
                                             r'tokens for hw_shape=\(3, 3\), got \(1, 10, 8\)'):
            attn(torch.randn(1, 10, 8), (3, 3))
    B, L, C = common.check_tokens('X', torch.randn(2, 6, 4), (2, 3), 4)
    assert (B, L, C) == (2, 6, 4)
