"""LESA checkpoint converter on synthetic checkpoints in the two released layouts.

The released layouts are produced here from an lsa model by ``to_released`` (a
re-statement of spec A6.1/A6.2, independent of lsa.converters), so converting
them back must reproduce the model's outputs exactly.
"""
from pathlib import Path

import pytest
import torch

from lsa.converters.common import CheckpointMismatchError
from lsa.converters.lesa import convert_lesa_checkpoint, convert_lesa_cls, convert_lesa_det
from lsa.models.backbones.lesa_resnet import LESAResNet
from lsa.models.layers.lesa_attention import LESAAttention

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(base_channels=16, stage_blocks=(1, 1, 2, 2), widen_factor=1)
RENAME = {'qkv.': 'qkv_transform.', 'qkv_norm.': 'bn_qkv.', 'logit_norm.': 'bn_similarity.',
          'local_conv.': 'x_transform.', 'local_norm.': 'bn_x.', 'fuse.': 'reasoning.',
          'gate.': 'projection.'}


def to_released(model):
    """LESAResNet state dict -> the official module/key layout (spec A6)."""
    out = {}
    lesa = {n for n, m in model.named_modules() if isinstance(m, LESAAttention)}
    for key, val in model.state_dict().items():
        pre = next((p for p in lesa if key.startswith(p + '.')), None)
        if pre is None:
            out[key] = val.clone()
            continue
        sub = key[len(pre) + 1:]
        if sub == 'rel_pos':
            out[f'{pre}.relative'] = val.clone()
            L = (val.shape[1] + 1) // 2
            i = torch.arange(L)
            out[f'{pre}.flatten_index'] = (i[:, None] - i[None, :] + L - 1).reshape(-1)
        elif sub in ('rel_h', 'rel_w'):
            out[f'{pre}.rel_{"height" if sub == "rel_h" else "width"}'] = val.clone()
        elif sub.startswith('value_norm.'):
            attr = sub.split('.', 1)[1]
            pos = model.state_dict().get(f'{pre}.pos_value_norm.{attr}')
            if pos is None or attr == 'num_batches_tracked':
                out[f'{pre}.bn_output.{attr}'] = val.clone()
            else:  # interleave: even channels A.v, odd channels A.E_v
                out[f'{pre}.bn_output.{attr}'] = torch.stack([val, pos], 1).reshape(-1)
        elif sub.startswith('pos_value_norm.'):
            continue
        else:
            old = next(o for o in RENAME if sub.startswith(o))
            new = RENAME[old] + sub[len(old):]
            out[f'{pre}.{new}'] = val[..., 0] if new == 'qkv_transform.weight' else val.clone()
    return out


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith('running_var'):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


def _load_backbone(sd, **kwargs):
    net = LESAResNet(**kwargs).eval()
    net.load_state_dict({k[len('backbone.'):]: v for k, v in sd.items()
                         if k.startswith('backbone.')}, strict=True)
    return net


CLS_KW = dict(arch=TINY, form='cls', stage_spatial_res=(16, 8, 4, 4))


def _cls_ckpt():
    torch.manual_seed(0)
    src = _randomize(LESAResNet(**CLS_KW))
    fc = torch.nn.Linear(512, 10)
    net = {'module.' + k: v for k, v in to_released(src).items()}
    net.update({'module.fc.weight': fc.weight.detach(), 'module.fc.bias': fc.bias.detach()})
    return src, {'net': net, 'epoch': 94}


def test_cls_layout_keys_shapes_and_round_trip():
    src, ckpt = _cls_ckpt()
    # spot-check the synthetic file against the released template (A6.1)
    net = ckpt['net']
    P = 16 * 4  # layer3 width of the tiny arch
    assert net['module.layer3.1.conv2.relative'].shape == (2 * P // 8, 2 * 16 - 1)
    assert net['module.layer3.1.conv2.flatten_index'].shape == (16 * 16,)
    assert net['module.layer3.1.conv2.qkv_transform.weight'].shape == (2 * P, P, 1)
    assert net['module.layer3.1.conv2.bn_output.weight'].shape == (2 * P,)
    assert net['module.layer3.1.conv2.bn_similarity.weight'].shape == (24,)
    assert 'module.layer3.0.conv2.weight' in net and 'module.layer3.0.bn2.weight' in net

    sd, meta = convert_lesa_cls(ckpt)
    assert meta['lesa_config']['stage_spatial_res'][2:] == (4, 4)
    assert {k for k in sd if k.startswith('head.')} == {'head.fc.weight', 'head.fc.bias'}
    dst = _load_backbone(sd, **CLS_KW, out_indices=(0, 1, 2, 3))
    src.out_indices = (0, 1, 2, 3)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(src(x), dst(x)):
            assert torch.equal(a, b)
    # without the DataParallel prefix / wrapper too
    bare = {k[len('module.'):]: v for k, v in ckpt['net'].items()}
    sd2, _ = convert_lesa_checkpoint(bare)
    assert sd2.keys() == sd.keys()


def test_cls_full_r50_loads_into_mmpretrain_classifier():
    pytest.importorskip('mmpretrain')
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    cfg = Config.fromfile(str(ROOT / 'configs/cls/lesa/lesa-r50_4xb32-95e_in1k.py'))
    init_default_scope('mmpretrain')
    clf = PRETRAIN_MODELS.build(cfg.model)
    released = to_released(clf.backbone)
    # the released R50 tables (A6.1): layer3 (64, 391), layer4 (128, 391), 8 LESA blocks
    assert released['layer3.1.conv2.relative'].shape == (64, 391)
    assert released['layer4.0.conv2.relative'].shape == (128, 391)
    assert released['layer4.0.conv2.flatten_index'].shape == (38416,)
    assert sum(k.endswith('.relative') for k in released) == 8
    ckpt = {'net': {'module.' + k: v for k, v in released.items()}}
    ckpt['net']['module.fc.weight'] = torch.randn(1000, 2048)
    ckpt['net']['module.fc.bias'] = torch.randn(1000)
    sd, meta = convert_lesa_cls(ckpt)
    assert meta['lesa_config']['arch'] == 'r50'
    missing, unexpected = clf.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    assert torch.equal(clf.head.fc.bias, ckpt['net']['module.fc.bias'])


DET_KW = dict(arch=TINY, form='det', stage_spatial_res=(32, 16, 8, 4))


def _det_ckpt(dcn):
    kw = dict(DET_KW)
    if dcn:
        kw.update(dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False),
                  stage_with_dcn=(False, True, True, True))
    torch.manual_seed(0)
    src = _randomize(LESAResNet(**kw, out_indices=(0, 1, 2, 3)))
    state = {'backbone.' + k: v for k, v in to_released(src).items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.randn(8, 64, 1, 1)
    state['roi_head.bbox_head.fc_cls.bias'] = torch.randn(81)
    return src, kw, {'meta': {'mmdet_version': '2.11.0'}, 'state_dict': state,
                     'optimizer': {}}


@pytest.mark.parametrize('dcn', [False, True])
def test_det_layout_round_trip(dcn):
    if dcn:
        pytest.importorskip('mmcv.ops')
    src, kw, ckpt = _det_ckpt(dcn)
    state = ckpt['state_dict']
    assert state['backbone.layer4.1.conv2.rel_height'].shape == (2 * 4 - 1, 128 // 8 // 2)
    assert state['backbone.layer4.0.conv2.rel_width'].shape == (2 * 8 - 1, 128 // 8 // 2)
    assert state['backbone.layer4.1.conv2.bn_output.weight'].shape == (128,)
    if dcn:
        assert state['backbone.layer2.0.conv2.conv_offset.weight'].shape == (18, 32, 3, 3)
        assert state['backbone.layer4.1.conv2.x_transform.0.conv_offset.bias'].shape == (18,)
    sd, meta = convert_lesa_checkpoint(ckpt)  # auto-detects the detection layout
    assert meta['layout'] == 'LESA_detection'
    assert sd['neck.lateral_convs.0.conv.weight'] is state['neck.lateral_convs.0.conv.weight']
    assert 'roi_head.bbox_head.fc_cls.bias' in sd
    dst = _load_backbone(sd, **kw, out_indices=(0, 1, 2, 3))
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        for a, b in zip(src(x), dst(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    only, _ = convert_lesa_det(ckpt, backbone_only=True)
    assert only.keys() == {k for k in sd if k.startswith('backbone.')}


def test_det_backbone_loads_through_pretrained_init(tmp_path):
    """The file initialises a backbone with init_cfg Pretrained + prefix='backbone.'."""
    from lsa.converters.common import save_mmengine_checkpoint
    src, kw, ckpt = _det_ckpt(False)
    sd, meta = convert_lesa_det(ckpt)
    path = tmp_path / 'lesa_det.pth'
    save_mmengine_checkpoint(sd, str(path), meta)
    net = LESAResNet(**kw, out_indices=(0, 1, 2, 3), init_cfg=dict(
        type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    net.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_wrong_checkpoints_clear_errors():
    _, ckpt = _cls_ckpt()
    net = dict(ckpt['net'])
    # not a LESA checkpoint at all
    with pytest.raises(ValueError, match='no LESA block found'):
        convert_lesa_checkpoint({'net': {k: v for k, v in net.items() if 'conv2.' not in k
                              or 'layer3.0' in k}})
    # an unknown key inside a block
    bad = dict(net, **{'module.layer3.1.conv2.temperature': torch.ones(1)})
    with pytest.raises(ValueError, match="unknown key 'temperature'"):
        convert_lesa_checkpoint(bad)
    # a stray backbone key and a missing one -> listed by the strict check
    bad = dict(net)
    bad['module.layer9.0.conv1.weight'] = torch.ones(1)
    del bad['module.layer2.0.bn2.running_var']
    with pytest.raises(CheckpointMismatchError) as err:
        convert_lesa_cls({'net': bad})
    msg = str(err.value)
    assert 'missing keys (1): backbone.layer2.0.bn2.running_var' in msg
    assert 'unexpected keys' in msg and 'backbone.layer9.0.conv1.weight' in msg
    # a tampered relative index
    bad = dict(net)
    bad['module.layer3.1.conv2.flatten_index'] = torch.zeros_like(
        bad['module.layer3.1.conv2.flatten_index'])
    with pytest.raises(ValueError, match='flatten_index is not the released'):
        convert_lesa_checkpoint(bad)
    # a detection request on a classification file
    with pytest.raises(ValueError, match='no "backbone." keys'):
        convert_lesa_checkpoint(ckpt, form='det')


def test_cli(tmp_path, load_script):
    cli = load_script('tools/model_converters/lesa2lsa.py')
    src, ckpt = _cls_ckpt()
    torch.save(ckpt, tmp_path / 'checkpoint.pth')
    cli.main([str(tmp_path / 'checkpoint.pth'), str(tmp_path / 'out.pth')])
    out = torch.load(tmp_path / 'out.pth', weights_only=False)
    assert out['meta']['converter'] == 'lesa2lsa'
    dst = _load_backbone(out['state_dict'], **CLS_KW)
    src.out_indices = (3,)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x)[0], dst(x)[0])
