"""Each FLOP handle of lsa.analysis.flops against a hand count on a small traced module."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lsa import ops
from lsa.analysis import LSA_FLOP_HANDLES, complexity_info, flop_analyzer

needs_ext = pytest.mark.skipif(not ops.HAS_EXT, reason='lsa._C not built (ops run the reference)')


class _Call(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def _count(fn, *inputs) -> dict:
    with torch.no_grad():
        return dict(flop_analyzer(_Call(fn), inputs).by_operator())


@needs_ext
def test_aggregation_counts_one_mac_per_tap():
    x, w = torch.rand(1, 16, 8, 8), torch.rand(1, 2, 9, 64)
    flops = _count(lambda a, b: ops.aggregation(a, b, 3, padding=1, pad_mode='reflect'), x, w)
    assert flops == {'aggregation_forward': 16 * 64 * 9}  # numel(out) * taps


@needs_ext
def test_subtraction_counts_one_op_per_output():
    a, b = torch.rand(2, 4, 8, 8), torch.rand(2, 4, 8, 8)
    flops = _count(lambda u, v: ops.subtraction2(u, v, 3, padding=1), a, b)
    assert flops == {'subtraction2_forward': 2 * 4 * 9 * 64}  # out (N, C, K, HW)
    flops = _count(lambda u: ops.subtraction(u, 5, padding=2, pad_mode='reflect'), a)
    assert flops == {'subtraction2_forward': 2 * 4 * 25 * 64}


@needs_ext
def test_elsa_counts_filter_and_sum_per_tap():
    v, attn = torch.rand(2, 4, 8, 8), torch.rand(2, 9, 8, 8)
    mul, add = torch.ones(1, 1, 1, 1), torch.rand(2, 4, 3, 3)
    flops = _count(lambda *t: ops.elsa(*t, 3), v, attn, mul, add)
    assert flops == {'elsa_forward': 2 * (2 * 4 * 64) * 9}
    attn2 = torch.rand(2, 9, 4, 4)
    flops = _count(lambda *t: ops.elsa(*t, 3, stride=2), v, attn2, mul, add)
    assert flops == {'elsa_forward': 2 * (2 * 4 * 16) * 9}


def _san_layer(fused, sa_type='pairwise'):
    from lsa.models.layers import SANAttention
    return SANAttention(16, 8, kernel_size=3, sa_type=sa_type, rel_channels=4,
                        share_planes=4, fused=fused).eval()


@needs_ext
def test_fused_san_counts_relation_gamma_and_aggregation():
    layer = _san_layer(True)
    with torch.no_grad():
        flops = dict(flop_analyzer(layer, (torch.rand(1, 16, 6, 6),)).by_operator())
    P, Cr, M, Cw = 1 * 9 * 36, 4 + 2, 4, 8 // 4  # (pixel, tap) pairs; relation, hidden, weight ch
    assert flops.pop('san_pairwise_forward') == (
        P * Cr + 2 * P * (Cr + M) + P * M * (Cr + Cw) + 8 * 36 * 9)
    assert flops == {'conv': 36 * 16 * (4 + 4 + 8) + 36 * 2 * 2}  # phi, psi, beta, pos_enc


@needs_ext
def test_fused_san_patchwise_counts_gamma_and_aggregation():
    layer = _san_layer(True, 'patchwise')
    with torch.no_grad():
        flops = dict(flop_analyzer(layer, (torch.rand(2, 16, 6, 6),)).by_operator())
    P, Ca, M, CwK = 2 * 36, 4 * (9 + 1), 8 // 4, 8 // 4 * 9  # pixels; gamma in, hidden, out
    assert flops.pop('san_patchwise_forward') == (
        2 * P * (Ca + M) + P * M * (Ca + CwK) + 2 * 8 * 36 * 9)
    assert flops == {'conv': 2 * 36 * 16 * (4 + 4 + 8)}  # phi, psi, beta


@needs_ext
@pytest.mark.parametrize('sa_type', ['pairwise', 'patchwise'])
def test_fused_san_counts_as_the_unfused_path(sa_type):
    """The count is the model's, not the kernel's: fused and unfused agree (batch 1), with
    mmengine's convention and with the SAN authors' counter."""
    from lsa.analysis import SAN_COUNTER_HANDLES
    fused, unfused = _san_layer(True, sa_type), _san_layer(False, sa_type)
    unfused.load_state_dict(fused.state_dict())
    x = torch.rand(1, 16, 6, 6)
    for extra in (None, SAN_COUNTER_HANDLES):
        with torch.no_grad():
            a = complexity_info(fused, (x,), extra_handles=extra)
            b = complexity_info(unfused, (x,), extra_handles=extra)
        assert f'san_{sa_type}_forward' in a['by_operator']
        assert ('relu_' in b['by_operator']) == (extra is not None)  # the counters differ
        assert a['flops'] == b['flops']


def test_sdpa_counts_both_products():
    q, k, v = torch.rand(2, 3, 10, 8), torch.rand(2, 3, 12, 8), torch.rand(2, 3, 12, 5)
    flops = _count(F.scaled_dot_product_attention, q, k, v)
    assert flops == {'scaled_dot_product_attention': 2 * 3 * 10 * 12 * (8 + 5)}



def test_pvt_attention_counts_the_reduced_keys():
    """PVT's attention over N queries and N / R^2 keys: lsa counts 2 * N * (N / R^2) * C (the
    LocalViT authors' counter takes N * N, see docs/analysis.md, LocalViT-PVT)."""
    from lsa.models.layers.vit_attention import SpatialReductionAttention
    call = _Call(lambda x: call.attn(x, (8, 8)))
    call.attn = SpatialReductionAttention(8, 2, sr_ratio=2).eval()
    with torch.no_grad():
        flops = dict(flop_analyzer(call, (torch.rand(1, 64, 8),)).by_operator())
    N, S, C = 64, 16, 8
    assert flops['scaled_dot_product_attention'] == 2 * N * S * C

def test_matmul_counts_broadcast_batches():
    a, b = torch.rand(4, 5), torch.rand(2, 3, 5, 6)
    assert _count(torch.matmul, a, b) == {'matmul': 2 * 3 * 4 * 5 * 6}
    assert _count(torch.matmul, b.transpose(-1, -2), a.T) == {'matmul': 2 * 3 * 6 * 5 * 4}
    assert _count(torch.bmm, torch.rand(3, 4, 5), torch.rand(3, 5, 6)) == {'bmm': 3 * 4 * 5 * 6}


def test_baddbmm_counts_the_product_not_the_bias():
    bias, a, b = torch.rand(1, 1, 6), torch.rand(3, 4, 5), torch.rand(3, 5, 6)
    assert _count(torch.baddbmm, bias, a, b) == {'baddbmm': 3 * 4 * 5 * 6}


@needs_ext
def test_elsa_block_counts_every_projection():
    """The ELSA block runs its 1x1 convs as linear/baddbmm on tokens: all of them count."""
    from lsa.models.layers.elsa_attention import ELSAAttention
    call = _Call(lambda x: call.attn(x, (4, 4)))
    call.attn = ELSAAttention(12, 2, kernel_size=3, group_width=4).eval()  # Q = 8, Cv = 12
    with torch.no_grad():
        flops = dict(flop_analyzer(call, (torch.rand(1, 16, 12),)).by_operator())
    L, C, Q, Cv, k, G = 16, 12, 8, 12, 3, 2
    assert flops == {
        'linear': L * C * 2 * Q,                          # q, k
        'baddbmm': L * C * Cv + L * Q * k * k * G + L * Cv * C,  # v, 1x1 logits, proj
        'conv': L * Q * 4 * k * k,                        # k x k grouped conv (width 4)
        'elsa_softmax_forward': 2 * Cv * L * k * k}       # the op with its fused softmax


def test_einsum_of_attention_blocks_is_counted():
    q, k = torch.rand(2, 4, 8, 49), torch.rand(2, 4, 8, 49)  # LESA: b g c i, b g c j
    flops = _count(lambda a, b: torch.einsum('bgci,bgcj->bgij', a, b), q, k)
    assert flops == {'einsum': 2 * 4 * 49 * 49 * 8}


@pytest.mark.parametrize('modulated', [False, True])
def test_dcn_counts_conv_and_sampling(modulated):
    mmcv_ops = pytest.importorskip('mmcv.ops')
    cls = mmcv_ops.ModulatedDeformConv2dPack if modulated else mmcv_ops.DeformConv2dPack
    dcn = cls(4, 8, 3, padding=1, bias=False)
    x = torch.rand(1, 4, 6, 6)
    try:
        with torch.no_grad():
            dcn(x)
    except (RuntimeError, NotImplementedError) as e:  # mmcv built without its CPU kernel
        pytest.skip(f'mmcv deformable conv does not run on CPU here: {e}')
    with torch.no_grad():
        flops = dict(flop_analyzer(dcn, (x,)).by_operator())
    offset_ch = 27 if modulated else 18  # the offset (and mask) conv is a plain conv
    conv = 8 * 36 * 4 * 9
    samples = 4 * 9 * 36
    want_dcn = conv + 4 * samples + (samples if modulated else 0)
    assert flops.pop('conv') == offset_ch * 36 * 4 * 9  # mmengine counts no conv bias
    assert list(flops.values()) == [want_dcn]


def test_handle_table_names_every_op():
    assert {'lsa::aggregation_forward', 'lsa::subtraction2_forward', 'lsa::elsa_forward',
            'lsa::san_pairwise_forward', 'lsa::san_patchwise_forward',
            'aten::scaled_dot_product_attention', 'aten::matmul', 'aten::baddbmm'
            } <= set(LSA_FLOP_HANDLES)


def test_complexity_info_reports_uncounted_ops():
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.Sigmoid())
    with torch.no_grad():
        info = complexity_info(model, (torch.rand(1, 3, 5, 5),))
    assert info['flops'] == 3 * 4 * 25
    assert info['params'] == 12
    assert 'aten::sigmoid' in info['uncounted']


def test_san_counter_adds_relu_pool_and_bias():
    from lsa.analysis import SAN_COUNTER_HANDLES
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        plain = complexity_info(model, (x,))['flops']
        san = complexity_info(model, (x,), extra_handles=SAN_COUNTER_HANDLES)['flops']
    assert plain == 3 * 4 * 36
    assert san == plain + 4 * 36 + 4 * 36 + 4 * 36  # bias, ReLU, max-pool input


@needs_ext
@pytest.mark.parametrize('cfg', [
    'configs/cls/localvit/localvit-t2t-7_8xb128_in1k.py',  # SDPA, matmul
    'configs/cls/san/san10-pairwise_8xb32_in1k.py',  # the fused SAN op (eval path)
    'configs/cls/san/san10-patchwise_8xb32_in1k.py',
])
def test_metafile_flops_are_what_get_flops_measures(load_script, cfg):
    """The FLOPs written into the metafiles come from this counter (smallest models checked),
    and no lsa op is left uncounted."""
    from pathlib import Path

    import yaml
    root = Path(__file__).resolve().parents[2]
    meta = root / Path(cfg).parent / 'metafile.yml'
    models = yaml.safe_load(meta.read_text())['Models']
    want = next(m['Metadata']['FLOPs'] for m in models if m['Config'] == cfg)
    tool = load_script('tools/analysis_tools/get_flops.py')
    info = tool.main([str(root / cfg), '--shape', '224'])
    assert info['flops'] == want
    assert not {'aten::scaled_dot_product_attention', 'aten::matmul'} & set(info['uncounted'])
    assert not [op for op in info['uncounted'] if op.startswith('lsa::')]


def test_lesa_relative_products_count_as_the_released_einsums():
    """q.E_q, k.E_k, A.E_v: L * L * d per map each, not the 2L-1 columns their GEMMs run."""
    from lsa.models.layers.lesa_attention import LESAAttention
    blk = LESAAttention(16, 16, fmap_size=5, groups=2).eval()  # d_qk 4, d_v 8, L 25
    with torch.no_grad():
        flops = dict(flop_analyzer(blk, (torch.rand(1, 16, 5, 5),)).by_operator())
    maps = 2 * 25 * 25  # G * L * L
    assert flops['PythonOp._RelLogits'] == 2 * maps * 4
    assert flops['PythonOp._RelValue'] == maps * 8
    assert flops['matmul'] == maps * (4 + 8)  # q.k and A.v
